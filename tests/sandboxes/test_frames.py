"""The host's frame decoder and answer checks, fed hostile bytes: nothing but a valid answer or `ProtocolError`.

No engine needed: this is the host side of what a forged frame from the sandbox meets (tests/sandboxes/
test_hostile.py sends the same classes from inside a real container).
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import sys
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from sandboxes import DockerSandbox, ExecResult
from sandboxes._channel import Channel, ChannelClosed, ChannelTimeout
from sandboxes._protocol import ProtocolError, answer_spec, clean_text, decode_frame, validate_answer

MAX_OUTPUT = 1024
VALUE_LIMIT = 100
PYTHON = answer_spec("python", max_output=MAX_OUTPUT, value_limit=VALUE_LIMIT)
SHELL = answer_spec("shell", max_output=MAX_OUTPUT)
SPECS = {
    "python": PYTHON,
    "shell": SHELL,
    "ping": answer_spec("ping"),
    "write": answer_spec("write"),
    "read": answer_spec("read", max_data=4096),
    "reset": answer_spec("reset"),
}


def python_answer(**changes: Any) -> dict[str, Any]:
    """A valid answer to a python call, as the runner writes it, with `changes` applied."""
    answer: dict[str, Any] = {
        "id": 7,
        "ok": True,
        "stdout": "out\n",
        "stderr": "",
        "stdout_bytes": 4,
        "stderr_bytes": 0,
        "truncated": False,
        "value": "42",
        "error": None,
        "traceback": None,
        "timed_out": False,
        "cancelled": False,
        "state_lost": False,
        "lost_before": False,
        "crashed": False,
        "exit_code": None,
        "signal": None,
        "oom_killed": False,
        "duration_s": 0.01,
    }
    answer.update(changes)
    return answer


def shell_answer(**changes: Any) -> dict[str, Any]:
    answer = {k: v for k, v in python_answer().items() if k in SHELL or k in ("id", "ok")}
    answer["python_lost"] = False
    answer.update(changes)
    return answer


def encode(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def check(body: bytes, spec: dict[str, Any] = PYTHON) -> dict[str, Any]:
    return validate_answer(decode_frame(body), spec)


def test_a_valid_answer_passes_unchanged() -> None:
    assert check(encode(python_answer())) == python_answer()
    assert check(encode(shell_answer(exit_code=3)), SHELL)["exit_code"] == 3
    failure = check(b'{"id": 1, "ok": false, "error": "No such file", "reason": null}', SPECS["read"])
    assert failure == {"id": 1, "ok": False, "error": "No such file", "reason": None}
    refusal = b'{"id": 1, "ok": false, "error": "only ...", "reason": "outside_workspace"}'
    assert check(refusal, SPECS["read"])["reason"] == "outside_workspace"
    for reason in (b'"other"', b"1", b'"' + b"x" * 100 + b'"'):
        with pytest.raises(ProtocolError, match="reason"):
            check(b'{"id": 1, "ok": false, "error": "e", "reason": ' + reason + b"}", SPECS["read"])


# Values of every JSON type and size; each field of the python answer is tried with each of them.
VALUES: list[Any] = [
    "abc",
    "x" * (MAX_OUTPUT + 1000),
    [1],
    {"a": 1},
    10**400,
    -1,
    0,
    300,
    1.5,
    True,
    None,
]


def _is_right(field: str, value: Any) -> bool:
    """What the protocol allows in `field`, written out independently of the checks under test."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    integer = isinstance(value, int) and not isinstance(value, bool)
    if field in ("stdout", "stderr"):
        return isinstance(value, str) and len(value) <= MAX_OUTPUT + 256
    if field in ("error", "traceback"):
        return value is None or (isinstance(value, str) and len(value) <= MAX_OUTPUT + 256)
    if field == "value":
        return value is None or (isinstance(value, str) and len(value) <= VALUE_LIMIT + 256)
    if field in ("stdout_bytes", "stderr_bytes"):
        return integer and 0 <= value <= 2**63
    if field == "exit_code":
        return value is None or (integer and 0 <= value <= 255)
    if field == "signal":
        return value is None or (integer and 1 <= value <= 128)
    if field == "duration_s":
        return number and 0 <= value <= 1e7
    return isinstance(value, bool)  # the flags


