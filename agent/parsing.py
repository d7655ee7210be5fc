"""Think-aware parsing of QwQ-32B output into reasoning, visible content and tool calls.

One state machine does all the work. `parse_completion` feeds it the whole text at once and `StreamParser`
feeds it deltas, so the two give the same `Completion` for any chunking by construction: every decision
depends only on the text, and text that might be the start of a tag (`</thi`) is held back until the next
delta settles it. That held-back tail is never longer than the longest tag, which is what keeps streaming
linear in the length of the output.

The rules, in the order a reader usually asks about them:

* **Where the text starts.** QwQ's prompt ends with `<think>\\n`, so by default (`prompt_opened_think=True`)
  the text starts inside reasoning. An explicit `<think>` before any reasoning text is dropped. With
  `prompt_opened_think=False` the text starts as content and a `<think>` opens reasoning.
* **Reasoning** runs to the first `</think>`. A `<think>` in content later reopens it (noted in `repairs`);
  a `</think>` in content with nothing open is dropped (noted).
* **Tool calls.** A `<tool_call>` block in content is a call; it closes at the first `</tool_call>` (as
  Hermes-style parsers such as vLLM's do), so an argument cannot contain that literal tag. Blocks inside reasoning
  are *drafts*: parsed into `Completion.drafts`, never executed, and kept verbatim in `thinking`.
* **Unclosed reasoning.** When the output ends (or is cut) inside reasoning and the last non-whitespace
  thing in it is a run of call blocks, those calls are *promoted* to `tool_calls` (with a repair note) unless
  `promote_trailing_drafts=False`. The model evidently meant to call and forgot `</think>`, or it went on
  to invent the tool's answer; a call followed by more reasoning text is only a draft.
* **End of the output.** A last `<tool_call>` without `</tool_call>` is accepted when its JSON is complete
  (noted). `<tool_response>` means the model started inventing the result: everything from there is dropped
  and `cut_at_tool_response` is set. `<|im_end|>`, `<|im_start|>` and `<|endoftext|>` (servers that do not
  strip special tokens) end the output too.
* **Inside a block** the JSON may be repaired conservatively, each repair noted: a Markdown code fence is
  removed; trailing text after the object is ignored; several objects or a JSON array of objects give several
  calls; Python literals (single quotes, True/False/None) are read with `ast.literal_eval` on the object only
  (never `eval`); arguments given as a JSON string are decoded; `"parameters"` is read as `"arguments"`; an
  OpenAI-style `{"function": {...}}` wrapper is unwrapped; a call with only a name gets `{}`. Names are kept
  as written (dots, dashes, slashes): whether a tool exists is the toolbox's question. Everything else becomes
  a `MalformedCall` whose `error` tells the model what was wrong and the exact form to use.
* **Whitespace.** `thinking` is all reasoning text (draft blocks included, verbatim) concatenated and stripped
  at both ends; `content` is all text outside reasoning and outside call blocks, concatenated as written and
  stripped at both ends. So the newlines after `</think>` and before the first call vanish, and text on both
  sides of a call is joined by the whitespace that surrounded the call. The stream applies the same rule
  incrementally (whitespace is held until something follows it), so the deltas concatenate to the fields.

Nothing here raises on any text: a parser that fails takes the whole agent loop down with it.
"""

from __future__ import annotations

import ast
import functools
import json
import math
from dataclasses import dataclass, field
from typing import Any, Final

from agent.events import ContentDelta, MalformedCallEvent, ParseEvent, ThinkingDelta, ToolCallParsed
from prompts import render_note
from tools.types import ToolCall

__all__ = [
    "CALL_FORMAT",
    "Completion",
    "MalformedCall",
    "StreamParser",
    "parse_completion",
]

THINK_OPEN: Final = "<think>"
THINK_CLOSE: Final = "</think>"
CALL_OPEN: Final = "<tool_call>"
CALL_CLOSE: Final = "</tool_call>"
RESPONSE_OPEN: Final = "<tool_response>"
END_TOKENS: Final = ("<|im_end|>", "<|im_start|>", "<|endoftext|>")

