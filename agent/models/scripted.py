"""Test models: `ScriptedModel` replays given completion texts; `FunctionModel` computes each from the request.

For the loop's tests and for users' own tests: both stream their text in chunks, report usage, and keep every
request they received, as a real backend would see them.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from agent.models.base import CountsTokens, Model, ModelChunk, ModelRequest, Usage
from agent.models.errors import ModelError

__all__ = ["FunctionModel", "ScriptExhaustedError", "ScriptedModel", "completion_text", "tool_call_text"]


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

    `n_ctx` gives it a context of that many (estimated) tokens, for tests of `agent.context`. `prefill` is a
    real backend each request is first sent to with `max_tokens=1` (its text dropped): the prompt is really
    tokenized and evaluated there — its context limit, KV cache, token counts and usage apply — while the
    script decides what the model says. Token counting and the context size are then the backend's.

    `opens_thinking=False` plays a model whose turn starts with its visible answer (Qwen2.5, say): outputs
    are then read without a closing `</think>`, and the loop picks the system prompt for such models. None
    (the default) or True: QwQ-32B's turns, which start inside the reasoning.

    `finish_reasons` gives the i-th output's finish reason ("stop" for outputs past its end): "length"
    plays a turn the backend cut at its token cap.
    """

    def __init__(
        self,
        outputs: Iterable[str],
        *,
        chunk_size: int = 7,
        n_ctx: int | None = None,
        prefill: Model | None = None,
        opens_thinking: bool | None = None,
        finish_reasons: Sequence[str] = (),
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        self.outputs: list[str] = list(outputs)
        self.chunk_size = chunk_size
        self.n_ctx = n_ctx
        self.prefill = prefill
        self.opens_thinking = opens_thinking
        self.finish_reasons = list(finish_reasons)
        self.requests: list[ModelRequest] = []

    @property
    def calls(self) -> int:
        return len(self.requests)

    def remaining(self) -> Sequence[str]:
        return self.outputs[len(self.requests) :]

    async def turn_opens_thinking(self) -> bool | None:
        return self.opens_thinking

    async def _reply(self, request: ModelRequest, index: int) -> str:
        """The text of the `index`-th reply (0-based): the script's."""
        if index >= len(self.outputs):
            raise ScriptExhaustedError(
                f"ScriptedModel has {len(self.outputs)} outputs and was asked for output {index + 1}; "
                "add outputs to the script or lower the step budget"
            )
        return self.outputs[index]

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        index = len(self.requests)
        text = await self._reply(request, index)
        self.requests.append(request)
        usage = Usage(prompt_tokens=sum(len(str(getattr(m, "content", ""))) for m in request.messages))
        extra: dict[str, object] = {}
        if self.prefill is not None:
            async for chunk in self.prefill.stream(replace(request, max_tokens=1, thinking_budget=None)):
                if chunk.usage is not None:
                    usage, extra = chunk.usage, dict(chunk.extra)
        if self.opens_thinking is not None:
            yield ModelChunk(opens_thinking=self.opens_thinking)
        for start in range(0, len(text), self.chunk_size):
            yield ModelChunk(text=text[start : start + self.chunk_size])
        finish = self.finish_reasons[index] if index < len(self.finish_reasons) else "stop"
        yield ModelChunk(usage=replace(usage, completion_tokens=len(text)), finish_reason=finish, extra=extra)

    # -- CountsTokens: the prefill backend's, or an estimate within `n_ctx` --------------------------------
    async def context_window(self) -> int | None:
        if self.n_ctx is None and isinstance(self.prefill, CountsTokens):
            return await self.prefill.context_window()
        return self.n_ctx

    async def count_prompt_tokens(self, request: ModelRequest) -> int | None:
        if isinstance(self.prefill, CountsTokens):
            return await self.prefill.count_prompt_tokens(request)
        if self.n_ctx is None:
            return None
        import prompts
        from agent.context import estimate_tokens

        text = prompts.render(request.messages, request.tools, keep_thinking=request.keep_thinking)
        return estimate_tokens(text)


Reply = str | Awaitable[str]


class FunctionModel(ScriptedModel):
    """A model whose replies are computed from the requests: `fn(request)` returns the completion text (or an
    awaitable of it), written as the model writes it (`completion_text`, `tool_call_text`).

    For tests that answer what the loop sends rather than follow a fixed script: a reply that depends on the
    tool results in `request.messages`, on the tools offered, on `tool_choice`. Everything else is
    `ScriptedModel`'s: chunks, usage, `requests`, `n_ctx`, `prefill`, `opens_thinking`; there is no script to
    run out of, so it answers as long as the loop asks (the run's budgets end it).
    """

    def __init__(
        self,
        fn: Callable[[ModelRequest], Reply],
        *,
        chunk_size: int = 7,
        n_ctx: int | None = None,
        prefill: Model | None = None,
        opens_thinking: bool | None = None,
    ) -> None:
        super().__init__(
            (), chunk_size=chunk_size, n_ctx=n_ctx, prefill=prefill, opens_thinking=opens_thinking
        )
        self.fn = fn

    async def _reply(self, request: ModelRequest, index: int) -> str:
        reply = self.fn(request)
        text = await reply if inspect.isawaitable(reply) else reply
        if not isinstance(text, str):
            raise TypeError(
                f"FunctionModel's function must return the completion text; got {type(text).__name__}"
            )
        return text
