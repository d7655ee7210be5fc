"""Completions mode of `OpenAICompatModel`: the prompt rendered here, raw text from `/v1/completions`.

The framework renders the prompt itself (QwQ-32B's exact format, or the model's own template) and streams
raw text, so the server's chat template and tool parser play no part. A turn may take several requests, each
continuing the text so far (prefix-caching servers serve the repeated prefix from their KV cache):

* **Constrained calls.** The free stream is watched; when the answer opens a call (`<tool_call>`, or another
  form real models write, see `_turns.detect_call_opening`), the connection is closed and a continuation
  request with the server's grammar or JSON-schema parameter writes the call; then free text resumes.
* **tool_choice.** "required" or a name: the stream is closed where the reasoning closes, and the call is
  opened here. "none" sends no constraint and the loop refuses any call.
* **Thinking budget.** The first request's `max_tokens` is capped at the budget; reasoning still open then is
  closed with the closing sentence, and the next request goes on from there.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agent.models import _turns
from agent.models._chat import TurnCounts, text_stream
from agent.models._http import Transport
from agent.models._turns import CallOpening, ToolChoice
from agent.models.base import ModelChunk
from agent.models.grammar import arguments_gbnf, call_rest_gbnf, tool_call_gbnf, tool_call_schema

__all__ = ["CompletionsSettings", "CompletionsTurn", "Constrain"]

# How a server takes a constraint: llama.cpp / llama-cpp-python `grammar` (GBNF), llama.cpp `json_schema`,
# vLLM `guided_json`, or vLLM >= 0.10 `structured_outputs`.
Constrain = Literal["grammar", "json_schema", "guided_json", "structured_outputs"]
_STOPS = [_turns.RESPONSE_OPEN, "<|im_end|>", "<|endoftext|>"]
_THINK: Literal["think"] = "think"


@dataclass(frozen=True)
class CompletionsSettings:
    """What a completions turn needs of the model's configuration."""

    sampling: dict[str, Any]  # model, temperature, top_p, ..., seed
    extra_body: dict[str, Any]
    max_tokens: int
    thinking_budget: int | None
    constrain: Constrain | None
    max_string_length: int | None


