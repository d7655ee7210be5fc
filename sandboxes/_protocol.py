"""The host's view of the runner's answers: decoding a frame and checking every field of it.

Everything the container sends is untrusted: model code runs as the runner's user and can write frames of its
own to the host (through `/proc/1/fd/1`, the container's stdout). So a frame is accepted only if it is one flat
JSON object in strict UTF-8 whose keys are exactly those of the answer expected, each value of the right type and
within its bounds. Anything else is a `ProtocolError`, never a `ValueError`, `RecursionError` or
`OverflowError` from deeper down; the sandbox then replaces the container.

Text that passes is made safe for the host: lone surrogates (which JSON's `\\udXXX` escapes can carry and which
no UTF-8 encoder accepts) become U+FFFD, so an `ExecResult` and everything built from it always encodes.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "REFUSALS",
    "Answer",
    "Check",
    "ProtocolError",
    "answer_spec",
    "clean_text",
    "decode_frame",
    "validate_answer",
]

Answer = dict[str, Any]
Check = Callable[[Any], Any]
"""Returns the clean value of one field, or raises `ProtocolError`."""


class ProtocolError(Exception):
    """The bytes from the container are not frames of our protocol (a broken or tampered-with runner)."""


# A JSON string, escapes included (the unrolled form: linear, no backtracking). Used only to blank out strings
# before counting brackets, so a `{` printed by the model's code does not count as nesting.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
# Slack on top of the runner's own caps, for the marker it writes where it cut the middle out.
_MARKER_SLACK = 256
_MAX_COUNT = 2**63  # byte counters: more than any stream can carry, far below what float() overflows at
_MAX_SECONDS = 1e7
_MAX_PATH = 16 * 1024  # PATH_MAX is 4096 bytes; the runner answers with a resolved path
_MAX_SHORT = 4096  # error messages of file operations, the Python version of the ping


def clean_text(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD, so it always encodes as UTF-8."""
    if text.isascii():
        return text
    return _LONE_SURROGATE.sub("\ufffd", text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number of the protocol")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("a key appears twice")
    return result


def decode_frame(body: bytes) -> Answer:
    """The flat JSON object in `body`, or `ProtocolError`.

    Nesting is refused before parsing (answers are flat), so a frame nested 200,000 deep costs one scan and
    cannot reach the parser's recursion, whose limit would depend on the caller's stack depth.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"a frame is not UTF-8 (byte {exc.start})") from None
    skeleton = text if '"' not in text else _JSON_STRING.sub('""', text)
    if skeleton.count("{") > 1 or "[" in skeleton:
        raise ProtocolError("a frame is not one flat JSON object")
    try:
        message = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, too many digits, NaN, a repeated key
        raise ProtocolError(f"a frame is not valid JSON ({_short(exc)})") from None
    if not isinstance(message, dict):
        raise ProtocolError("a frame is not a JSON object")
    return {clean_text(key): clean_text(v) if isinstance(v, str) else v for key, v in message.items()}


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


# ------------------------------------------------------------------------------------------- field checks


def text(limit: int) -> Check:
    def check(value: Any) -> str:
        if not isinstance(value, str):
            raise ProtocolError(f"expected a string, got {type(value).__name__}")
        if len(value) > limit:
            raise ProtocolError(f"a string of {len(value)} characters, more than the {limit} allowed")
        return value

    return check


def optional(inner: Check) -> Check:
    def check(value: Any) -> Any:
        return None if value is None else inner(value)

    return check


def flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ProtocolError(f"expected true or false, got {type(value).__name__}")
    return value


def integer(low: int, high: int) -> Check:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ProtocolError(f"expected an integer, got {type(value).__name__}")
        if not low <= value <= high:
            raise ProtocolError(f"an integer out of the range {low}..{high}")
        return value

    return check


def seconds(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ProtocolError(f"expected a number of seconds, got {type(value).__name__}")
    if isinstance(value, int) and not 0 <= value <= _MAX_SECONDS:  # before float(): 10**400 would overflow
        raise ProtocolError("a duration out of range")
    result = float(value)
    if not (math.isfinite(result) and 0.0 <= result <= _MAX_SECONDS):
        raise ProtocolError("a duration out of range")
    return result


def base64_data(limit: int) -> Check:
    def check(value: Any) -> bytes:
        encoded: str = text(limit)(value)
        try:
            return base64.b64decode(encoded.encode("ascii"), validate=True)
        except (UnicodeEncodeError, binascii.Error) as exc:
            raise ProtocolError(f"file data that is not base64 ({_short(exc)})") from None

    return check


count = integer(0, _MAX_COUNT)
exit_status = optional(integer(0, 255))
signal_number = optional(integer(1, 128))


def answer_spec(op: str, *, max_output: int = 0, value_limit: int = 0, max_data: int = 0) -> dict[str, Check]:
    """The fields (besides `id` and `ok`) of a successful answer to `op`, with the limits of this call.

    `max_output` is the runner's cap per stream (bytes; a byte decodes to at most one character), `value_limit`
    its cap on a value's repr, `max_data` the longest base64 text of a file read (decoded to bytes here).
    """
    output = text(max_output + _MARKER_SLACK)
    common: dict[str, Check] = {
        "stdout": output,
        "stderr": output,
        "stdout_bytes": count,
        "stderr_bytes": count,
        "truncated": flag,
        "exit_code": exit_status,
        "signal": signal_number,
        "timed_out": flag,
        "cancelled": flag,
        "oom_killed": flag,
        "duration_s": seconds,
    }
    specs: dict[str, dict[str, Check]] = {
        "ping": {
            "pid": integer(1, 2**22),
            "uid": integer(0, 2**32),
            "python": text(_MAX_SHORT),
            "guarded": flag,
        },
        "python": {
            **common,
            "value": optional(text(value_limit + _MARKER_SLACK)),
            "error": optional(output),
            "traceback": optional(output),
            "state_lost": flag,
            "lost_before": flag,
            "crashed": flag,
        },
        "shell": {**common, "error": optional(text(_MAX_SHORT)), "python_lost": flag},
        "write": {"path": text(_MAX_PATH), "size": count},
        "read": {"path": text(_MAX_PATH), "data": base64_data(max_data)},
        "reset": {},
    }
    return specs[op]


def one_of(*values: str) -> Check:
    def check(value: Any) -> str:
        if value not in values:
            raise ProtocolError("not one of the values of the protocol")
        result: str = value
        return result

    return check


REFUSALS = ("bad_path", "outside_workspace", "not_a_file", "too_large")
"""Why the runner refused a file operation (`SandboxFileError.reason`)."""
_FAILURE: dict[str, Check] = {"error": text(_MAX_SHORT + _MAX_PATH), "reason": optional(one_of(*REFUSALS))}


def validate_answer(answer: Mapping[str, Any], spec: Mapping[str, Check]) -> Answer:
    """`answer` with every field checked against `spec` (a failure answer against its own small spec).

    The keys must be exactly those expected: a missing field, an extra one, or a value of the wrong type or
    size is a `ProtocolError`.
    """
    ok = answer.get("ok")
    if not isinstance(ok, bool):
        raise ProtocolError("an answer without ok: true or false")
    fields = spec if ok else _FAILURE
    expected = fields.keys() | {"id", "ok"}
    if answer.keys() != expected:
        missing = sorted(expected - answer.keys())
        extra = sorted(answer.keys() - expected)
        raise ProtocolError(
            f"unexpected fields in an answer (missing: {', '.join(missing) or '-'}; extra: {len(extra)})"
        )
    clean: Answer = {"id": answer["id"], "ok": ok}
    for name, check in fields.items():
        try:
            clean[name] = check(answer[name])
        except ProtocolError as exc:
            raise ProtocolError(f"field {name!r}: {exc}") from None
    return clean
