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

* **Lone surrogates** (a server's `"\\ud800"` escape, bytes decoded with `surrogateescape`) become U+FFFD as
  the text is read, so every field, event and `raw` encodes as UTF-8; a high surrogate that ends a delta waits
  for the next one, so a pair split across two deltas still becomes its character.

Nothing here raises on any text: a parser that fails takes the whole agent loop down with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from agent.events import ContentDelta, MalformedCallEvent, ParseEvent, ThinkingDelta, ToolCallParsed
from agent.models._turns import CALL_CLOSE, CALL_OPEN, END_TOKENS, RESPONSE_OPEN, THINK_CLOSE, THINK_OPEN
from agent.parsing._decode import Decoded, MalformedCall, clean_text, decode_block, e_nested, e_stray_close
from agent.parsing._forms import LenientCalls
from tools.types import ToolCall

__all__ = ["Completion", "StreamParser", "parse_completion"]

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
    text: str,
    *,
    prompt_opened_think: bool = True,
    promote_trailing_drafts: bool = True,
    tool_names: Sequence[str] | None = None,
) -> Completion:
    """Parse a whole completion; the same result `StreamParser` gives for any chunking of `text`."""
    parser = StreamParser(
        prompt_opened_think=prompt_opened_think,
        promote_trailing_drafts=promote_trailing_drafts,
        tool_names=tool_names,
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

    def __init__(
        self,
        *,
        prompt_opened_think: bool = True,
        promote_trailing_drafts: bool = True,
        tool_names: Sequence[str] | None = None,
    ) -> None:
        self._promote = promote_trailing_drafts
        # Only with the offered tools known can the other call forms be told from prose (see `_forms`).
        self._lenient = (
            LenientCalls(tool_names, self._content_text, self._lenient_calls)
            if tool_names is not None
            else None
        )
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
        self._trailing: list[Decoded] = []
        self._seen_think_close = False
        self._ended_in_thinking = False
        self._cut_at_response = False
        self._end_tag = ""
        self._text_after_end = False
        self._finished = False
        # A high surrogate that ends a delta may pair with a low one that starts the next (a JSON escape pair
        # split across two server events): held back until the next delta says which.
        self._high = ""
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
        if self._high:
            delta, self._high = self._high + delta, ""
        if delta and "\ud800" <= delta[-1] <= "\udbff":
            delta, self._high = delta[:-1], delta[-1]
        return self._read(clean_text(delta))

    def _read(self, delta: str) -> list[ParseEvent]:
        """`feed` for text already cleaned of lone surrogates."""
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
        held = self._read(clean_text(self._high)) if self._high else []
        self._high = ""
        self._finished = True
        self._events = held
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
            if self._lenient is not None:
                self._lenient.feed(text)
            else:
                self._content_text(text)
        else:
            self._block.append(text)
            if self._parent == _THINK:
                self._delta(_THINK, self._thinking.push(text))

    def _content_text(self, text: str) -> None:
        self._delta(_CONTENT, self._content.push(text))

    def _lenient_calls(self, calls: list[ToolCall], note: str) -> None:
        for call in calls:
            self._tool_calls.append(call)
            self._event(ToolCallParsed(call=call))
        self._repairs.append(note)

    def _tag(self, tag: str, at: int) -> None:
        """A tag of the current mode (see `_TAGS`); whatever the mode does not handle ends the output."""
        if self._mode == _THINK:
            handled = self._tag_in_thinking(tag)
        elif self._mode == _CONTENT:
            if self._lenient is not None:
                self._lenient.interrupt()
            handled = self._tag_in_content(tag)
        else:
            handled = self._tag_in_block(tag)
        if not handled:
            self._end(tag, at)

    def _tag_in_thinking(self, tag: str) -> bool:
        if tag == THINK_CLOSE:
            self._close_thinking()
        elif tag == CALL_OPEN:
            self._open_block(_THINK)
        elif tag == THINK_OPEN:
            if self._thinking.started:
                self._text(tag)
            # else: the model repeated the `<think>` the prompt already wrote
        else:
            return False
        return True

    def _tag_in_content(self, tag: str) -> bool:
        if tag == CALL_OPEN:
            self._open_block(_CONTENT)
        elif tag == CALL_CLOSE:
            self._add_malformed(MalformedCall(raw=tag, error=e_stray_close()))
        elif tag == THINK_OPEN:
            if self._seen_think_close:
                self._repairs.append("the model reopened reasoning with <think> after </think>")
            self._mode = _THINK
        elif tag == THINK_CLOSE:
            self._repairs.append("ignored a </think> that closed no reasoning")
        else:
            return False
        return True

    def _tag_in_block(self, tag: str) -> bool:
        if tag == CALL_CLOSE:
            self._close_block(closed=True)
        elif tag == CALL_OPEN:
            parent = self._parent
            nested = MalformedCall(raw=CALL_OPEN + "".join(self._block), error=e_nested())
            self._settle(Decoded([nested], []), parent)
            self._open_block(parent)
        elif tag == THINK_CLOSE:
            self._close_block(closed=False)
            self._close_thinking()
        else:
            return False
        return True

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
        self._settle(decode_block(inner, raw, closed=closed), parent)

    def _settle(self, decoded: Decoded, parent: int) -> None:
        """Record a finished block: a real call goes out at once, a draft waits in case it is promoted."""
        self._mode = parent
        if parent == _THINK:
            self._drafts.extend(item for item in decoded.items if isinstance(item, ToolCall))
            self._trailing.append(decoded)
            return
        self._take(decoded)

    def _take(self, decoded: Decoded) -> None:
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
        if self._lenient is not None:
            self._lenient.finish()
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