CALL_OBJECT: Final = '{"name": <function-name>, "arguments": <args-json-object>}'
CALL_FORMAT: Final = f"{CALL_OPEN}\n{CALL_OBJECT}\n{CALL_CLOSE}"
"""The exact call form the system prompt teaches; error sentences repeat it so the model can copy it."""

# Sentences the model reads when a call could not be used: what was wrong, then the exact form to use. Their
# wording lives in prompts/templates/notes/call_*.j2 (design.md section 7); these only pick the note and fill
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
def _e_nested() -> str:
    return render_note("call_nested", call_format=CALL_FORMAT)


@functools.cache
def _e_stray_close() -> str:
    return render_note("call_stray_close", call_format=CALL_FORMAT)


# Modes of the state machine. A block's parent (reasoning or content) is kept separately.
_THINK: Final = 0
_CONTENT: Final = 1
_BLOCK: Final = 2
_END: Final = 3

_TAGS: Final[dict[tuple[int, int], tuple[str, ...]]] = {
    (_THINK, _THINK): (THINK_CLOSE, CALL_OPEN, RESPONSE_OPEN, THINK_OPEN, *END_TOKENS),
    (_CONTENT, _CONTENT): (CALL_OPEN, CALL_CLOSE, RESPONSE_OPEN, THINK_OPEN, THINK_CLOSE, *END_TOKENS),
    # A draft block ends with reasoning: `</think>` inside it closes both.
    (_BLOCK, _THINK): (CALL_CLOSE, CALL_OPEN, RESPONSE_OPEN, THINK_CLOSE, *END_TOKENS),
    # In a real call `</think>` is left alone: it may sit inside an argument string.
    (_BLOCK, _CONTENT): (CALL_CLOSE, CALL_OPEN, RESPONSE_OPEN, *END_TOKENS),
}
_LONGEST_TAG: Final = max(len(tag) for tags in _TAGS.values() for tag in tags)
# Every tag starts with `<` then one of these: any other `<` is text without further checks.
_SECOND_CHARS: Final = frozenset(tag[1] for tags in _TAGS.values() for tag in tags)
# Slicing only short tails keeps a whole-text parse linear when the text holds many literal `<`.
_PREFIXES: Final[dict[tuple[int, int], frozenset[str]]] = {
    key: frozenset(tag[:i] for tag in tags for i in range(1, len(tag))) for key, tags in _TAGS.items()
}


@dataclass(frozen=True, slots=True)
class MalformedCall:
    """A `<tool_call>` block that could not be turned into a call; `error` is what the model will read."""

    raw: str
    error: str


@dataclass(frozen=True, slots=True)
class Completion:
    """One model turn taken apart.

    `tool_calls` are the calls to run, in text order; `drafts` the calls seen inside reasoning and not run;
    `thinking_closed` is False when the output ended (or was cut) inside reasoning; `repairs` says, in plain
    words, every liberty the parser took; `raw` is the text as written, up to a cut at `<tool_response>` or an
    end token (the form `AssistantMessage.raw` wants).
    """

    thinking: str = ""
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    malformed: list[MalformedCall] = field(default_factory=list)
    drafts: list[ToolCall] = field(default_factory=list)
    thinking_closed: bool = True
    cut_at_tool_response: bool = False
    repairs: list[str] = field(default_factory=list)
    raw: str = ""


def parse_completion(
    text: str, *, prompt_opened_think: bool = True, promote_trailing_drafts: bool = True
) -> Completion:
    """Parse a whole completion; the same result `StreamParser` gives for any chunking of `text`."""
    parser = StreamParser(
        prompt_opened_think=prompt_opened_think, promote_trailing_drafts=promote_trailing_drafts
    )
    parser.feed(text)
    return parser.close()


