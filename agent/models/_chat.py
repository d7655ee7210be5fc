"""Chat mode of `OpenAICompatModel`: the history as chat messages out, streamed deltas back as QwQ text.

Hosted APIs offer only `/v1/chat/completions`, which split the model's output into reasoning
(`reasoning_content` or `reasoning`), content and `tool_calls` deltas. `ChatDecoder` writes them back in
QwQ-32B's own output format (`reasoning</think>\\n\\n` + content + `<tool_call>` blocks) so that one parser
serves every backend. Going out, notes the framework wrote become user messages: a tool message must answer
a call id, and strict servers reject one that does not.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.models._turns import CALL_OPEN, GRAMMAR_CALL_CLOSE, THINK_CLOSE
from agent.models.base import ModelChunk, TokenCounts

__all__ = ["ChatDecoder", "TurnCounts", "chat_messages", "chat_stream", "text_stream", "tool_dict"]


@dataclass
class TurnCounts(TokenCounts):
    """Token counts and requests of one turn, summed over its requests."""

    requests: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    def last_chunk(self, finish: str | None) -> ModelChunk:
        """The turn's closing chunk: its usage, why it ended, and how many requests it took."""
        return ModelChunk(usage=self.usage(), finish_reason=finish, extra={"requests": self.requests})

    def add_usage(self, event: dict[str, Any], counted: int) -> bool:
        """Take a server's `usage` (replacing the pieces counted so far); False when the event has none."""
        usage = event.get("usage")
        if not isinstance(usage, dict):
            return False
        if not self.prompt_tokens:
            self.prompt_tokens = _int(usage.get("prompt_tokens"))
        details = usage.get("prompt_tokens_details")
        if isinstance(details, dict) and not self.cached_tokens:
            self.cached_tokens = _int(details.get("cached_tokens"))
        self.completion_tokens += _int(usage.get("completion_tokens")) - counted
        return True


def _int(value: Any) -> int:
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def tool_dict(tool: Any) -> dict[str, Any]:
    if hasattr(tool, "to_openai"):
        data: dict[str, Any] = tool.to_openai()
        return data
    return dict(tool)


def chat_messages(messages: Sequence[Any]) -> list[dict[str, Any]]:
    """The history as OpenAI chat messages: calls with ids, each result answering its call, notes as user."""
    out: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        data = message.model_dump() if hasattr(message, "model_dump") else dict(message)
        role = data.get("role")
        if role == "assistant":
            item: dict[str, Any] = {"role": "assistant", "content": data.get("content") or ""}
            calls = data.get("tool_calls") or []
            if calls:
                item["tool_calls"] = [
                    {
                        "id": c.get("id") or f"call_{i}_{j}",
                        "type": "function",
                        "function": {
                            "name": c["name"],
                            "arguments": json.dumps(c.get("arguments") or {}, ensure_ascii=False),
                        },
                    }
                    for j, c in enumerate(calls)
                ]
            out.append(item)
        elif role == "tool":
            item = {"role": "tool", "content": data.get("content", "")}
            item["tool_call_id"] = data.get("tool_call_id") or _unanswered_call(out)
            if data.get("name"):
                item["name"] = data["name"]
            out.append(item)
        elif role == "note":
            out.append({"role": "user", "content": data.get("content", "")})
        else:
            out.append({"role": role, "content": data.get("content", "")})
    return out


def _unanswered_call(out: list[dict[str, Any]]) -> str:
    # Results follow the order of the calls: pair this result with the first call not yet answered.
    answered: set[object] = set()
    pending: list[str] = []
    for m in out:
        if m["role"] == "assistant":
            pending = [c["id"] for c in m.get("tool_calls", [])]
            answered = set()
        elif m["role"] == "tool":
            answered.add(m.get("tool_call_id"))
    return next((call_id for call_id in pending if call_id not in answered), f"call_{len(out)}")


PiecesOf = Callable[[dict[str, Any], "TurnCounts"], list[tuple[str, str]]]


async def _choice_stream(
    events: AsyncIterator[dict[str, Any]], counts: TurnCounts, pieces_of: PiecesOf
) -> AsyncIterator[tuple[str, str]]:
    """The pieces of every choice of every event, then ("finish", reason) where a choice ends.

    Both stream kinds count each piece as one token until the server reports usage (`TurnCounts.add_usage`
    then replaces the estimate); only what a choice holds differs, and `pieces_of` reads it.
    """
    counted = 0
    async for event in events:
        for choice in event.get("choices") or []:
            if not isinstance(choice, dict):
                continue
            for piece in pieces_of(choice, counts):
                counted += 1
                counts.completion_tokens += 1
                yield piece
            if choice.get("finish_reason"):
                yield "finish", str(choice["finish_reason"])
        if counts.add_usage(event, counted):
            counted = 0