class CompletionsTurn:
    """One model turn in completions mode, over one or more requests."""

    def __init__(
        self,
        transport: Transport,
        prompt: str,
        opened_think: bool,
        tools: Sequence[Any],
        choice: ToolChoice,
        settings: CompletionsSettings,
    ) -> None:
        self.transport = transport
        self.prompt = prompt
        self.opened_think = opened_think
        self.tools = list(tools)
        self.choice = choice.without_tools(bool(tools))
        self.settings = settings
        self.counts = TurnCounts()
        self.text = ""
        self.answer_start: int | None = None if opened_think else 0  # where the answer begins in `text`
        self.tool_names = [choice.only] if choice.only else [getattr(t, "name", "") for t in self.tools]
        self.constrained = settings.constrain is not None and bool(self.tools) and self.choice.allows_calls
        self._cut: CallOpening | Literal["think"] | None = None
        self._finish: str | None = None

    async def run(self) -> AsyncGenerator[ModelChunk, None]:
        yield ModelChunk(opens_thinking=self.opened_think)
        if self.answer_start == 0 and self.choice.forced:
            async for chunk in self._forced_call():
                yield chunk
        finish = "length"
        while self._left() > 0:
            budget_cap = self._budget_cap()
            if budget_cap is not None and budget_cap <= 0:
                async for chunk in self._close_reasoning():
                    yield chunk
                continue
            segment = self._segment(self._left() if budget_cap is None else budget_cap)
            async with contextlib.aclosing(segment) as pieces:
                async for piece in pieces:
                    yield ModelChunk(text=piece)
            if self._cut == _THINK:
                async for chunk in self._forced_call():
                    yield chunk
                continue
            if isinstance(self._cut, CallOpening):
                yield ModelChunk(text=await self._constrained_call(self._cut))
                continue
            if self._finish == "length" and budget_cap is not None and self._left() > 0:
                continue  # the budget ran out inside the reasoning: the next round closes it
            finish = "length" if self._finish == "length" else "stop"
            if self._finish == "stop" and self.counts.extra.get("stop_reason") == _turns.RESPONSE_OPEN:
                # Servers drop the matched stop string; vLLM names it in `stop_reason`, others do not say.
                finish = "tool_response"
            break
        yield self.counts.last_chunk(finish)

    # -- budgets ---------------------------------------------------------------------------------------------
    def _left(self) -> int:
        return self.settings.max_tokens - self.counts.completion_tokens

    def _budget_cap(self) -> int | None:
        """Tokens the reasoning may still take, while it is open and has a budget."""
        budget = self.settings.thinking_budget
        if self.answer_start is not None or budget is None:
            return None
        return min(self._left(), budget - self.counts.completion_tokens)

    # -- one request -----------------------------------------------------------------------------------------
    async def _segment(self, cap: int) -> AsyncGenerator[str, None]:
        """Stream one request's text; stop early where a call must be constrained or opened by us."""
        body = {
            **self.settings.sampling,
            "prompt": self.prompt + self.text,
            "max_tokens": cap,
            "stream": True,
            "stop": _STOPS,
            **self.settings.extra_body,
        }
        self._cut, self._finish = None, None
        self.counts.requests += 1
        events = self.transport.events("/completions", body)
        try:
            async for kind, value in text_stream(events, self.counts):
                if kind == "finish":
                    self._finish = value
                    continue
                piece = self._watch(value)
                if piece:
                    yield piece
                if self._cut is not None:
                    return
        finally:
            await events.aclose()

    def _watch(self, value: str) -> str:
        """Take a streamed piece into the turn; returns the part to emit (cut short at a decision point)."""
        start = len(self.text)
        full = self.text + value
        stop_at = -1
        if self.answer_start is None:
            at = full.find(_turns.THINK_CLOSE, max(start - len(_turns.THINK_CLOSE), 0))
            if at >= 0:
                self.answer_start = at + len(_turns.THINK_CLOSE)
                if self.choice.forced:
                    stop_at, self._cut = self.answer_start, _THINK
        if stop_at < 0 and self.answer_start is not None and self.constrained:
            stop_at = self._watch_for_call(full, start)
        if stop_at >= 0:
            full = full[:stop_at]
        self.text = full
        return full[start:]

    def _watch_for_call(self, full: str, start: int) -> int:
        """Where in `full` a call was opened that the server can constrain (-1: none)."""
        answer_start = self.answer_start or 0
        answer = full[answer_start:]
        # Check each new character: the opening must be cut right where it completes.
        for end in range(max(start - answer_start, 0) + 1, len(answer) + 1):
            opening = _turns.detect_call_opening(answer, 1, self.tool_names, end=end)
            if opening is not None and self._can_constrain(opening):
                self._cut = opening
                return answer_start + end
        return -1

    def _can_constrain(self, opening: CallOpening) -> bool:
        # A JSON-schema constraint can only write a whole call object, after a `<tool_call>` opener.
        return self.settings.constrain == "grammar" or (
            opening.partial_name is None and opening.arguments_of is None
        )

    # -- text written for the model --------------------------------------------------------------------------
    async def _close_reasoning(self) -> AsyncIterator[ModelChunk]:
        closing = _turns.closing_text(self.text)
        self.text += closing
        self.answer_start = len(self.text)
        yield ModelChunk(text=closing)
        if self.choice.forced:
            async for chunk in self._forced_call():
                yield chunk

    async def _forced_call(self) -> AsyncIterator[ModelChunk]:
        opening = _turns.open_call_text(self.text)
        self.text += opening
        yield ModelChunk(text=opening)
        if self.constrained:
            yield ModelChunk(
                text=await self._constrained_call(CallOpening(_turns.GRAMMAR_CALL_CLOSE, lead="\n"))
            )

    async def _constrained_call(self, opening: CallOpening) -> str:
        fields, lead = self._constraint(opening)
        body = {
            **self.settings.sampling,
            "prompt": self.prompt + self.text + lead,
            "max_tokens": max(1, self._left()),
            "stream": True,
            **fields,
            **self.settings.extra_body,
        }
        self.counts.requests += 1
        text = ""
        events = self.transport.events("/completions", body)
        try:
            async for kind, value in text_stream(events, self.counts):
                if kind == "text":
                    text += value
        finally:
            await events.aclose()
        if lead:  # a schema constraint writes only the JSON; the frame is ours
            text = lead + text.strip() + opening.closer
        self.text += text
        return text

    def _constraint(self, opening: CallOpening) -> tuple[dict[str, Any], str]:
        """Body fields constraining one call, and the text the prompt must end with before it."""
        only, cap = self.choice.only, self.settings.max_string_length
        if self.settings.constrain == "grammar":
            if opening.arguments_of is not None:
                tool = next(t for t in self.tools if getattr(t, "name", None) == opening.arguments_of)
                return {"grammar": arguments_gbnf(tool, max_string_length=cap, suffix=opening.closer)}, ""
            if opening.partial_name is not None:
                grammar = call_rest_gbnf(
                    self.tools, opening.partial_name, only=only, max_string_length=cap, suffix=opening.closer
                )
                return {"grammar": grammar}, ""
            grammar = tool_call_gbnf(
                self.tools, only=only, max_string_length=cap, prefix=opening.lead, suffix=opening.closer
            )
            return {"grammar": grammar}, ""
        chosen = [t for t in self.tools if only is None or getattr(t, "name", None) == only]
        schema = tool_call_schema(chosen)
        if self.settings.constrain == "json_schema":
            return {"json_schema": schema}, "\n"
        if self.settings.constrain == "guided_json":
            return {"guided_json": schema}, "\n"
        return {"structured_outputs": {"json": schema}}, "\n"