class _Channel:
    """Text of one kind (reasoning or content), stripped at both ends as it streams.

    Whitespace is held until something non-blank follows it, so a delta never has to be taken back and the
    concatenated output equals `"".join(segments).strip()`.
    """

    __slots__ = ("parts", "pending", "started")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.pending: list[str] = []
        self.started = False

    def push(self, text: str) -> str:
        """Take `text`, return what can be emitted now."""
        body = text.rstrip()
        if not body:
            if self.started:
                self.pending.append(text)
            return ""
        tail = text[len(body) :]
        if not self.started:
            self.started = True
            out = body.lstrip()
        elif self.pending:
            out = "".join(self.pending) + body
            self.pending.clear()
        else:
            out = body
        if tail:
            self.pending.append(tail)
        self.parts.append(out)
        return out

    def text(self) -> str:
        return "".join(self.parts)


class StreamParser:
    """Incremental parser: `feed` deltas as they arrive, then `finish` (last events) and `close`.

    `feed` returns the events the delta made certain: reasoning and content deltas (adjacent ones merged),
    `ToolCallParsed` when a call block closes, `MalformedCallEvent` for a block that could not be used.
    `finish` returns the events that only the end of the output settles (held-back text, an unclosed last
    call, promoted drafts); `close` calls it if needed and returns the `Completion`, the same object each
    time. Memory is the text itself (for `Completion.raw`) plus the current call block. Total work is linear:
    each character is scanned once, plus a few times more for a possible tag prefix and once when its call
    block is decoded.
    """

    def __init__(self, *, prompt_opened_think: bool = True, promote_trailing_drafts: bool = True) -> None:
        self._promote = promote_trailing_drafts
        self._mode: int = _THINK if prompt_opened_think else _CONTENT
        self._parent: int = _CONTENT
        self._buf = ""
        self._base = 0  # offset in the whole text of _buf[0]
        self._raw: list[str] = []
        self._raw_end: int | None = None
        self._thinking = _Channel()
        self._content = _Channel()
        self._block: list[str] = []
        self._tool_calls: list[ToolCall] = []
        self._malformed: list[MalformedCall] = []
        self._drafts: list[ToolCall] = []
        self._repairs: list[str] = []
        # Blocks written since the last reasoning text: the candidates for promotion.
        self._trailing: list[_Decoded] = []
        self._seen_think_close = False
        self._ended_in_thinking = False
        self._cut_at_response = False
        self._end_tag = ""
        self._text_after_end = False
        self._finished = False
        self._completion: Completion | None = None
        self._events: list[ParseEvent] = []
        self._delta_kind = _THINK
        self._delta_parts: list[str] = []

    @property
    def in_thinking(self) -> bool:
        """Whether the text read so far ends inside reasoning (a thinking budget needs to know)."""
        return self._mode == _THINK or (self._mode == _BLOCK and self._parent == _THINK)

    def feed(self, delta: str) -> list[ParseEvent]:
        """Read the next piece of output; return the events it settles."""
        if self._finished:
            raise RuntimeError(
                "StreamParser.feed() after finish()/close(); use one StreamParser per completion"
            )
        if not delta:
            return []
        if self._mode == _END:  # past a cut: only whether anything but whitespace follows matters
            if not self._text_after_end and not delta.isspace():
                self._text_after_end = True
            return []
        self._raw.append(delta)
        self._events = []
        self._buf += delta
        self._scan(final=False)
        return self._take_events()

    def finish(self) -> list[ParseEvent]:
        """Declare the end of the output; return the events only the end settles."""
        if self._finished:
            return []
        self._finished = True
        self._events = []
        if self._mode != _END:
            self._scan(final=True)
        if self._mode != _END:
            self._end("")
        return self._take_events()

    def close(self) -> Completion:
        """The parsed turn. Calls `finish` if needed (its events are then not returned anywhere)."""
        if self._completion is None:
            self.finish()
            raw = "".join(self._raw)
            if self._raw_end is not None:
                raw = raw[: self._raw_end]
            repairs = list(self._repairs)
            if self._text_after_end and self._end_tag in END_TOKENS:
                repairs.append(f"ignored the text after {self._end_tag}")
            self._completion = Completion(
                thinking=self._thinking.text(),
                content=self._content.text(),
                tool_calls=list(self._tool_calls),
                malformed=list(self._malformed),
                drafts=list(self._drafts),
                thinking_closed=not self._ended_in_thinking,
                cut_at_tool_response=self._cut_at_response,
                repairs=repairs,
                raw=raw,
            )
        return self._completion

    # -- scanning -------------------------------------------------------------------------------------------

    def _scan(self, *, final: bool) -> None:
        buf = self._buf
        n = len(buf)
        pos = 0  # start of the text not yet handed on
        search = 0  # where to look for the next `<`; a literal `<` just extends the text span
        while pos < n and self._mode != _END:
            lt = buf.find("<", search)
            if lt < 0:
                self._text(buf[pos:])
                pos = n
                break
            search = lt + 1
            if lt + 1 < n and buf[lt + 1] not in _SECOND_CHARS:
                continue
            key = (self._mode, self._parent if self._mode == _BLOCK else self._mode)
            for tag in _TAGS[key]:
                if buf.startswith(tag, lt):
                    if lt > pos:
                        self._text(buf[pos:lt])
                    pos = search = lt + len(tag)
                    self._tag(tag, self._base + lt)
                    break
            else:
                if not final and n - lt < _LONGEST_TAG and buf[lt:] in _PREFIXES[key]:
                    if lt > pos:
                        self._text(buf[pos:lt])
                    pos = lt  # maybe the start of a tag: wait for the next delta
                    break
        if self._mode == _END:
            rest = buf[pos:]
            if rest and not rest.isspace():
                self._text_after_end = True
            pos = n
        self._base += pos
        self._buf = buf[pos:]

    def _text(self, text: str) -> None:
        if self._mode == _THINK:
            if not text.isspace():
                self._trailing.clear()
            self._delta(_THINK, self._thinking.push(text))
        elif self._mode == _CONTENT:
            self._delta(_CONTENT, self._content.push(text))
        else:
            self._block.append(text)
            if self._parent == _THINK:
                self._delta(_THINK, self._thinking.push(text))

    def _tag(self, tag: str, at: int) -> None:
        mode = self._mode
        if mode == _THINK:
            if tag == THINK_CLOSE:
                self._close_thinking()
            elif tag == CALL_OPEN:
                self._open_block(_THINK)
            elif tag == THINK_OPEN:
                if self._thinking.started:
                    self._text(tag)
                # else: the model repeated the `<think>` the prompt already wrote
            else:
                self._end(tag, at)
        elif mode == _CONTENT:
            if tag == CALL_OPEN:
                self._open_block(_CONTENT)
            elif tag == CALL_CLOSE:
                self._add_malformed(MalformedCall(raw=tag, error=_e_stray_close()))
            elif tag == THINK_OPEN:
                if self._seen_think_close:
                    self._repairs.append("the model reopened reasoning with <think> after </think>")
                self._mode = _THINK
            elif tag == THINK_CLOSE:
                self._repairs.append("ignored a </think> that closed no reasoning")
            else:
                self._end(tag, at)
        elif tag == CALL_CLOSE:
            self._close_block(closed=True)
        elif tag == CALL_OPEN:
            parent = self._parent
            self._settle(
                _Decoded([MalformedCall(raw=CALL_OPEN + "".join(self._block), error=_e_nested())], []), parent
            )
            self._open_block(parent)
        elif tag == THINK_CLOSE:
            self._close_block(closed=False)
            self._close_thinking()
        else:
            self._end(tag, at)

    # -- blocks and endings ---------------------------------------------------------------------------------

    def _open_block(self, parent: int) -> None:
        self._mode = _BLOCK
        self._parent = parent
        self._block = []
        if parent == _THINK:
            self._delta(_THINK, self._thinking.push(CALL_OPEN))

    def _close_block(self, *, closed: bool) -> None:
        parent = self._parent
        inner = "".join(self._block)
        self._block = []
        raw = CALL_OPEN + inner + (CALL_CLOSE if closed else "")
        if closed and parent == _THINK:
            self._delta(_THINK, self._thinking.push(CALL_CLOSE))
        self._settle(_decode_block(inner, raw, closed=closed), parent)

    def _settle(self, decoded: _Decoded, parent: int) -> None:
        """Record a finished block: a real call goes out at once, a draft waits in case it is promoted."""
        self._mode = parent
        if parent == _THINK:
            self._drafts.extend(item for item in decoded.items if isinstance(item, ToolCall))
            self._trailing.append(decoded)
            return
        self._take(decoded)

    def _take(self, decoded: _Decoded) -> None:
        for item in decoded.items:
            if isinstance(item, ToolCall):
                self._tool_calls.append(item)
                self._event(ToolCallParsed(call=item))
            else:
                self._add_malformed(item)
        self._repairs.extend(decoded.notes)

    def _add_malformed(self, item: MalformedCall) -> None:
        self._malformed.append(item)
        self._event(MalformedCallEvent(raw=item.raw, error=item.error))

    def _close_thinking(self) -> None:
        self._mode = _CONTENT
        self._seen_think_close = True
        self._trailing.clear()

    def _end(self, tag: str, at: int | None = None) -> None:
        """The output is over: at `tag` (a cut) or, with `tag == ""`, at its real end."""
        self._ended_in_thinking = self.in_thinking
        if self._mode == _BLOCK:
            self._close_block(closed=False)
        if tag == RESPONSE_OPEN:
            self._cut_at_response = True
        self._end_tag = tag
        if at is not None:
            self._raw_end = at
        if self._mode == _THINK and self._promote and self._trailing:
            promoted = [item for decoded in self._trailing for item in decoded.items]
            calls = sum(isinstance(item, ToolCall) for item in promoted)
            if calls:
                del self._drafts[-calls:]
            for decoded in self._trailing:
                self._take(decoded)
            self._repairs.append(
                f"ran {len(promoted)} call block(s) written at the end of reasoning that never closed "
                "(no </think> before the output ended)"
            )
            self._trailing.clear()
        self._mode = _END

    # -- events ---------------------------------------------------------------------------------------------

    def _delta(self, kind: int, text: str) -> None:
        if not text:
            return
        if kind != self._delta_kind:
            self._flush_delta()
            self._delta_kind = kind
        self._delta_parts.append(text)

    def _flush_delta(self) -> None:
        if self._delta_parts:
            text = "".join(self._delta_parts)
            self._delta_parts.clear()
            self._events.append(
                ThinkingDelta(text=text) if self._delta_kind == _THINK else ContentDelta(text=text)
            )

    def _event(self, event: ParseEvent) -> None:
        self._flush_delta()
        self._events.append(event)

    def _take_events(self) -> list[ParseEvent]:
        self._flush_delta()
        events, self._events = self._events, []
        return events