@pytest.mark.parametrize("field", sorted(PYTHON))
@pytest.mark.parametrize("value", VALUES, ids=lambda v: f"{type(v).__name__}{len(repr(v))}")
def test_every_field_of_an_answer_is_checked(field: str, value: Any) -> None:
    body = encode(python_answer(**{field: value}))
    if _is_right(field, value):
        assert check(body)[field] == value
    else:
        nested = isinstance(value, (list, dict))  # refused before any field is looked at
        with pytest.raises(ProtocolError, match="flat" if nested else field):
            check(body)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b'{"duration_s": "abc"}', id="duration-string"),
        pytest.param(encode(python_answer(duration_s="abc")), id="duration-abc"),
        pytest.param(encode(python_answer(duration_s=[1])), id="duration-list"),
        pytest.param(encode(python_answer(duration_s=10**400)), id="duration-400-digits"),
        pytest.param(encode(python_answer(stdout_bytes=10**400)), id="count-400-digits"),
        pytest.param(encode(python_answer(exit_code=10**400)), id="exit-400-digits"),
        pytest.param(
            encode(python_answer()).replace(b'"duration_s": 0.01', b'"duration_s": 1e999'), id="1e999"
        ),
        pytest.param(encode(python_answer()).replace(b'"duration_s": 0.01', b'"duration_s": NaN'), id="nan"),
        pytest.param(
            encode(python_answer()).replace(b'"duration_s": 0.01', b'"duration_s": -Infinity'), id="-infinity"
        ),
        pytest.param(
            encode(python_answer()).replace(b'"duration_s": 0.01', b'"duration_s": ' + b"9" * 5000),
            id="5000-digits",
        ),
        pytest.param(b"[" * 200_000 + b"]" * 200_000, id="nested-200k-list"),
        pytest.param(b'{"id": 7, "ok": true, "stdout": ' + b"[" * 200_000, id="nested-200k-unclosed"),
        pytest.param(b'{"a": ' * 200_000 + b"1" + b"}" * 200_000, id="nested-200k-objects"),
        pytest.param(encode(python_answer(stdout={"a": {"b": 1}})), id="nested-object-field"),
        pytest.param(encode(python_answer()).replace(b'"out\\n"', b'"\xff\xfe"'), id="invalid-utf8"),
        pytest.param(
            encode(python_answer()).replace(b'"out\\n"', b'"\xed\xa0\x80"'), id="utf8-encoded-surrogate"
        ),
        pytest.param(encode(python_answer(stdout="x" * (MAX_OUTPUT + 1000))), id="huge-stdout"),
        pytest.param(encode(python_answer(value="v" * (VALUE_LIMIT + 1000))), id="huge-value"),
        pytest.param(encode(python_answer(extra=1)), id="extra-field"),
        pytest.param(encode({k: v for k, v in python_answer().items() if k != "stderr"}), id="missing-field"),
        pytest.param(
            b'{"id": 7, "id": 7, ' + encode(python_answer())[1:].replace(b'"id": 7, ', b""), id="repeated-key"
        ),
        pytest.param(encode(python_answer(ok="yes")), id="ok-string"),
        pytest.param(encode(python_answer(ok=False)), id="failure-with-answer-fields"),
        pytest.param(encode([python_answer()]), id="a-list"),
        pytest.param(b'"a string"', id="a-string"),
        pytest.param(b"", id="empty"),
        pytest.param(b"{}", id="empty-object"),
        pytest.param(b"\x00" * 100, id="nul-bytes"),
        pytest.param('{"id": 7}'.encode("utf-16"), id="utf-16"),
    ],
)
def test_malformed_frames_are_protocol_errors(body: bytes) -> None:
    with pytest.raises(ProtocolError):
        check(body)


def test_nesting_is_refused_at_the_same_depth_whatever_the_callers_stack() -> None:
    deep = b'{"a": ' + b"[" * 900 + b"]" * 900 + b"}"

    def at_depth(n: int) -> None:
        if n:
            at_depth(n - 1)
            return
        with pytest.raises(ProtocolError, match="flat"):
            decode_frame(deep)

    for depth in (0, sys.getrecursionlimit() - 100):
        at_depth(depth)


def test_brackets_inside_strings_are_text_not_nesting() -> None:
    answer = python_answer(stdout='{"a": [1, [2]]} \\" [[[', value="{'x': [1]}")
    assert check(encode(answer))["stdout"] == answer["stdout"]


@pytest.mark.parametrize(
    "surrogate",
    [chr(0xD800), chr(0xDC80), chr(0xDFFF), "a" + chr(0xD83D)],
    ids=["d800", "dc80", "dfff", "high-alone"],
)
def test_lone_surrogates_become_the_replacement_character(surrogate: str) -> None:
    fields = {name: surrogate for name in ("stdout", "stderr", "value", "error", "traceback")}
    body = json.dumps(python_answer(**fields)).encode()  # escapes them as \udXXX
    clean = check(body)
    for name in fields:
        assert "\ufffd" in clean[name]
        clean[name].encode("utf-8")
    # A real pair is a character, not two lone halves.
    assert check(encode(python_answer(stdout="\U0001f600")))["stdout"] == "\U0001f600"


def test_file_data_must_be_base64() -> None:
    spec = SPECS["read"]
    assert check(b'{"id": 1, "ok": true, "path": "/workspace/a", "data": "aGk="}', spec)["data"] == b"hi"
    for data in ('"a"', '"\\u00e9\\u00e9\\u00e9\\u00e9"', '"!!!!"', "1"):
        with pytest.raises(ProtocolError):
            check(b'{"id": 1, "ok": true, "path": "/workspace/a", "data": ' + data.encode() + b"}", spec)


