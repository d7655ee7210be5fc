"""`ScriptedModel`: replays given completion texts, for the loop's tests and for users' own tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import Any

from agent.models.base import ModelChunk, ModelRequest, Usage
from agent.models.errors import ModelError

__all__ = ["ScriptExhaustedError", "ScriptedModel", "completion_text", "tool_call_text"]


def tool_call_text(name: str, arguments: Mapping[str, Any] | None = None) -> str:
    """One `<tool_call>` block as QwQ-32B writes it, for scripts: `tool_call_text("add", {"a": 1})`."""
    body = json.dumps({"name": name, "arguments": dict(arguments or {})}, ensure_ascii=False)
    return f"<tool_call>\n{body}\n</tool_call>"


def completion_text(thinking: str, *calls: str, content: str = "") -> str:
    """A whole turn as the model writes it after the prompt's `<think>\\n`: reasoning, `</think>`, then the
    visible text and the call blocks (from `tool_call_text`), one per line."""
    return thinking + "\n</think>\n\n" + content + "\n".join(calls)


class ScriptExhaustedError(ModelError, RuntimeError):
    """The loop asked for more completions than the script holds (a `ModelError`: the run stops on it)."""


class ScriptedModel:
    """Yields `outputs[i]` for the i-th request, in chunks of `chunk_size` characters.

    Every request it received is kept in `requests`, so a test can check what the loop sent. Usage counts
    characters, not tokens: enough to exercise token budgets deterministically.

    `opens_thinking=False` plays a model whose turn starts with its visible answer (Qwen2.5, say): outputs
    are then read without a closing `</think>`, and the loop picks the system prompt for such models. None
    (the default) or True: QwQ-32B's turns, which start inside the reasoning.
    """

    def __init__(
        self, outputs: Iterable[str], *, chunk_size: int = 7, opens_thinking: bool | None = None
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.outputs: list[str] = list(outputs)
        self.chunk_size = chunk_size
        self.opens_thinking = opens_thinking
        self.requests: list[ModelRequest] = []

    @property
    def calls(self) -> int:
        return len(self.requests)

    def remaining(self) -> Sequence[str]:
        return self.outputs[len(self.requests) :]

    async def turn_opens_thinking(self) -> bool | None:
        return self.opens_thinking

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        index = len(self.requests)
        if index >= len(self.outputs):
            raise ScriptExhaustedError(
                f"ScriptedModel has {len(self.outputs)} outputs and was asked for output {index + 1}; "
                "add outputs to the script or lower the step budget"
            )
        self.requests.append(request)
        text = self.outputs[index]
        prompt_chars = sum(len(str(getattr(m, "content", ""))) for m in request.messages)
        if self.opens_thinking is not None:
            yield ModelChunk(opens_thinking=self.opens_thinking)
        for start in range(0, len(text), self.chunk_size):
            yield ModelChunk(text=text[start : start + self.chunk_size])
        yield ModelChunk(
            usage=Usage(prompt_tokens=prompt_chars, completion_tokens=len(text)),
            finish_reason="stop",
        )
