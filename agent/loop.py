"""The reasoning loop: render, stream, parse, validate, run the calls, observe, repeat.

`Agent._steps` is the whole loop and is meant to be read in one sitting; everything else here is
bookkeeping around it (budgets, stuck detection, the transcript, resume).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import prompts
from agent.events import (
    Event,
    FinalAnswer,
    StepEnd,
    ToolCallFinished,
    ToolCallStarted,
)
from agent.messages import AssistantMessage, Message, SystemMessage, ToolMessage, UserMessage
from agent.models.base import KeepThinking, Model, ModelRequest, ToolChoice
from agent.parsing import Completion, StreamParser
from agent.transcript import TranscriptWriter, new_run_id, read_transcript
from tools.base import Tool, tool
from tools.toolbox import Toolbox
from tools.types import ToolCall, ToolResult

__all__ = ["Agent", "RunResult", "RunUsage", "StopReason"]


class StopReason(StrEnum):
    """Why a run ended. A run ends with an answer only on `FINAL_ANSWER`."""

    FINAL_ANSWER = "final_answer"
    MAX_STEPS = "max_steps"
    MAX_TOOL_CALLS = "max_tool_calls"
    TIMEOUT = "timeout"
    TOKEN_BUDGET = "token_budget"
    MALFORMED = "malformed"
    STUCK = "stuck"


@dataclass
class RunUsage:
    """Tokens summed over the steps of a run, as the backend reported them."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
        }


@dataclass
class RunResult:
    """What a run produced and why it stopped; `messages` is the full history, transcript included."""

    answer: str
    messages: list[Message]
    steps: int
    stop_reason: StopReason
    usage: RunUsage
    tool_calls: int = 0
    transcript_path: Path | None = None
    detail: str = ""


@dataclass
class _RunState:
    """Mutable bookkeeping of one run; the history itself lives in `messages`."""

    messages: list[Message]
    run_id: str
    started: float = field(default_factory=time.monotonic)
    steps: int = 0
    tool_calls: int = 0
    usage: RunUsage = field(default_factory=RunUsage)
    malformed_streak: int = 0
    last_calls_key: str | None = None
    repeat_count: int = 0
    answer: str = ""
    stop_reason: StopReason | None = None
    detail: str = ""


ToolLike = Tool[..., Any] | Callable[..., Any]


def _as_toolbox(tools: Toolbox | Sequence[ToolLike] | None, tool_timeout: float | None) -> Toolbox:
    if isinstance(tools, Toolbox):
        return tools
    built = [t if isinstance(t, Tool) else tool(t) for t in (tools or ())]
    if tool_timeout is None:
        return Toolbox(built)
    return Toolbox(built, default_timeout=tool_timeout)


def _calls_key(calls: Sequence[ToolCall]) -> str:
    return json.dumps([[c.name, c.arguments] for c in calls], sort_keys=True, default=str)