# ----------------------------------------------------------------------------------------------- properties

# Text with lone surrogates in it often (JSON escapes them as \\udXXX; the decoder must replace them).
characters = st.characters(exclude_categories=()) | st.sampled_from(
    [chr(c) for c in (0xD800, 0xDBFF, 0xDC80, 0xDFFF)]
)
any_text = st.text(characters, max_size=50)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | any_text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


def _field_value(spec_field: str) -> st.SearchStrategy[Any]:
    """Mostly right values for a field, sometimes anything at all."""
    right: dict[str, st.SearchStrategy[Any]] = {
        "duration_s": st.floats(min_value=0, max_value=1e7),
        "stdout_bytes": st.integers(min_value=0, max_value=2**63),
        "stderr_bytes": st.integers(min_value=0, max_value=2**63),
        "exit_code": st.none() | st.integers(min_value=0, max_value=255),
        "signal": st.none() | st.integers(min_value=1, max_value=128),
        "value": st.none() | st.text(characters, max_size=VALUE_LIMIT),
        "error": st.none() | any_text,
        "traceback": st.none() | any_text,
        "stdout": any_text,
        "stderr": any_text,
    }
    anything = json_values | st.integers() | st.text(min_size=MAX_OUTPUT, max_size=MAX_OUTPUT + 300)
    return st.integers(0, 19).flatmap(lambda n: right.get(spec_field, st.booleans()) if n else anything)


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    """Answers near the valid ones: each field right or wrong, some fields dropped or added."""
    answer = {"id": 7, "ok": draw(st.sampled_from([True, True, True, True, False, "x"]))}
    for name in PYTHON:
        if draw(st.integers(0, 60)):
            answer[name] = draw(_field_value(name))
    if draw(st.integers(0, 20)) == 0:
        answer[draw(st.text(max_size=5))] = draw(json_values)
    return answer


def _exec_result_is_sound(clean: dict[str, Any]) -> None:
    result = DockerSandbox()._python_result(clean, 5.0, False)  # no container: only builds the result
    assert isinstance(result, ExecResult)
    result.model_dump_json().encode("utf-8")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answers())
def test_decoder_accepts_only_valid_answers(answer: dict[str, Any]) -> None:
    body = json.dumps(answer).encode()
    valid = answer.get("ok") is True and answer.keys() == PYTHON.keys() | {"id", "ok"}
    valid = valid and all(_is_right(name, answer[name]) for name in PYTHON)
    event(f"valid: {valid}")
    try:
        clean = check(body)
    except ProtocolError:
        assert not valid
        return
    if clean["ok"]:
        assert valid
        assert clean == {k: clean_text(v) if isinstance(v, str) else v for k, v in answer.items()}
        _exec_result_is_sound(clean)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
def test_decoder_on_arbitrary_bytes_returns_a_flat_object_or_a_protocol_error(body: bytes) -> None:
    try:
        message = decode_frame(body)
    except ProtocolError:
        return
    assert isinstance(message, dict)
    for key, value in message.items():
        key.encode("utf-8")
        assert value is None or isinstance(value, (bool, int, float, str))
        if isinstance(value, str):
            value.encode("utf-8")
    for spec in SPECS.values():
        with contextlib.suppress(ProtocolError):
            validate_answer(message, spec)


@settings(max_examples=200, deadline=None)
@given(st.text(characters, max_size=100))
def test_clean_text_always_encodes_and_keeps_everything_else(text: str) -> None:
    cleaned = clean_text(text)
    cleaned.encode("utf-8")
    assert len(cleaned) == len(text)
    assert all(a == b or b == "\ufffd" for a, b in zip(text, cleaned, strict=True))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([0, 1, 2, 1, 1, 7]), st.binary(max_size=64)), max_size=8))
def test_channel_on_arbitrary_streams_raises_only_its_own_errors(chunks: list[tuple[int, bytes]]) -> None:
    """Whatever the container's stream holds, `recv` returns a frame or raises one of the channel's errors."""
    host, container = socket.socketpair()
    with host, container:
        channel = Channel(host, max_frame=4096)
        container.sendall(b"".join(struct.pack(">BxxxL", s, len(p)) + p for s, p in chunks))
        container.close()
        for _ in range(len(chunks) + 2):
            try:
                assert isinstance(channel.recv(time.monotonic() + 2), dict)
            except (ProtocolError, ChannelClosed, ChannelTimeout):
                return


@pytest.mark.parametrize("op", ["python", "shell"])
def test_the_runners_answer_to_a_call_cancelled_in_the_queue_follows_the_protocol(op: str) -> None:
    from sandboxes._runner import skipped_answer

    answer = validate_answer({**skipped_answer(op), "id": 3, "ok": True}, SPECS[op])
    assert answer["cancelled"] is True
    assert answer["stdout"] == ""