# -- decoding one block -------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Decoded:
    """What one block yielded, in text order, and the repairs it needed."""

    items: list[ToolCall | MalformedCall]
    notes: list[str]


class _DecodeError(Exception):
    pass


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# NaN and Infinity are Python's extension, not JSON; refusing them also keeps parsed calls comparable.
_JSON: Final = json.JSONDecoder(parse_constant=_reject_constant)


def _decode_block(inner: str, raw: str, *, closed: bool) -> _Decoded:
    notes: list[str] = []

    def fail(error: str) -> _Decoded:
        return _Decoded([MalformedCall(raw=raw, error=error)], [])

    def decode_error(detail: str) -> _Decoded:
        return fail((_e_json if closed else _e_truncated)(detail))

    text = inner.strip()
    if text.startswith("```"):
        newline = text.find("\n")
        text = text[newline + 1 :].rstrip() if newline >= 0 else ""
        if text.endswith("```"):
            text = text[:-3]
        text = text.strip()
        notes.append("removed a Markdown code fence around the call JSON")
    if not text:
        return fail(_e_empty()) if closed else decode_error("the block was empty")
    if text[0] not in "{[":
        return fail(_e_not_json_start(json.dumps(text[:20], ensure_ascii=False)))

    values: list[Any] = []
    pos = 0
    trailing_error: str | None = None
    while pos < len(text):
        if values and text[pos] != "{":
            notes.append(
                f"ignored text after the call JSON: {json.dumps(text[pos : pos + 40], ensure_ascii=False)}"
            )
            break
        try:
            value, pos, python = _decode_value(text, pos)
        except _DecodeError as exc:
            if not values:
                return decode_error(str(exc))
            trailing_error = str(exc)
            break
        if python:
            notes.append(
                "read a Python literal (single quotes, True/False/None) as JSON with ast.literal_eval"
            )
        values.append(value)
        while pos < len(text) and text[pos].isspace():
            pos += 1
    if len(values) > 1:
        notes.append(f"read {len(values)} JSON objects written in one {CALL_OPEN} block as separate calls")

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
    if not closed and any(isinstance(item, ToolCall) for item in items):
        notes.append(f"accepted the last {CALL_OPEN} although the output ended before {CALL_CLOSE}")
    if trailing_error is not None:
        # A second object was begun but is broken: the model meant another call, so tell it.
        items.append(MalformedCall(raw=raw, error=(_e_json if closed else _e_truncated)(trailing_error)))
    return _Decoded(items, notes)