class Agent:
    """An agent: a model, tools, and budgets. Reusable: each `run` starts a fresh history.

    Budgets: `max_steps` model turns; `max_tool_calls` executed calls; `timeout` seconds of wall clock for
    the whole run; `token_budget` generated (completion) tokens; `max_malformed_turns` consecutive turns that
    produced no usable action (malformed calls, nothing at all, a call that `tool_choice` forbids);
    `stuck_after` identical turns in a row (same calls, same arguments) earn a nudge; one more identical
    turn stops the run.
    `transcript_dir`: where each run writes its JSONL transcript (None: no transcript).
    `promote_trailing_drafts`: when output ends inside reasoning that ends with complete calls, run them (the
    model closed its turn right after writing them); calls followed by more reasoning are never run.
    """

    def __init__(
        self,
        model: Model,
        tools: Toolbox | Sequence[ToolLike] | None = None,
        *,
        system_prompt: str | None = None,
        max_steps: int = 20,
        max_tool_calls: int | None = None,
        timeout: float | None = None,
        token_budget: int | None = None,
        tool_choice: ToolChoice = "auto",
        keep_thinking: KeepThinking = "none",
        thinking_budget: int | None = None,
        max_tokens_per_step: int | None = None,
        max_malformed_turns: int = 3,
        stuck_after: int = 3,
        tool_timeout: float | None = None,
        transcript_dir: str | Path | None = None,
        promote_trailing_drafts: bool = True,
    ) -> None:
        self.model = model
        self.toolbox = _as_toolbox(tools, tool_timeout)
        if tool_choice not in ("auto", "required", "none") and tool_choice not in self.toolbox:
            raise ValueError(
                f"tool_choice={tool_choice!r} is neither 'auto', 'required', 'none' nor the name of a given "
                f"tool ({', '.join(self.toolbox.names) or 'no tools given'})"
            )
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        if stuck_after < 2:
            raise ValueError("stuck_after must be at least 2: one repeat is normal, e.g. a retry")
        self.system_prompt = system_prompt
        self.max_steps = max_steps
        self.max_tool_calls = max_tool_calls
        self.timeout = timeout
        self.token_budget = token_budget
        self.tool_choice = tool_choice
        self.keep_thinking: KeepThinking = keep_thinking
        self.thinking_budget = thinking_budget
        self.max_tokens_per_step = max_tokens_per_step
        self.max_malformed_turns = max_malformed_turns
        self.stuck_after = stuck_after
        self.transcript_dir = Path(transcript_dir) if transcript_dir is not None else None
        self.promote_trailing_drafts = promote_trailing_drafts
        self.last_result: RunResult | None = None
        self.transcript_path: Path | None = None
        """The transcript of the current (or last) run, known as soon as the run starts."""

    # ----------------------------------------------------------------- public API

    async def run(self, task: str) -> RunResult:
        """Run the task to its end and return the result (events are consumed silently)."""
        async for _ in self.stream(task):
            pass
        assert self.last_result is not None
        return self.last_result

    def run_sync(self, task: str) -> RunResult:
        """`run` for code without an event loop. Inside a running loop, `await agent.run(task)` instead."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run(task))
        raise RuntimeError("run_sync() was called inside a running event loop; use `await agent.run(task)`")

    async def resume(self, path: str | Path, task: str | None = None) -> RunResult:
        """Continue the run recorded in `path` (killed, or stopped by a budget), appending to the same file.

        With `task`, a new user turn is added first, which also continues a run that had finished.
        """
        async for _ in self.stream_resume(path, task):
            pass
        assert self.last_result is not None
        return self.last_result

    async def stream(self, task: str) -> AsyncIterator[Event]:
        """Run the task, yielding typed events as they happen; the last one is `FinalAnswer`."""
        run_id = new_run_id()
        messages = self._opening_messages(task)
        writer = self._writer(run_id)
        self.transcript_path = writer.path if writer is not None else None
        if writer is not None:
            writer.start(run_id=run_id, task=task, config=self._config(), messages=messages)
        state = _RunState(messages=list(messages), run_id=run_id)
        async for event in self._drive(state, writer):
            yield event

    async def stream_resume(self, path: str | Path, task: str | None = None) -> AsyncIterator[Event]:
        """`resume`, yielding events."""
        record = read_transcript(path)
        self.transcript_path = record.path
        state = _RunState(messages=list(record.messages), run_id=record.run_id, steps=record.steps)
        state.usage.prompt_tokens = record.usage["prompt_tokens"]
        state.usage.completion_tokens = record.usage["completion_tokens"]
        state.tool_calls = sum(len(m.tool_calls) for m in record.messages if isinstance(m, AssistantMessage))
        if record.finished and task is None:
            end = record.end or {}
            self.last_result = RunResult(
                answer=str(end.get("answer", "")),
                messages=state.messages,
                steps=state.steps,
                stop_reason=StopReason(end.get("stop_reason", StopReason.FINAL_ANSWER.value)),
                usage=state.usage,
                tool_calls=state.tool_calls,
                transcript_path=record.path,
            )
            yield FinalAnswer(
                answer=self.last_result.answer,
                stop_reason=self.last_result.stop_reason.value,
                steps=state.steps,
            )
            return
        writer = TranscriptWriter(record.path)
        writer.reopen_at(record.valid_length)
        added: list[Message] = [UserMessage(content=task)] if task is not None else []
        state.messages.extend(added)
        writer.resume(messages=added)
        async for event in self._drive(state, writer, step_budget_from=state.steps):
            yield event

    # ----------------------------------------------------------------- the loop

    async def _drive(
        self, state: _RunState, writer: TranscriptWriter | None, step_budget_from: int = 0
    ) -> AsyncIterator[Event]:
        """Run `_steps` under the wall-clock budget, then record how the run ended, whatever happened."""
        try:
            async for event in self._steps(state, writer, step_budget_from):
                yield event
        finally:
            if state.stop_reason is not None:
                self.last_result = RunResult(
                    answer=state.answer,
                    messages=state.messages,
                    steps=state.steps,
                    stop_reason=state.stop_reason,
                    usage=state.usage,
                    tool_calls=state.tool_calls,
                    transcript_path=writer.path if writer else None,
                    detail=state.detail,
                )
                if writer is not None:
                    writer.end(
                        stop_reason=state.stop_reason.value,
                        answer=state.answer,
                        steps=state.steps,
                        usage=state.usage.as_dict(),
                    )
            if writer is not None:
                writer.close()
        if state.stop_reason is not None:
            yield FinalAnswer(answer=state.answer, stop_reason=state.stop_reason.value, steps=state.steps)

    async def _steps(
        self, state: _RunState, writer: TranscriptWriter | None, step_budget_from: int
    ) -> AsyncIterator[Event]:
        while True:
            if (reason := self._budget_exhausted(state, step_budget_from)) is not None:
                state.stop_reason = reason
                return
            step = state.steps + 1
            step_started = time.monotonic()
            parser = StreamParser(promote_trailing_drafts=self.promote_trailing_drafts)
            raw_parts: list[str] = []
            prompt_tokens = completion_tokens = 0
            request = ModelRequest(
                messages=tuple(state.messages),
                tools=tuple(self.toolbox.tools),
                tool_choice=self.tool_choice,
                keep_thinking=self.keep_thinking,
                max_tokens=self.max_tokens_per_step,
                thinking_budget=self.thinking_budget,
            )
            try:
                async with asyncio.timeout(self._time_left(state)):
                    async for chunk in self.model.stream(request):
                        if chunk.text:
                            raw_parts.append(chunk.text)
                            for parsed in parser.feed(chunk.text):
                                yield parsed
                        if chunk.usage is not None:
                            prompt_tokens += chunk.usage.prompt_tokens
                            completion_tokens += chunk.usage.completion_tokens
                            state.usage.cached_tokens += chunk.usage.cached_tokens
            except TimeoutError:
                state.stop_reason, state.detail = StopReason.TIMEOUT, "the wall-clock budget ran out mid-turn"
                return
            for parsed in parser.finish():
                yield parsed
            completion = parser.close()
            state.usage.prompt_tokens += prompt_tokens
            state.usage.completion_tokens += completion_tokens

            calls = [
                c.model_copy(update={"id": f"call_{step}_{i}"}) for i, c in enumerate(completion.tool_calls)
            ]
            assistant = AssistantMessage(
                content=completion.content,
                thinking=completion.thinking,
                tool_calls=calls,
                raw=completion.raw,
            )
            new_messages: list[Message] = [assistant]

            refusal = self._refusal(calls)
            malformed = [m.error for m in completion.malformed]
            no_action = self._no_action_note(completion) if not calls and not malformed else None
            if refusal is not None:
                # what the model wrote stays in history, each call answered by why it was not run
                new_messages.extend(ToolMessage(content=refusal, name=c.name, is_error=True) for c in calls)
            elif calls:
                async for event in self._run_calls(step, calls, new_messages, state):
                    yield event
            elif not malformed and no_action is None:
                state.answer = completion.content.strip()
                state.stop_reason = StopReason.FINAL_ANSWER
            notes = malformed + ([no_action] if no_action else [])
            new_messages.extend(ToolMessage(content=n, is_error=True) for n in notes)
            acted = bool(calls) and refusal is None
            state.malformed_streak = 0 if acted or state.stop_reason else state.malformed_streak + 1

            state.messages.extend(new_messages)
            state.steps = step
            duration = time.monotonic() - step_started
            if writer is not None:
                writer.step(
                    step=step,
                    messages=new_messages,
                    model_output="".join(raw_parts),
                    usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
                    duration_s=duration,
                )
            yield StepEnd(
                step=step,
                prompt_tokens=prompt_tokens,
                completion_tokens=completion_tokens,
                duration_s=duration,
            )
            if state.stop_reason is not None:
                return

    # ----------------------------------------------------------------- pieces of a step

    def _refusal(self, calls: list[ToolCall]) -> str | None:
        """The sentence explaining why `tool_choice` forbids these calls, or None when they may run."""
        if not calls:
            return None
        if self.tool_choice == "none":
            return prompts.render_note("tool_choice_none")
        if self.tool_choice not in ("auto", "required"):
            others = sorted({c.name for c in calls if c.name != self.tool_choice})
            if others:
                return prompts.render_note(
                    "tool_choice_named", tool=self.tool_choice, called=", ".join(others)
                )
        return None

    def _no_action_note(self, completion: Completion) -> str | None:
        """For a turn without calls: None if it is a final answer, else what the model must do instead."""
        if self.tool_choice not in ("auto", "none"):
            return prompts.render_note(
                "tool_required", **({"tool_name": self.tool_choice} if self.tool_choice != "required" else {})
            )
        if not completion.content.strip():
            return prompts.render_note("empty_reply")
        return None

    async def _run_calls(
        self, step: int, calls: list[ToolCall], new_messages: list[Message], state: _RunState
    ) -> AsyncIterator[Event]:
        """Run one turn's calls concurrently; observations keep the order of the calls."""
        key = _calls_key(calls)
        if key == state.last_calls_key:
            state.repeat_count += 1
        else:
            state.last_calls_key, state.repeat_count = key, 1
        if state.repeat_count > self.stuck_after:
            state.stop_reason = StopReason.STUCK
            state.detail = f"the same calls were made {state.repeat_count} times in a row: {key}"
            note = prompts.render_note("stopped_stuck", times=state.repeat_count)
            new_messages.extend(ToolMessage(content=note, name=c.name, is_error=True) for c in calls)
            return

        async def timed(call: ToolCall) -> tuple[ToolResult, float]:
            began = time.monotonic()
            result = await self.toolbox.call(call)
            return result, time.monotonic() - began

        for call in calls:
            yield ToolCallStarted(step=step, call=call)
        tasks: list[asyncio.Future[tuple[ToolResult, float]]] = [
            asyncio.ensure_future(timed(c)) for c in calls
        ]
        index_of = {task: i for i, task in enumerate(tasks)}
        try:
            pending: set[asyncio.Future[tuple[ToolResult, float]]] = set(tasks)
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=self._time_left(state), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    state.stop_reason, state.detail = (
                        StopReason.TIMEOUT,
                        "the wall-clock budget ran out in a tool",
                    )
                    break
                for task in sorted(done, key=index_of.__getitem__):
                    result, duration = task.result()
                    yield ToolCallFinished(
                        step=step, call=calls[index_of[task]], result=result, duration_s=duration
                    )
        finally:
            for task in tasks:
                task.cancel()
        state.tool_calls += len(calls)
        for call, task in zip(calls, tasks, strict=True):
            if task.done() and not task.cancelled():
                result = task.result()[0]
            else:
                result = ToolResult(content=prompts.render_note("run_timeout"), is_error=True)
            new_messages.append(
                ToolMessage(
                    content=result.content, name=call.name, tool_call_id=call.id, is_error=result.is_error
                )
            )
        if state.repeat_count == self.stuck_after:
            new_messages.append(
                ToolMessage(
                    content=prompts.render_note(
                        "repeated_call", name=calls[0].name, count=state.repeat_count
                    ),
                    is_error=True,
                )
            )

    # ----------------------------------------------------------------- budgets and setup

    def _time_left(self, state: _RunState) -> float | None:
        if self.timeout is None:
            return None
        return max(0.0, self.timeout - (time.monotonic() - state.started))

    def _budget_exhausted(self, state: _RunState, step_budget_from: int) -> StopReason | None:
        if state.steps - step_budget_from >= self.max_steps:
            return StopReason.MAX_STEPS
        if self.max_tool_calls is not None and state.tool_calls >= self.max_tool_calls:
            return StopReason.MAX_TOOL_CALLS
        if self.timeout is not None and self._time_left(state) == 0.0:
            return StopReason.TIMEOUT
        if self.token_budget is not None and state.usage.completion_tokens >= self.token_budget:
            return StopReason.TOKEN_BUDGET
        if state.malformed_streak >= self.max_malformed_turns:
            return StopReason.MALFORMED
        return None

    def _opening_messages(self, task: str) -> list[Message]:
        system = self.system_prompt
        if system is None:
            system = prompts.render_system_prompt("default")
        opening: list[Message] = [SystemMessage(content=system)] if system else []
        opening.append(UserMessage(content=task))
        return opening

    def _writer(self, run_id: str) -> TranscriptWriter | None:
        if self.transcript_dir is None:
            return None
        return TranscriptWriter(self.transcript_dir / f"{run_id}.jsonl")

    def _config(self) -> dict[str, Any]:
        return {
            "model": type(self.model).__name__,
            "tools": list(self.toolbox.names),
            # the definitions the model saw in its system turn: `qwq-agent export` renders them back
            "tool_specs": [t.to_openai() for t in self.toolbox.tools],
            "max_steps": self.max_steps,
            "max_tool_calls": self.max_tool_calls,
            "timeout": self.timeout,
            "token_budget": self.token_budget,
            "tool_choice": self.tool_choice,
            "keep_thinking": self.keep_thinking,
            "thinking_budget": self.thinking_budget,
        }
