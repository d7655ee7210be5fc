"""The reasoning loop: render, stream, parse, validate, run the calls, observe, repeat.

`AgentRun._steps` is the whole loop and is meant to be read in one sitting; each step is four moves
(`_generate`, `_decide`, `_act`, `_record`), and everything else here is bookkeeping around them: budgets,
stuck detection, the transcript, resume.

Each run is its own `AgentRun` object holding its history, counters and result, so one `Agent` may serve
any number of runs at once (`Agent.iter` starts one; `run`, `stream` and `resume` go through it).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

import prompts
from agent import telemetry
from agent.context import ContextKeeper, ContextPolicy
from agent.events import (
    Event,
    FinalAnswer,
    StepEnd,
    ToolCallFinished,
    ToolCallStarted,
    TurnRestarted,
    notes_added,
)
from agent.messages import AssistantMessage, Message, NoteMessage, SystemMessage, ToolMessage, UserMessage
from agent.models._turns import ToolChoice
from agent.models.base import KeepThinking, Model, ModelChunk, ModelRequest, turn_opens_thinking
from agent.models.errors import ContextLengthError, ModelError, ModelStreamError
from agent.parsing import Completion, StreamParser
from agent.parsing._forms import fenced_tool_code, mentioned_call
from agent.transcript import TranscriptWriter, new_run_id, open_for_resume
from tools.base import Tool, tool
from tools.serialize import replace_surrogates
from tools.toolbox import Toolbox
from tools.types import ToolCall, ToolResult

__all__ = ["Agent", "AgentRun", "RunResult", "RunUsage", "StopReason"]


class StopReason(StrEnum):
    """Why a run ended. A run ends with an answer only on `FINAL_ANSWER`."""

    FINAL_ANSWER = "final_answer"
    MAX_STEPS = "max_steps"
    MAX_TOOL_CALLS = "max_tool_calls"
    TIMEOUT = "timeout"
    TOKEN_BUDGET = "token_budget"
    MALFORMED = "malformed"
    STUCK = "stuck"
    MODEL_ERROR = "model_error"
    """The backend raised a `ModelError` (server down, stream cut, request refused): `detail` says what."""
    CONTEXT_FULL = "context_full"
    """The prompt no longer fits the context, even condensed (`agent.context`): resume with a larger one."""


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
    error: ModelError | None = None
    """With `MODEL_ERROR`: what the backend raised (a `ModelConfigurationError` is the user's to fix)."""


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
    code_shown_note: bool = False  # the model was told once that code it showed was not run
    last_calls_key: str | None = None
    repeat_count: int = 0
    answer: str = ""
    stop_reason: StopReason | None = None
    detail: str = ""
    error: ModelError | None = None

    def stop(self, reason: StopReason, detail: str = "", error: ModelError | None = None) -> None:
        self.stop_reason, self.detail, self.error = reason, detail, error


@dataclass
class _Turn:
    """What one model turn produced: the parsed completion, its raw text and its token counts."""

    completion: Completion
    raw: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    opens_thinking: bool = True
    requests: int = 1  # HTTP requests the backend made for the turn (completions-mode continuations)
    finish_reason: str | None = None  # the backend's: "length" when the turn hit the token cap
    request: ModelRequest | None = None  # what was sent, once fitted into the context


ToolLike = Tool[..., Any] | Callable[..., Any]

_UNRECORDED = "unrecorded"
"""The metadata key of an `Agent` field the transcript leaves out; its value says why."""


_TURN_ATTEMPTS = 3  # a turn whose stream breaks off mid-way is started again at most twice


def _as_toolbox(tools: Toolbox | Sequence[ToolLike] | None, tool_timeout: float | None) -> Toolbox:
    if isinstance(tools, Toolbox):
        return tools
    built = [t if isinstance(t, Tool) else tool(t) for t in (tools or ())]
    if tool_timeout is None:
        return Toolbox(built)
    return Toolbox(built, default_timeout=tool_timeout)


def _calls_key(calls: Sequence[ToolCall]) -> str:
    return json.dumps([[c.name, c.arguments] for c in calls], sort_keys=True, default=str)


def _note(kind: str, **variables: Any) -> NoteMessage:
    return NoteMessage(content=prompts.render_note(kind, **variables), kind=kind)


def _answer_calls(calls: Sequence[ToolCall], note: NoteMessage) -> list[ToolMessage]:
    """Each call answered by a note saying why it did not run (chat APIs want an answer per call id)."""
    return [ToolMessage(content=note.content, name=c.name, tool_call_id=c.id, is_error=True) for c in calls]


@dataclass(eq=False)  # eq=False: an agent stays equal only to itself, and hashable
class Agent:
    """An agent: a model, tools, and budgets. Reusable, also concurrently: each run has its own state.

    Its settings are its fields, declared once below: they are the constructor's keywords, the attributes a
    caller reads or changes (`agent.max_steps = 5`), and what each run's transcript records (`_config`).

    Budgets: `max_steps` model turns; `max_tool_calls` executed calls; `timeout` seconds of wall clock for
    the whole run; `token_budget` generated (completion) tokens; `max_malformed_turns` consecutive turns that
    produced no usable action (malformed calls, nothing at all, a call that `tool_choice` forbids);
    `stuck_after` identical turns in a row (same calls, same arguments) earn a nudge; one more identical
    turn stops the run.
    `transcript_dir`: where each run writes its JSONL transcript (None: no transcript).
    `promote_trailing_drafts`: when output ends inside reasoning that ends with complete calls, run them (the
    model closed its turn right after writing them); calls followed by more reasoning are never run.
    `lenient_calls`: also run calls written in the forms real models use instead of `<tool_call>` (a
    `<tools>` block, a fenced JSON block, a bare JSON line...) when they name one of the tools.
    `tracer_provider`: an OpenTelemetry tracer provider to trace runs with (see `agent.telemetry`; without
    one, runs are traced only when OpenTelemetry is configured globally or through OTEL_EXPORTER_OTLP_ENDPOINT).
    `capture_content`: put prompts, completions, tool arguments and results in the spans (off: they may be
    sensitive).
    `context`: how the run stays inside the model's context (`agent.context.ContextPolicy`; on by default:
    old tool results are masked, then the middle of the history condensed; None turns it off).
    `remind_to_answer`: after a turn whose calls all succeeded, a note asks the model to answer now if the
    results answer the task. None (the default) does so only for models whose turns open no reasoning: small
    instruct models call on and on with their answer in hand (Qwen2.5-Coder-0.5B: 0 of 5 samples answered
    after the result, 5 of 5 with the note, measured), while QwQ decides in its reasoning and needs none.
    """

    model: Model
    tools: Toolbox | Sequence[ToolLike] | None = None
    _: KW_ONLY
    system_prompt: str | None = None
    max_steps: int = 20
    max_tool_calls: int | None = None
    timeout: float | None = None
    token_budget: int | None = None
    tool_choice: str | ToolChoice = "auto"
    keep_thinking: KeepThinking = "none"
    thinking_budget: int | None = None
    max_tokens_per_step: int | None = None
    max_malformed_turns: int = 3
    stuck_after: int = 3
    tool_timeout: float | None = None
    transcript_dir: str | Path | None = field(
        default=None, metadata={_UNRECORDED: "where the transcript is, not how the run behaves"}
    )
    promote_trailing_drafts: bool = True
    lenient_calls: bool = True
    tracer_provider: Any = field(default=None, metadata={_UNRECORDED: "an object, not a setting"})
    capture_content: bool = False
    context: ContextPolicy | None = field(default_factory=ContextPolicy)
    remind_to_answer: bool | None = None
    toolbox: Toolbox = field(init=False, repr=False)
    """The tools as the run validates and runs them (built from `tools`, with `tool_timeout`)."""

    def __post_init__(self) -> None:
        """Check the settings and bring the ones given in several forms to one: `tool_choice` becomes a
        `ToolChoice`, `transcript_dir` a `Path`, `tool_timeout` the timeout the toolbox gives calls."""
        self.toolbox = _as_toolbox(self.tools, self.tool_timeout)
        self.tool_timeout = self.toolbox.default_timeout
        choice = self.tool_choice = ToolChoice.of(self.tool_choice)
        if choice.only is not None and choice.only not in self.toolbox:
            raise ValueError(
                f"tool_choice={str(choice)!r} is neither 'auto', 'required', 'none' nor the name of a given "
                f"tool ({', '.join(self.toolbox.names) or 'no tools given'})"
            )
        if self.max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        if self.stuck_after < 2:
            raise ValueError("stuck_after must be at least 2: one repeat is normal, e.g. a retry")
        if self.transcript_dir is not None:
            self.transcript_dir = Path(self.transcript_dir)

    # ----------------------------------------------------------------- public API

    def iter(self, task: str) -> AgentRun:
        """Start a run of `task`: iterate the returned `AgentRun` for its events, then read `.result`."""
        run_id = new_run_id()
        writer = self._writer(run_id)
        if self.system_prompt is None and hasattr(self.model, "turn_opens_thinking"):
            # The default system prompt depends on the model's format, which the model may have to load to
            # tell: the run asks it when it starts (`AgentRun._open`), off this synchronous call.
            return AgentRun(self, _RunState(messages=[], run_id=run_id), writer, task=task)
        messages = self._opening_messages(task, self.system_prompt)
        if writer is not None:
            writer.start(run_id=run_id, task=task, config=self._config(), messages=messages)
        return AgentRun(self, _RunState(messages=list(messages), run_id=run_id), writer)

    def iter_resume(self, path: str | Path, task: str | None = None) -> AgentRun:
        """Continue the run recorded in `path` (killed, or stopped by a budget), appending to the same file.

        A run that ended with an answer is done: it is returned as recorded, and the model is not asked
        again (also when the process was killed between the final step and the end record). With `task`, a
        new user turn is added first, which continues any run. The transcript is locked while the run goes
        on: a second process resuming it is refused with `TranscriptLockedError`, which names the holder.
        """
        record, writer = open_for_resume(path)
        state = _RunState(messages=list(record.messages), run_id=record.run_id, steps=record.steps)
        state.usage.prompt_tokens = record.usage["prompt_tokens"]
        state.usage.completion_tokens = record.usage["completion_tokens"]
        state.tool_calls = sum(len(m.tool_calls) for m in record.messages if isinstance(m, AssistantMessage))
        if record.answered and task is None:
            end = record.end or {}
            state.answer = str(end.get("answer", ""))
            state.stop(StopReason.FINAL_ANSWER)
            if end.get("inferred"):  # killed between the final step and its run_end: complete the file
                writer.end(
                    stop_reason=StopReason.FINAL_ANSWER.value,
                    answer=state.answer,
                    steps=state.steps,
                    usage=state.usage.as_dict(),
                )
            return AgentRun(self, state, writer, finished=True)
        added: list[Message] = [UserMessage(content=replace_surrogates(task))] if task is not None else []
        state.messages.extend(added)
        writer.resume(messages=added)
        run = AgentRun(self, state, writer, step_budget_from=state.steps)
        if run._context is not None:  # the model sees the view it saw before the run stopped
            run._context.restore(state.messages, [r for _, r in record.other_records])
        return run

    async def run(self, task: str) -> RunResult:
        """Run the task to its end and return the result (events are consumed silently)."""
        return await self.iter(task).finish()

    def run_sync(self, task: str) -> RunResult:
        """`run` for code without an event loop. Inside a running loop, `await agent.run(task)` instead."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.run(task))
        raise RuntimeError("run_sync() was called inside a running event loop; use `await agent.run(task)`")

    async def resume(self, path: str | Path, task: str | None = None) -> RunResult:
        """`iter_resume` run to its end."""
        return await self.iter_resume(path, task).finish()

    async def stream(self, task: str) -> AsyncIterator[Event]:
        """Run the task, yielding typed events as they happen; the last one is `FinalAnswer`."""
        async for event in self.iter(task):
            yield event

    async def stream_resume(self, path: str | Path, task: str | None = None) -> AsyncIterator[Event]:
        """`resume`, yielding events."""
        async for event in self.iter_resume(path, task):
            yield event

    # ----------------------------------------------------------------- setup

    def _opening_messages(self, task: str, system: str | None) -> list[Message]:
        if system is None:
            system = self.default_system_prompt(None)
        opening: list[Message] = [SystemMessage(content=replace_surrogates(system))] if system else []
        opening.append(UserMessage(content=replace_surrogates(task)))
        return opening

    def default_system_prompt(self, opens_thinking: bool | None) -> str:
        """The system prompt used when none is given, for a model whose turns do or do not open reasoning.

        A reasoning model (QwQ-32B; None, unknown, counts as one) is asked to think, then call or answer
        (`default`). A model whose turn starts with its visible answer (Qwen2.5, Qwen3 with thinking off)
        takes "think it through" as a cue to write prose and code for the reader instead of calling a tool:
        it gets `direct`, which asks it to call the tools rather than show or imagine their work.
        """
        if opens_thinking is False:
            return prompts.render_system_prompt("direct", tools=bool(self.toolbox.names))
        return prompts.render_system_prompt("default")

    def _writer(self, run_id: str) -> TranscriptWriter | None:
        if self.transcript_dir is None:
            return None
        return TranscriptWriter(Path(self.transcript_dir) / f"{run_id}.jsonl")

    def _config(self) -> dict[str, Any]:
        """The run's settings as the transcript records them: every field of the agent, as JSON, but those
        whose metadata names a reason to leave them out (`_UNRECORDED`). A new setting is recorded as it is
        declared, so it cannot be forgotten here."""
        config: dict[str, Any] = {
            "model": type(self.model).__name__,
            "tools": list(self.toolbox.names),
            # the definitions the model saw in its system turn: `qwq-agent export` renders them back
            "tool_specs": [t.to_openai() for t in self.toolbox.tools],
        }
        for setting in fields(self):
            if setting.init and setting.name not in config and _UNRECORDED not in setting.metadata:
                config[setting.name] = _recorded(getattr(self, setting.name))
        return config


def _recorded(value: Any) -> Any:
    """A setting as a JSON value: the settings that are objects have a JSON form of their own."""
    if isinstance(value, ToolChoice):
        return str(value)
    if isinstance(value, ContextPolicy):
        return value.as_config()
    return value


class AgentRun:
    """One run of an `Agent`: iterate it (once) for its events; `result` is set when it has ended.

    `transcript_path` is known from the start. Breaking off the iteration early stops the run: its
    transcript keeps every finished step (resume it later) and `result` stays None.
    """

    def __init__(
        self,
        agent: Agent,
        state: _RunState,
        writer: TranscriptWriter | None,
        *,
        step_budget_from: int = 0,
        finished: bool = False,
        task: str | None = None,
    ) -> None:
        self.agent = agent
        self._task = task  # set: a new run whose opening messages are made when it starts
        self._state = state
        self._writer = writer
        self._step_budget_from = step_budget_from
        self._finished_before = finished
        self._started = False
        self.transcript_path: Path | None = writer.path if writer is not None else None
        """Where the transcript goes; the file itself appears with the run's first finished step."""
        self.result: RunResult | None = None
        self._trace: telemetry.RunTrace = telemetry.NULL_TRACE
        self._context = ContextKeeper(agent.context, agent.model) if agent.context is not None else None

    @property
    def run_id(self) -> str:
        return self._state.run_id

    @property
    def messages(self) -> list[Message]:
        """The history so far (only ever appended to)."""
        return self._state.messages

    def __aiter__(self) -> AsyncIterator[Event]:
        if self._started:
            raise RuntimeError("an AgentRun can be iterated once; start another with agent.iter(task)")
        self._started = True
        return self._drive()

    async def finish(self) -> RunResult:
        """Iterate to the end (events are dropped) and return the result."""
        async for _ in self:
            pass
        assert self.result is not None
        return self.result

    # ----------------------------------------------------------------- the loop

    async def _drive(self) -> AsyncIterator[Event]:
        """`_drive_untraced` inside the run's trace (a no-op unless tracing is configured).

        A new run's opening messages are made first, so that the run's span records them as its input.
        """
        if self._task is not None and not self._finished_before:
            try:
                await self._open(self._task)
            except BaseException:
                if self._writer is not None:
                    self._writer.close()
                raise
            self._task = None
        with telemetry.trace_run(self.agent, self._state) as self._trace:
            async for event in self._drive_untraced():
                yield event

    async def _drive_untraced(self) -> AsyncIterator[Event]:
        """Run the steps, then record how the run ended, whatever happened."""
        state, writer = self._state, self._writer
        try:
            if not self._finished_before:
                async for event in self._steps():
                    yield event
        finally:
            if state.stop_reason is not None and writer is not None and not self._finished_before:
                writer.end(
                    stop_reason=state.stop_reason.value,
                    answer=state.answer,
                    steps=state.steps,
                    usage=state.usage.as_dict(),
                    detail=state.detail,
                )
            if writer is not None:
                writer.close()  # hands the last lines to the writer thread; never blocks the loop
        if writer is not None:
            await writer.aclose()  # a run that ended normally returns with its transcript complete
        if state.stop_reason is not None:
            self.result = RunResult(
                answer=state.answer,
                messages=state.messages,
                steps=state.steps,
                stop_reason=state.stop_reason,
                usage=state.usage,
                tool_calls=state.tool_calls,
                transcript_path=writer.path if writer is not None and writer.created else None,
                detail=state.detail,
                error=state.error,
            )
            yield FinalAnswer(answer=state.answer, stop_reason=state.stop_reason.value, steps=state.steps)

    async def _open(self, task: str) -> None:
        """A new run's opening messages, with the default system prompt that suits the model's format."""
        agent, state = self.agent, self._state
        try:
            opens = await turn_opens_thinking(agent.model)
        except ModelError:
            opens = None  # the first turn meets the same failure and reports it as runs always do
        state.messages.extend(agent._opening_messages(task, agent.default_system_prompt(opens)))
        if self._writer is not None:
            self._writer.start(
                run_id=state.run_id, task=task, config=agent._config(), messages=list(state.messages)
            )

    async def _steps(self) -> AsyncIterator[Event]:
        state = self._state
        while (reason := self._budget_exhausted()) is None:
            step = state.steps + 1
            started = time.monotonic()
            self._trace.start_step(step)
            turn = _Turn(completion=Completion(), raw="")
            async for event in self._generate(step, turn):
                yield event
            if state.stop_reason is not None:
                return  # the turn never finished (timeout, model failure): nothing to record
            new_messages: list[Message] = [self._assistant(step, turn.completion)]
            durations: dict[str, float] = {}
            async for event in self._act(step, turn, new_messages):
                if isinstance(event, ToolCallFinished):
                    durations[event.call.id] = event.duration_s
                yield event
            await self._record(step, turn, new_messages, time.monotonic() - started, durations)
            yield StepEnd(
                step=step,
                prompt_tokens=turn.prompt_tokens,
                completion_tokens=turn.completion_tokens,
                duration_s=time.monotonic() - started,
            )
            if state.stop_reason is not None:
                return
        state.stop(reason)

    # ----------------------------------------------------------------- the moves of a step

    async def _generate(self, step: int, turn: _Turn) -> AsyncIterator[Event]:
        """One model turn, started again (up to twice) when its stream breaks off mid-way; fills `turn`."""
        async for event in self._fit(step, turn):
            yield event
        if turn.request is None:
            return  # nothing fits the context (or counting failed): the run has stopped
        for attempt in range(_TURN_ATTEMPTS):
            try:
                async for event in self._attempt(turn, turn.request):
                    yield event
                if self._context is not None:
                    self._context.observe(turn.prompt_tokens, turn.requests)
                return
            except ModelStreamError as exc:
                if not exc.retryable or attempt + 1 == _TURN_ATTEMPTS:
                    self._state.stop(StopReason.MODEL_ERROR, str(exc) or repr(exc), exc)
                    return
                yield TurnRestarted(step=step, reason=str(exc))

    def _request(self) -> ModelRequest:
        agent = self.agent
        return ModelRequest(
            messages=tuple(self._state.messages),
            tools=tuple(agent.toolbox.tools),
            tool_choice=str(agent.tool_choice),
            keep_thinking=agent.keep_thinking,
            max_tokens=agent.max_tokens_per_step,
            thinking_budget=agent.thinking_budget,
        )

    async def _fit(self, step: int, turn: _Turn) -> AsyncIterator[Event]:
        """Fit the request into the model's context (`agent.context`); sets `turn.request` or stops the run."""
        state, request = self._state, self._request()
        if self._context is None:
            turn.request = request
            return
        try:
            fitted = await self._context.fit(step, state.messages, request)
        except ModelError as exc:  # counting needs the model: a model that cannot load fails here
            self._model_failed(exc)
            return
        state.usage.prompt_tokens += fitted.usage.prompt_tokens  # what a summary cost
        state.usage.completion_tokens += fitted.usage.completion_tokens
        for condensation in fitted.condensations:
            if self._writer is not None:
                self._writer.write(condensation.record())
            yield condensation.event()
        if fitted.request is None:
            state.stop(StopReason.CONTEXT_FULL, fitted.detail)
        turn.request = fitted.request

    async def _attempt(self, turn: _Turn, request: ModelRequest) -> AsyncIterator[Event]:
        """Stream one model turn through the parser, yielding what it reads; fills `turn`."""
        agent, state = self.agent, self._state
        parser: StreamParser | None = None
        raw: list[str] = []
        try:
            async with asyncio.timeout(self._time_left()):
                async for chunk in self._trace.model_stream(agent.model.stream(request), request):
                    if parser is None or (chunk.opens_thinking is not None and not raw):
                        parser = self._parser(chunk.opens_thinking)
                        turn.opens_thinking = chunk.opens_thinking is not False
                    if chunk.text:
                        raw.append(chunk.text)
                        for parsed in parser.feed(chunk.text):
                            yield parsed
                    if chunk.finish_reason:
                        turn.finish_reason = chunk.finish_reason
                    if chunk.usage is not None:
                        self._count_usage(turn, chunk)  # as it arrives: a turn cut short keeps its cost
        except TimeoutError:
            state.stop(StopReason.TIMEOUT, "the wall-clock budget ran out mid-turn")
            return
        except ModelStreamError as exc:
            if exc.retryable:
                raise  # `_generate` starts the turn again
            state.stop(StopReason.MODEL_ERROR, str(exc) or repr(exc), exc)
            return
        except ModelError as exc:
            # the run stops with a reason like any other budget, so FinalAnswer still ends the stream
            self._model_failed(exc)
            return
        parser = parser or self._parser(None)
        for parsed in parser.finish():
            yield parsed
        turn.completion, turn.raw = parser.close(), "".join(raw)

    def _model_failed(self, exc: ModelError) -> None:
        if isinstance(exc, ContextLengthError):  # the backend's own check: the policy is off or misinformed
            self._state.stop(
                StopReason.CONTEXT_FULL, f"{exc}; resume the run with a larger context (--n-ctx)"
            )
        else:
            self._state.stop(StopReason.MODEL_ERROR, str(exc) or repr(exc), exc)

    def _count_usage(self, turn: _Turn, chunk: ModelChunk) -> None:
        usage, total = chunk.usage, self._state.usage
        assert usage is not None
        turn.prompt_tokens += usage.prompt_tokens
        turn.completion_tokens += usage.completion_tokens
        total.prompt_tokens += usage.prompt_tokens
        total.completion_tokens += usage.completion_tokens
        total.cached_tokens += usage.cached_tokens
        requests = chunk.extra.get("requests", 1)
        turn.requests = requests if isinstance(requests, int) else 1

    def _parser(self, opens_thinking: bool | None) -> StreamParser:
        agent = self.agent
        return StreamParser(
            prompt_opened_think=True if opens_thinking is None else opens_thinking,
            promote_trailing_drafts=agent.promote_trailing_drafts,
            tool_names=list(agent.toolbox.names) if agent.lenient_calls else None,
        )

    def _assistant(self, step: int, completion: Completion) -> AssistantMessage:
        calls = [c.model_copy(update={"id": f"call_{step}_{i}"}) for i, c in enumerate(completion.tool_calls)]
        return AssistantMessage(
            content=completion.content, thinking=completion.thinking, tool_calls=calls, raw=completion.raw
        )

    async def _act(self, step: int, turn: _Turn, new_messages: list[Message]) -> AsyncIterator[Event]:
        """Do what the turn asks: run its calls, refuse them, take its answer, or tell the model what to fix."""
        state = self._state
        assistant = new_messages[0]
        assert isinstance(assistant, AssistantMessage)
        calls = assistant.tool_calls
        notes = self._problems(assistant, turn)
        refusal = self._refusal(calls)
        acted = False
        if refusal is not None:
            # what the model wrote stays in history, each call answered by why it was not run
            new_messages.extend(_answer_calls(calls, refusal))
        elif calls and (stuck := self._stuck(calls)) is not None:
            new_messages.extend(_answer_calls(calls, stuck))
        elif calls:
            async for event in self._run_calls(step, calls, new_messages):
                yield event
            acted = True
            if state.repeat_count == self.agent.stuck_after:
                new_messages.append(_note("repeated_call", name=calls[0].name, count=state.repeat_count))
            elif self._reminds(turn, new_messages):
                new_messages.append(_note("answer_reminder", results=len(calls)))
        elif not notes:
            state.answer = assistant.content.strip()
            state.stop(StopReason.FINAL_ANSWER)
        new_messages.extend(notes)
        state.malformed_streak = 0 if acted or state.stop_reason else state.malformed_streak + 1
        for event in notes_added(step, new_messages):
            yield event

    async def _record(
        self,
        step: int,
        turn: _Turn,
        new_messages: list[Message],
        duration: float,
        durations: dict[str, float],
    ) -> None:
        """Append the step to the history and the transcript, on disk before the next model request."""
        state = self._state
        state.messages.extend(new_messages)
        state.steps = step
        if self._writer is not None:
            self._writer.step(
                step=step,
                messages=new_messages,
                model_output=turn.raw,
                usage={"prompt_tokens": turn.prompt_tokens, "completion_tokens": turn.completion_tokens},
                duration_s=duration,
                tool_durations=durations,
                opens_thinking=turn.opens_thinking,
            )
            await self._writer.durable()  # a killed run loses no finished step

    # ----------------------------------------------------------------- decisions

    def _problems(self, assistant: AssistantMessage, turn: _Turn) -> list[NoteMessage]:
        """Notes for a turn that cannot stand as it is: malformed calls, or no action where one was due.

        A turn the backend cut at the token cap (finish reason "length") is never an answer: it stopped
        because it ran out of room, not because the model was done (a small model's answer cut mid-sentence,
        or mid-code, measured on Qwen2.5-Coder-0.5B). The model is told so and asked for a shorter reply.
        """
        malformed = [NoteMessage(content=m.error, kind="malformed_call") for m in turn.completion.malformed]
        if assistant.tool_calls or malformed:
            return malformed
        choice = ToolChoice.of(self.agent.tool_choice)
        if choice.forced:
            return [_note("tool_required", **({"tool_name": choice.only} if choice.only else {}))]
        if not assistant.content.strip():
            return [_note("empty_reply", reasoning=turn.opens_thinking)]
        if turn.finish_reason == "length":
            cap = self.agent.max_tokens_per_step
            return [_note("reply_cut_off", **({"max_tokens": cap} if cap is not None else {}))]
        if choice.allows_calls:
            # A call the model wrote in a form nobody could read: never take it for the answer.
            name = mentioned_call(assistant.content, self.agent.toolbox.names)
            if name is not None:
                return [_note("unexecuted_call", name=name)]
            return self._code_shown(assistant.content)
        return []

    def _code_shown(self, content: str) -> list[NoteMessage]:
        """A note for an answer that shows code for a tool (```python) instead of running it, in a run where no
        call has succeeded yet.

        Small models without reasoning do this instead of calling (Qwen2.5-Coder-0.5B, measured), also after
        their calls failed: Qwen2.5-Coder-1.5B answered two failed calls with the code in a ```python block and
        an invented result (measured). The code is not run, since that would guess; the model is told once how
        to run it, and may then answer again.
        """
        state = self._state
        if state.code_shown_note or any(
            isinstance(m, ToolMessage) and not m.is_error for m in state.messages
        ):
            return []
        name = fenced_tool_code(content, self.agent.toolbox.names)
        if name is None:
            return []
        state.code_shown_note = True
        return [_note("unrun_code", name=name)]

    def _reminds(self, turn: _Turn, new_messages: list[Message]) -> bool:
        """Whether to remind the model to answer: its calls all succeeded and the run goes on."""
        remind = self.agent.remind_to_answer
        if remind is None:
            remind = not turn.opens_thinking
        return (
            remind
            and self._state.stop_reason is None
            and all(not m.is_error for m in new_messages if isinstance(m, ToolMessage))
        )

    def _refusal(self, calls: list[ToolCall]) -> NoteMessage | None:
        """Why `tool_choice` forbids these calls, or None when they may run."""
        if not calls:
            return None
        choice = ToolChoice.of(self.agent.tool_choice)
        if not choice.allows_calls:
            return _note("tool_choice_none")
        if choice.only is not None:
            others = sorted({c.name for c in calls if c.name != choice.only})
            if others:
                return _note("tool_choice_named", tool=choice.only, called=", ".join(others))
        return None

    def _stuck(self, calls: list[ToolCall]) -> NoteMessage | None:
        """Count identical turns; past `stuck_after` of them the run stops, with a note saying why."""
        state = self._state
        key = _calls_key(calls)
        if key == state.last_calls_key:
            state.repeat_count += 1
        else:
            state.last_calls_key, state.repeat_count = key, 1
        if state.repeat_count <= self.agent.stuck_after:
            return None
        state.stop(StopReason.STUCK, f"the same calls were made {state.repeat_count} times in a row: {key}")
        return _note("stopped_stuck", times=state.repeat_count)

    async def _run_calls(
        self, step: int, calls: list[ToolCall], new_messages: list[Message]
    ) -> AsyncIterator[Event]:
        """Run one turn's calls concurrently; observations keep the order of the calls."""
        state, toolbox = self._state, self.agent.toolbox

        async def timed(call: ToolCall) -> tuple[ToolResult, float]:
            began = time.monotonic()
            result = await self._trace.tool_call(call, toolbox.call(call))
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
                    pending, timeout=self._time_left(), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    state.stop(StopReason.TIMEOUT, "the wall-clock budget ran out in a tool")
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

    # ----------------------------------------------------------------- budgets

    def _time_left(self) -> float | None:
        timeout = self.agent.timeout
        if timeout is None:
            return None
        return max(0.0, timeout - (time.monotonic() - self._state.started))

    def _budget_exhausted(self) -> StopReason | None:
        agent, state = self.agent, self._state
        if state.steps - self._step_budget_from >= agent.max_steps:
            return StopReason.MAX_STEPS
        if agent.max_tool_calls is not None and state.tool_calls >= agent.max_tool_calls:
            return StopReason.MAX_TOOL_CALLS
        if agent.timeout is not None and self._time_left() == 0.0:
            return StopReason.TIMEOUT
        if agent.token_budget is not None and state.usage.completion_tokens >= agent.token_budget:
            return StopReason.TOKEN_BUDGET
        if state.malformed_streak >= agent.max_malformed_turns:
            return StopReason.MALFORMED
        return None
