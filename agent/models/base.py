"""The `Model` protocol: the single seam between the loop and any backend.

A backend receives the typed history and the tools and streams back raw completion text in QwQ-32B's output
format (reasoning, `</think>`, visible text, `<tool_call>` blocks). Backends that talk to chat APIs which
split reasoning and tool calls out re-serialise them into that format, so one parser serves every backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from agent.models._turns import ToolChoice

if TYPE_CHECKING:
    from agent.messages import Message
    from tools.base import Tool

__all__ = [
    "CountsTokens",
    "KeepThinking",
    "Model",
    "ModelChunk",
    "ModelRequest",
    "TokenCounts",
    "ToolChoice",
    "Usage",
    "turn_opens_thinking",
]

KeepThinking = Literal["none", "current_task"]


@dataclass(frozen=True)
class Usage:
    """Token counts of one model call. `cached_tokens`: prompt tokens served from the KV cache."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class TokenCounts:
    """The token counts of a call while it runs (a backend adds to them); `usage()` is what it reports."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def usage(self) -> Usage:
        return Usage(self.prompt_tokens, self.completion_tokens, self.cached_tokens)


@dataclass(frozen=True)
class ModelRequest:
    messages: Sequence[Message]
    tools: Sequence[Tool[..., Any]] = ()
    tool_choice: str | ToolChoice = "auto"  # "auto" | "required" | "none" | a tool's name, or a ToolChoice
    keep_thinking: KeepThinking = "none"
    max_tokens: int | None = None
    thinking_budget: int | None = None


@dataclass(frozen=True)
class ModelChunk:
    """A piece of completion text; the last chunk of a call carries `usage` and `finish_reason`.

    `opens_thinking` is set by backends that render the prompt themselves, on a chunk before any text:
    whether the model's turn starts inside its reasoning (QwQ's prompt ends in `<think>`; most other
    models' prompts do not). None means the QwQ default, inside reasoning.
    """

    text: str = ""
    usage: Usage | None = None
    # "stop" (end of turn), "length" (token cap), "tool_response" (cut at an invented observation)
    finish_reason: str | None = None
    extra: dict[str, object] = field(default_factory=dict)
    opens_thinking: bool | None = None


@runtime_checkable
class Model(Protocol):
    """Anything that streams QwQ-format completion text for a request."""

    def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        """Start one completion; iterate to receive its text. Closing the iterator cancels generation."""
        ...


@runtime_checkable
class CountsTokens(Protocol):
    """A backend that knows its context size and can count a request's prompt exactly (optional).

    `agent.context` uses it to keep long runs inside the context; backends without it get an estimate.
    Either method returns None when it cannot tell (a server without `/tokenize`, a chat API).
    """

    async def context_window(self) -> int | None:
        """Tokens the context holds (prompt and reply together)."""
        ...

    async def count_prompt_tokens(self, request: ModelRequest) -> int | None:
        """Tokens of the prompt this backend would send for `request`."""
        ...


async def turn_opens_thinking(model: Model) -> bool | None:
    """Whether `model`'s turns start inside its reasoning, before any turn is generated; None when unknown.

    Backends that render the prompt themselves know (QwQ-32B's turn opens `<think>`, Qwen2.5's does not) and
    say so through an optional coroutine method `turn_opens_thinking()`; it is not part of `Model`, so any
    object with `stream` stays a model. The loop uses the answer to pick a system prompt that suits the model.
    """
    probe = getattr(model, "turn_opens_thinking", None)
    if probe is None:
        return None
    answer = await probe()
    return None if answer is None else bool(answer)
