"""Decoding one call block: JSON (or, failing that, a Python literal) into calls, with every repair noted.

Everything here is a pure function of the block's text. Limits keep hostile text harmless: the nesting depth
of a call is bounded before any recursive decoder sees it (so the verdict never depends on the caller's stack
depth), numbers that overflow to infinity are refused like NaN, and lone surrogates (`"\\udc80"` escapes,
which no UTF-8 encoder accepts) become U+FFFD, so a parsed call can always be written to a transcript and
sent to a server.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Final

from agent.models._turns import CALL_CLOSE, CALL_OPEN
from prompts import render_note
from tools.types import ToolCall

__all__ = [
    "CALL_FORMAT",
    "CALL_OBJECT",
    "MAX_DEPTH",
    "Decoded",
    "MalformedCall",
    "clean_text",
    "clean_value",
    "decode_block",
    "decode_value",
    "e_nested",
    "e_stray_close",
    "nesting_depth",
]

MAX_DEPTH: Final = 64
"""Deepest nesting of arrays and objects a call may have; deeper is malformed. Real tool arguments stay far
below; far deeper values could not even be written to a transcript (pydantic stops at 255 levels)."""

CALL_OBJECT: Final = '{"name": <function-name>, "arguments": <args-json-object>}'
CALL_FORMAT: Final = f"{CALL_OPEN}\n{CALL_OBJECT}\n{CALL_CLOSE}"
"""The exact call form the system prompt teaches; error sentences repeat it so the model can copy it."""

# Sentences the model reads when a call could not be used: what was wrong, then the exact form to use. Their
# wording lives in prompts/templates/notes/call_*.j2 (docs/architecture.md, conventions); these only pick the note and fill
# it in. They run only for a malformed block, never per token, and `render_note` keeps compiled templates; the
# sentences without variables are rendered once, so output full of stray tags stays cheap to parse.


@functools.cache
def _e_empty() -> str:
    return render_note("call_empty", call_format=CALL_FORMAT)


def _e_json(detail: str) -> str:
    return render_note("call_invalid_json", detail=detail, call_object=CALL_OBJECT)


def _e_truncated(detail: str) -> str:
    return render_note("call_truncated", detail=detail, call_format=CALL_FORMAT)


def _e_not_json_start(start: str) -> str:
    return render_note("call_not_json", start=start, call_object=CALL_OBJECT)


def _e_not_object(kind: str) -> str:
    return render_note("call_not_object", kind=kind, call_object=CALL_OBJECT)


@functools.cache
def _e_no_name() -> str:
    return render_note("call_no_name", call_object=CALL_OBJECT)


def _e_bad_name(value: str) -> str:
    return render_note("call_bad_name", value=value, call_object=CALL_OBJECT)


def _e_args_type(name: str, kind: str) -> str:
    return render_note("call_arguments_type", quoted_name=name, kind=kind)


def _e_args_string(name: str, detail: str) -> str:
    return render_note("call_arguments_string", quoted_name=name, detail=detail)


def _e_args_missing(name: str, keys: str) -> str:
    return render_note("call_arguments_missing", quoted_name=name, keys=keys)


@functools.cache
def e_nested() -> str:
    return render_note("call_nested", call_format=CALL_FORMAT)


@functools.cache
def _e_too_deep() -> str:
    return render_note("call_too_deep", max_depth=MAX_DEPTH, call_format=CALL_FORMAT)


@functools.cache
def e_stray_close() -> str:
    return render_note("call_stray_close", call_format=CALL_FORMAT)


@dataclass(frozen=True, slots=True)
class MalformedCall:
    """A `<tool_call>` block that could not be turned into a call; `error` is what the model will read.

    Both texts are cleaned of lone surrogates here, whoever builds one: an error sentence may quote a name the
    block gave as a `"\\udfff"` escape, and the note goes into the next model request.
    """

    raw: str
    error: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "raw", clean_text(self.raw))
        object.__setattr__(self, "error", clean_text(self.error))


@dataclass(slots=True)
class Decoded:
    """What one block yielded, in text order, and the repairs it needed."""

    items: list[ToolCall | MalformedCall]
    notes: list[str]


class _DecodeError(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# NaN and Infinity are Python's extension, not JSON; refusing them also keeps parsed calls comparable.
def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: Python reads infinity, which JSON cannot say either
        raise ValueError(f"{text[:20]} is too large for a number")
    return value


_JSON: Final = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """`text` with lone surrogates replaced by U+FFFD (they cannot be encoded as UTF-8)."""
    if _SURROGATE.search(text) is None:
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def clean_value(value: Any) -> Any:
    """A decoded JSON value with lone surrogates cleaned out of every string and key.

    Iterative, so that cleaning never adds to the stack depth a verdict could depend on.
    """
    if isinstance(value, str):
        return clean_text(value)
    if not isinstance(value, list | dict):
        return value
    root: list[Any] = [value]
    stack: list[tuple[list[Any] | dict[str, Any], Any, Any]] = [(root, 0, value)]
    while stack:
        parent, key, item = stack.pop()
        if isinstance(item, str):
            parent[key] = clean_text(item)
        elif isinstance(item, list):
            copy: list[Any] = list(item)
            parent[key] = copy
            stack.extend((copy, i, child) for i, child in enumerate(item))
        elif isinstance(item, dict):
            mapping: dict[str, Any] = {clean_text(k): v for k, v in item.items()}
            parent[key] = mapping
            stack.extend((mapping, k, child) for k, child in mapping.items())
    return root[0]


def nesting_depth(text: str) -> int:
    """The deepest bracket nesting in `text`, outside string literals (JSON's and Python's quotes)."""
    depth = deepest = 0
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char in "{[(":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "}])":
            depth = max(depth - 1, 0)
        elif char in "'\"":
            i += 1
            while i < n and text[i] != char:
                i += 2 if text[i] == "\\" else 1
        i += 1
    return deepest


def decode_block(inner: str, raw: str, *, closed: bool) -> Decoded:
    """The calls (or malformed calls) in one block's text, and the repairs taken to read them.

    Three stages: unwrap the text (a code fence), read the JSON values it holds, turn each into calls.
    """
    notes: list[str] = []
    text = _unfence(inner.strip(), notes)
    problem = _screen(text, closed)
    if problem is not None:
        return Decoded([MalformedCall(raw=raw, error=problem)], [])
    values, error = _read_values(text, notes)
    if not values:
        return Decoded([MalformedCall(raw=raw, error=_decode_sentence(error or "", closed))], [])
    items = _calls_of(values, raw, notes)
    if not closed and any(isinstance(item, ToolCall) for item in items):
        notes.append(f"accepted the last {CALL_OPEN} although the output ended before {CALL_CLOSE}")
    if error is not None:
        # A second object was begun but is broken: the model meant another call, so tell it.
        items.append(MalformedCall(raw=raw, error=_decode_sentence(error, closed)))
    return Decoded(items, notes)


def _decode_sentence(detail: str, closed: bool) -> str:
    return (_e_json if closed else _e_truncated)(detail)


def _unfence(text: str, notes: list[str]) -> str:
    """The text without a Markdown code fence around it (noted)."""
    if not text.startswith("```"):
        return text
    newline = text.find("\n")
    text = text[newline + 1 :].rstrip() if newline >= 0 else ""
    if text.endswith("```"):
        text = text[:-3]
    notes.append("removed a Markdown code fence around the call JSON")
    return text.strip()


def _screen(text: str, closed: bool) -> str | None:
    """Why `text` cannot hold calls at all (empty, not JSON, too deep), or None."""
    if not text:
        return _e_empty() if closed else _decode_sentence("the block was empty", closed)
    if text[0] not in "{[":
        return _e_not_json_start(json.dumps(text[:20], ensure_ascii=False))
    if nesting_depth(text) > MAX_DEPTH:
        return _e_too_deep()
    return None


def _read_values(text: str, notes: list[str]) -> tuple[list[Any], str | None]:
    """The JSON values written one after another in `text`, and the error that stopped the reading, if any."""
    values: list[Any] = []
    pos = 0
    while pos < len(text):
        if values and text[pos] != "{":
            shown = json.dumps(text[pos : pos + 40], ensure_ascii=False)
            notes.append(f"ignored text after the call JSON: {shown}")
            break
        try:
            value, pos, python = decode_value(text, pos)
        except _DecodeError as exc:
            return values, str(exc)
        if python:
            notes.append(
                "read a Python literal (single quotes, True/False/None) as JSON with ast.literal_eval"
            )
        values.append(value)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if len(values) > 1:
        notes.append(f"read {len(values)} JSON objects written in one {CALL_OPEN} block as separate calls")
    return values, None


def _calls_of(values: list[Any], raw: str, notes: list[str]) -> list[ToolCall | MalformedCall]:
    """Each value as a call: an object, or an array of objects; anything else is malformed."""
    items: list[ToolCall | MalformedCall] = []
    for value in values:
        if isinstance(value, list) and value and all(isinstance(obj, dict) for obj in value):
            notes.append(f"read a JSON array of {len(value)} call object(s) in one {CALL_OPEN} block")
            items.extend(_call_from_object(obj, raw, notes) for obj in value)
        elif isinstance(value, dict):
            items.append(_call_from_object(value, raw, notes))
        else:
            kind = "an array that is not a list of call objects" if isinstance(value, list) else _kind(value)
            items.append(MalformedCall(raw=raw, error=_e_not_object(kind)))
    return items


def decode_value(text: str, pos: int) -> tuple[Any, int, bool]:
    """Decode the JSON value at `pos`, or failing that a Python literal; return (value, end, was_python)."""
    try:
        value, end = _JSON.raw_decode(text, pos)
        return value, end, False
    except json.JSONDecodeError as exc:
        detail = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
    except RecursionError:
        detail = "the JSON is nested too deeply"
    except ValueError as exc:
        detail = str(exc)
    end_of_literal = _literal_end(text, pos)
    if end_of_literal is not None:
        try:
            return _jsonable(ast.literal_eval(text[pos:end_of_literal])), end_of_literal, True
        except Exception:  # any failure just means "not a literal": report the JSON error instead
            pass
    raise _DecodeError(detail)


def _literal_end(text: str, pos: int) -> int | None:
    """Where the bracketed Python literal starting at `pos` ends, respecting quotes; None if it does not."""
    depth = 0
    i = pos
    n = len(text)
    while i < n:
        char = text[i]
        if char in "{[(":
            depth += 1
        elif char in "}])":
            depth -= 1
            if depth <= 0:
                return i + 1 if depth == 0 else None
        elif char in "'\"":
            quote = char * 3 if text.startswith(char * 3, i) else char
            i += len(quote)
            while i < n and not text.startswith(quote, i):
                if text[i] == "\\":
                    i += 1
                elif text[i] == "\n" and len(quote) == 1:
                    return None
                i += 1
            if i >= n:
                return None
            i += len(quote)
            continue
        i += 1
    return None


def _jsonable(value: Any) -> Any:
    """The JSON-shaped copy of a literal; raises on what JSON cannot say (sets, bytes, non-string keys...)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise ValueError("non-finite number")
    if isinstance(value, list | tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError("non-string key")
            out[key] = _jsonable(item)
        return out
    raise ValueError(f"{type(value).__name__} is not JSON")


_IGNORED_KEYS: Final = frozenset({"name", "type", "id", "function"})


class _Refused(Exception):
    """A call object that cannot be used; the message is the sentence for the model."""


def _call_from_object(obj: dict[str, Any], raw: str, notes: list[str]) -> ToolCall | MalformedCall:
    """One call object as a call: its name and its arguments object, read leniently with every liberty noted."""
    try:
        if "name" not in obj and isinstance(obj.get("function"), dict):
            obj = obj["function"]
            notes.append('unwrapped an OpenAI-style {"function": {...}} call object')
        name = _name_of(obj, notes)
        arguments = _arguments_of(obj, _short_json(name), notes)
    except _Refused as exc:
        return MalformedCall(raw=raw, error=str(exc))
    return ToolCall(name=clean_text(name), arguments=clean_value(arguments))


def _name_of(obj: dict[str, Any], notes: list[str]) -> str:
    if "name" not in obj:
        raise _Refused(_e_no_name())
    name = obj["name"]
    if not isinstance(name, str) or not name.strip():
        raise _Refused(_e_bad_name(_short_json(name)))
    if name != name.strip():
        name = name.strip()
        notes.append(f"removed whitespace around the function name {_short_json(name)}")
    return name


def _arguments_of(obj: dict[str, Any], quoted: str, notes: list[str]) -> dict[str, Any]:
    """The arguments object, from `arguments` (or `parameters`), decoded when given as a JSON string."""
    if "arguments" in obj or "parameters" in obj:
        key = "arguments" if "arguments" in obj else "parameters"
        if key == "parameters":
            notes.append(f'read "parameters" as "arguments" in the call to {quoted}')
        ignored = [k for k in obj if k not in _IGNORED_KEYS and k not in ("arguments", "parameters")]
        if ignored:
            notes.append(
                f"ignored the keys {', '.join(_short_json(k) for k in ignored)} in the call to {quoted}"
            )
        arguments = obj[key]
    else:
        extra = [k for k in obj if k not in _IGNORED_KEYS]
        if extra:
            raise _Refused(_e_args_missing(quoted, ", ".join(_short_json(k) for k in extra)))
        notes.append(f'the call to {quoted} had no "arguments"; used {{}}')
        arguments = {}
    if arguments is None:
        notes.append(f'the call to {quoted} had "arguments": null; used {{}}')
        return {}
    if isinstance(arguments, str) and not arguments.strip():
        notes.append(f'the call to {quoted} had empty "arguments"; used {{}}')
        return {}
    if isinstance(arguments, str):
        arguments = _arguments_from_string(arguments, quoted)
        notes.append(f'decoded the "arguments" of {quoted}, which were given as a JSON string')
    if not isinstance(arguments, dict):
        raise _Refused(_e_args_type(quoted, _kind(arguments)))
    return arguments


def _arguments_from_string(text: str, quoted: str) -> dict[str, Any]:
    if nesting_depth(text) > MAX_DEPTH:
        raise _Refused(_e_too_deep())
    try:
        decoded = _JSON.decode(text)
    except json.JSONDecodeError as exc:
        raise _Refused(_e_args_string(quoted, f"{exc.msg} at column {exc.colno}")) from None
    except (RecursionError, ValueError):
        raise _Refused(_e_args_string(quoted, "it could not be decoded")) from None
    if not isinstance(decoded, dict):
        raise _Refused(_e_args_string(quoted, f"it held {_kind(decoded)}"))
    return decoded


def _kind(value: Any) -> str:
    """How a sentence names the JSON type of `value`."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if value is None:
        return "null"
    return "an object"


def _short_json(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (RecursionError, ValueError):  # a value nested too deeply to print is still worth a sentence
        return _kind(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