def _text_pieces(choice: dict[str, Any], counts: TurnCounts) -> list[tuple[str, str]]:
    if choice.get("stop_reason") is not None:  # llama.cpp and vLLM name the stop string that matched
        counts.extra["stop_reason"] = choice["stop_reason"]
    text = choice.get("text")
    return [("text", str(text))] if text else []


def _delta_pieces(choice: dict[str, Any], counts: TurnCounts) -> list[tuple[str, str]]:
    delta = choice.get("delta") or {}
    if not isinstance(delta, dict):
        return []
    pieces: list[tuple[str, str]] = []
    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
    if reasoning:
        pieces.append(("reasoning", str(reasoning)))
    if delta.get("content"):
        pieces.append(("content", str(delta["content"])))
    pieces.extend(("tool_delta", json.dumps(call)) for call in delta.get("tool_calls") or [])
    return pieces


def text_stream(events: AsyncIterator[dict[str, Any]], counts: TurnCounts) -> AsyncIterator[tuple[str, str]]:
    """("text", piece) / ("finish", reason) of a completions stream; counts pieces into `counts`."""
    return _choice_stream(events, counts, _text_pieces)


def chat_stream(events: AsyncIterator[dict[str, Any]], counts: TurnCounts) -> AsyncIterator[tuple[str, str]]:
    """("reasoning" | "content" | "tool_delta" (JSON) | "finish", value) of a chat stream."""
    return _choice_stream(events, counts, _delta_pieces)


class ChatDecoder:
    """Chat deltas in, QwQ-format text out: reasoning, `</think>`, content, `<tool_call>` blocks."""

    def __init__(self, *, reasoning_inline: bool) -> None:
        self.reasoning_inline = reasoning_inline
        self.text = ""
        self.closed = False
        self.started_inline = False
        self.calls: dict[int, dict[str, str]] = {}
        self.finish = "stop"

    def feed(self, kind: str, value: str) -> str:
        """The QwQ text for one delta (may be empty)."""
        if kind == "reasoning":
            out = value if not self.reasoning_inline and not self.closed else ""
        elif kind == "content":
            out = self._content(value)
        elif kind == "tool_delta":
            out = self._tool_delta(value)
        else:
            self.finish = "length" if value == "length" else "stop"
            out = ""
        self.text += out
        return out

    def tail(self) -> str:
        """What the end of the stream settles: calls still open, the reasoning's close."""
        out = ""
        if self.calls and not self.closed and not self.reasoning_inline:
            out += self._close_reasoning()
        for index in sorted(self.calls):
            out += self._serialise(index)
        if not self.closed and not self.reasoning_inline and self.finish != "length":
            out += self._close_reasoning()
        self.text += out
        return out

    def _content(self, value: str) -> str:
        if not self.reasoning_inline:
            return self._close_reasoning() + value
        if not self.started_inline:
            value = value.lstrip().removeprefix("<think>").lstrip("\n")
            self.started_inline = bool(value)
        if THINK_CLOSE in self.text + value:
            self.closed = True
        return value

    def _tool_delta(self, value: str) -> str:
        delta = json.loads(value)
        index = _int(delta.get("index", 0)) if isinstance(delta, dict) else 0
        out = "".join(self._serialise(done) for done in [i for i in self.calls if i < index])
        entry = self.calls.setdefault(index, {"name": "", "arguments": ""})
        fn = delta.get("function") if isinstance(delta, dict) else None
        if isinstance(fn, dict):
            entry["name"] += str(fn.get("name") or "")
            entry["arguments"] += str(fn.get("arguments") or "")
        if not self.closed and not self.reasoning_inline:
            out = self._close_reasoning() + out
        return out

    def _close_reasoning(self) -> str:
        if self.closed:
            return ""
        self.closed = True
        return ("" if self.text.endswith("\n") or not self.text else "\n") + THINK_CLOSE + "\n\n"

    def _serialise(self, index: int) -> str:
        call = self.calls.pop(index)
        try:
            args: Any = json.loads(call["arguments"]) if call["arguments"].strip() else {}
            args_text = json.dumps(args, ensure_ascii=False, separators=(", ", ": "))
        except (json.JSONDecodeError, RecursionError):
            args_text = call["arguments"]  # left as sent: the parser reports it to the model
        name = json.dumps(call["name"], ensure_ascii=False)
        return f'\n{CALL_OPEN}\n{{"name": {name}, "arguments": {args_text}}}{GRAMMAR_CALL_CLOSE}'