def _decode_value(text: str, pos: int) -> tuple[Any, int, bool]:
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


def _call_from_object(obj: dict[str, Any], raw: str, notes: list[str]) -> ToolCall | MalformedCall:
    def fail(error: str) -> MalformedCall:
        return MalformedCall(raw=raw, error=error)

    if "name" not in obj and isinstance(obj.get("function"), dict):
        obj = obj["function"]
        notes.append('unwrapped an OpenAI-style {"function": {...}} call object')
    if "name" not in obj:
        return fail(_e_no_name())
    name = obj["name"]
    if not isinstance(name, str) or not name.strip():
        return fail(_e_bad_name(_short_json(name)))
    if name != name.strip():
        name = name.strip()
        notes.append(f"removed whitespace around the function name {_short_json(name)}")
    quoted = _short_json(name)

    if "arguments" in obj:
        arguments = obj["arguments"]
    elif "parameters" in obj:
        arguments = obj["parameters"]
        notes.append(f'read "parameters" as "arguments" in the call to {quoted}')
    else:
        extra = [key for key in obj if key not in _IGNORED_KEYS]
        if extra:
            return fail(_e_args_missing(quoted, ", ".join(_short_json(k) for k in extra)))
        notes.append(f'the call to {quoted} had no "arguments"; used {{}}')
        arguments = {}

    ignored = [key for key in obj if key not in _IGNORED_KEYS and key not in ("arguments", "parameters")]
    if ignored and ("arguments" in obj or "parameters" in obj):
        notes.append(f"ignored the keys {', '.join(_short_json(k) for k in ignored)} in the call to {quoted}")
    if arguments is None:
        notes.append(f'the call to {quoted} had "arguments": null; used {{}}')
        arguments = {}
    elif isinstance(arguments, str):
        if not arguments.strip():
            notes.append(f'the call to {quoted} had empty "arguments"; used {{}}')
            arguments = {}
        else:
            try:
                decoded = _JSON.decode(arguments)
            except json.JSONDecodeError as exc:
                return fail(_e_args_string(quoted, f"{exc.msg} at column {exc.colno}"))
            except (RecursionError, ValueError):
                return fail(_e_args_string(quoted, "it could not be decoded"))
            if not isinstance(decoded, dict):
                return fail(_e_args_string(quoted, f"it held {_kind(decoded)}"))
            notes.append(f'decoded the "arguments" of {quoted}, which were given as a JSON string')
            arguments = decoded
    if not isinstance(arguments, dict):
        return fail(_e_args_type(quoted, _kind(arguments)))
    return ToolCall(name=name, arguments=arguments)


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
