"""The loop with ScriptedModel: answers, calls, errors fed back, budgets, stuck detection, transcripts."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent import Agent, StopReason
from agent.events import (
    ContentDelta,
    FinalAnswer,
    StepEnd,
    ThinkingDelta,
    ToolCallFinished,
    ToolCallStarted,
)
from agent.messages import AssistantMessage, NoteMessage, SystemMessage, ToolMessage, UserMessage
from agent.models import (
    ModelChunk,
    ModelRequest,
    ModelUnavailableError,
    ScriptedModel,
    Usage,
    completion_text,
    tool_call_text,
)
from agent.testing import add
from agent.transcript import read_transcript
from tools import tool

REPO = Path(__file__).resolve().parents[2]


def call(name: str, **arguments: object) -> str:
    return tool_call_text(name, arguments)


turn = completion_text


@tool
def fail(reason: str) -> str:
    """Always raises, to show how tool errors come back."""
    raise RuntimeError(f"broken: {reason}")


def make_agent(outputs: list[str], **kwargs: object) -> tuple[Agent, ScriptedModel]:
    model = ScriptedModel(outputs)
    kwargs.setdefault("tools", [add, fail])
    return Agent(model, **kwargs), model  # type: ignore[arg-type]


async def test_direct_answer() -> None:
    agent, model = make_agent([turn("2+2 is 4.", content="The answer is 4.")])
    result = await agent.run("What is 2+2?")
    assert result.stop_reason is StopReason.FINAL_ANSWER
    assert result.answer == "The answer is 4."
    assert result.steps == 1
    assert isinstance(result.messages[0], SystemMessage)
    assert result.messages[1] == UserMessage(content="What is 2+2?")
    last = result.messages[-1]
    assert isinstance(last, AssistantMessage)
    assert last.thinking.strip() == "2+2 is 4."
    assert model.calls == 1


async def test_tool_call_observed_then_answer() -> None:
    agent, model = make_agent([turn("I should add.", call("add", a=2, b=3)), turn("It said 5.", content="5")])
    result = await agent.run("add 2 and 3")
    assert result.answer == "5"
    assert result.steps == 2
    assert result.tool_calls == 1
    observation = result.messages[-2]
    assert isinstance(observation, ToolMessage)
    assert observation.content == "5"
    assert not observation.is_error
    # the second request saw the observation, in order, typed
    second = model.requests[1].messages
    assert isinstance(second[-1], ToolMessage)
    assert isinstance(second[-2], AssistantMessage)
    assert second[-2].tool_calls[0].name == "add"
    assert second[-2].tool_calls[0].arguments == {"a": 2, "b": 3}


async def test_calls_of_one_turn_run_concurrently_results_in_call_order() -> None:
    started: list[str] = []
    both_started = asyncio.Event()

    @tool
    async def wait_for_peer(label: str, delay: float) -> str:
        """Returns its label once both calls are running."""
        started.append(label)
        if len(started) == 2:
            both_started.set()
        # a sequential loop would wait here forever: the second call never starts
        await asyncio.wait_for(both_started.wait(), timeout=10)
        await asyncio.sleep(delay)
        return label

    agent, _ = make_agent(
        [
            turn(
                "two at once",
                call("wait_for_peer", label="slow", delay=0.2),
                call("wait_for_peer", label="fast", delay=0),
            ),
            turn("done", content="ok"),
        ],
        tools=[wait_for_peer],
    )
    run = agent.iter("go")
    events = [e async for e in run]
    finished = [e.result.content for e in events if isinstance(e, ToolCallFinished)]
    assert finished == ["fast", "slow"]  # events arrive as calls finish
    result = run.result
    assert result is not None
    observations = [m.content for m in result.messages if isinstance(m, ToolMessage)]
    assert observations == ["slow", "fast"]  # history keeps the order of the calls


async def test_event_stream_shape() -> None:
    agent, _ = make_agent([turn("hmm", call("add", a=1, b=1)), turn("so 2", content="2")])
    events = [e async for e in agent.stream("1+1")]
    kinds = [type(e) for e in events]
    assert kinds[-1] is FinalAnswer
    assert ToolCallStarted in kinds
    assert ToolCallFinished in kinds
    assert kinds.count(StepEnd) == 2
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    assert "hmm" in thinking
    assert "so 2" in thinking
    assert content.strip() == "2"
    final = events[-1]
    assert isinstance(final, FinalAnswer)
    assert final.stop_reason == "final_answer"


async def test_unknown_tool_is_fed_back_with_the_available_names() -> None:
    agent, model = make_agent([turn("x", call("ad", a=1, b=2)), turn("y", content="done")])
    result = await agent.run("go")
    observation = result.messages[-2]
    assert isinstance(observation, ToolMessage)
    assert observation.is_error
    assert "add" in observation.content
    assert result.stop_reason is StopReason.FINAL_ANSWER
    assert model.calls == 2


async def test_bad_arguments_are_fed_back() -> None:
    agent, _ = make_agent([turn("x", call("add", a="two", b=2)), turn("y", content="done")])
    result = await agent.run("go")
    observation = result.messages[-2]
    assert isinstance(observation, ToolMessage)
    assert observation.is_error
    assert "a" in observation.content


async def test_tool_exception_becomes_an_observation() -> None:
    agent, _ = make_agent([turn("x", call("fail", reason="disk")), turn("y", content="done")])
    result = await agent.run("go")
    observation = result.messages[-2]
    assert isinstance(observation, ToolMessage)
    assert observation.is_error
    assert "broken: disk" in observation.content
    assert result.answer == "done"


async def test_malformed_call_is_fed_back_and_retried() -> None:
    agent, _ = make_agent(
        [
            turn("x", "<tool_call>\n{not json}\n</tool_call>"),
            turn("again", call("add", a=1, b=2)),
            turn("y", content="3"),
        ]
    )
    result = await agent.run("go")
    errors = [m for m in result.messages if isinstance(m, NoteMessage)]
    assert len(errors) == 1
    assert errors[0].kind == "malformed_call"
    assert "<tool_call>" in errors[0].content or "JSON" in errors[0].content
    assert result.answer == "3"


async def test_consecutive_malformed_turns_exhaust_the_retry_budget() -> None:
    bad = turn("x", "<tool_call>\n{nope\n</tool_call>")
    agent, model = make_agent([bad] * 5, max_malformed_turns=3)
    result = await agent.run("go")
    assert result.stop_reason is StopReason.MALFORMED
    assert model.calls == 3


async def test_empty_turn_counts_as_malformed() -> None:
    # reasoning that never closes and no answer: the model is told what to do
    agent, _ = make_agent(["I keep thinking and never close", turn("ok", content="fine")])
    result = await agent.run("go")
    assert result.answer == "fine"
    note = result.messages[3]
    assert isinstance(note, NoteMessage)
    assert note.kind == "empty_reply"
    assert note.content


async def test_empty_reply_note_speaks_of_reasoning_only_to_a_reasoning_model() -> None:
    qwq, _ = make_agent(["thinking, never closed", turn("ok", content="fine")])
    plain = Agent(ScriptedModel(["", "fine"], opens_thinking=False), [add])
    notes = []
    for agent in (qwq, plain):
        result = await agent.run("go")
        assert result.answer == "fine"
        note = result.messages[3]
        assert isinstance(note, NoteMessage)
        assert note.kind == "empty_reply"
        notes.append(note.content)
    assert "after your reasoning" in notes[0]
    assert "reasoning" not in notes[1]


async def test_a_turn_cut_at_the_token_cap_is_not_the_final_answer() -> None:
    # Qwen2.5-Coder-0.5B's answers ran into max_tokens mid-code and were taken as answers (measured)
    cut = "Here is how:\n```python\nwith open('numbers.txt') as fi"
    model = ScriptedModel([cut, "42"], opens_thinking=False, finish_reasons=["length", "stop"])
    result = await Agent(model, [add], max_tokens_per_step=16).run("go")
    assert result.stop_reason is StopReason.FINAL_ANSWER
    assert result.answer == "42"
    assert result.steps == 2
    note = result.messages[3]
    assert isinstance(note, NoteMessage)
    assert note.kind == "reply_cut_off"
    assert "16 tokens" in note.content
    # it counts as a turn without a usable action: cut again and again, the run stops as malformed
    looping = ScriptedModel([cut] * 3, opens_thinking=False, finish_reasons=["length"] * 3)
    stopped = await Agent(looping, [add], max_malformed_turns=3).run("go")
    assert stopped.stop_reason is StopReason.MALFORMED
    assert stopped.answer == ""


async def test_a_model_without_reasoning_is_reminded_to_answer_after_good_results() -> None:
    # Qwen2.5-Coder-0.5B called on with its answer in hand; a user-side reminder made it answer (measured)
    model = ScriptedModel([call("add", a=2, b=3), "5"], opens_thinking=False)
    result = await Agent(model, [add]).run("2 + 3?")
    assert result.answer == "5"
    reminder = result.messages[4]
    assert isinstance(reminder, NoteMessage)
    assert reminder.kind == "answer_reminder"
    assert "reply now with the final answer" in reminder.content
    assert model.requests[1].messages[-1] == reminder


async def test_notes_are_events_live_and_on_replay(tmp_path: Path) -> None:
    from agent.cli.replay import recorded_events
    from agent.events import NoteAdded

    script = [call("add", a=2, b=3), "5"]
    agent = Agent(ScriptedModel(script, opens_thinking=False), [add], transcript_dir=tmp_path)
    run = agent.iter("2 + 3?")
    live = [e async for e in run if isinstance(e, NoteAdded)]
    assert [(e.step, e.kind) for e in live] == [(1, "answer_reminder")]
    assert live[0].text.startswith("If this result answers the task")
    assert run.result is not None
    assert run.result.transcript_path is not None
    replayed = [
        e for e in recorded_events(read_transcript(run.result.transcript_path)) if isinstance(e, NoteAdded)
    ]
    assert replayed == live


async def test_no_reminder_after_a_failed_call_nor_for_a_reasoning_model() -> None:
    failing = ScriptedModel([call("add", a="x", b=3), "gave up"], opens_thinking=False)
    result = await Agent(failing, [add]).run("2 + 3?")
    assert not any(isinstance(m, NoteMessage) for m in result.messages)
    qwq, _ = make_agent([turn("add", call("add", a=2, b=3)), turn("ok", content="5")])
    result = await qwq.run("2 + 3?")
    assert not any(isinstance(m, NoteMessage) for m in result.messages)
    # the setting overrides the model's format both ways
    forced, _ = make_agent(
        [turn("add", call("add", a=2, b=3)), turn("ok", content="5")], remind_to_answer=True
    )
    result = await forced.run("2 + 3?")
    assert [m.kind for m in result.messages if isinstance(m, NoteMessage)] == ["answer_reminder"]
    off = ScriptedModel([call("add", a=2, b=3), "5"], opens_thinking=False)
    result = await Agent(off, [add], remind_to_answer=False).run("2 + 3?")
    assert not any(isinstance(m, NoteMessage) for m in result.messages)


async def test_calls_written_before_the_token_cap_still_run() -> None:
    model = ScriptedModel(
        [call("add", a=2, b=3) + "\nNow I will explain at len", "5"],
        opens_thinking=False,
        finish_reasons=["length"],
    )
    result = await Agent(model, [add]).run("2 + 3?")
    assert result.tool_calls == 1
    assert result.answer == "5"


async def test_max_steps() -> None:
    outputs = [turn(f"step {i}", call("add", a=i, b=1)) for i in range(10)]
    agent, model = make_agent(outputs, max_steps=4)
    result = await agent.run("loop")
    assert result.stop_reason is StopReason.MAX_STEPS
    assert result.steps == 4
    assert model.calls == 4
    assert result.answer == ""


async def test_max_tool_calls() -> None:
    outputs = [turn("x", call("add", a=i, b=1), call("add", a=i, b=2)) for i in range(10)]
    agent, _ = make_agent(outputs, max_tool_calls=3)
    result = await agent.run("loop")
    assert result.stop_reason is StopReason.MAX_TOOL_CALLS
    assert result.tool_calls == 4  # the budget is checked between turns


async def test_token_budget() -> None:
    outputs = [turn("x" * 100, call("add", a=i, b=1)) for i in range(10)]
    # ScriptedModel counts one token per character: the budget allows two turns and a bit
    agent, model = make_agent(outputs, token_budget=2 * len(outputs[0]) + 1)
    result = await agent.run("loop")
    assert result.stop_reason is StopReason.TOKEN_BUDGET
    assert model.calls == 3


async def test_wall_clock_budget_stops_a_hanging_tool() -> None:
    @tool
    async def hang() -> str:
        """Never returns."""
        await asyncio.sleep(3600)
        return "unreachable"

    agent, _ = make_agent([turn("x", call("hang")), turn("y", content="z")], tools=[hang], timeout=0.5)
    result = await agent.run("go")
    assert result.stop_reason is StopReason.TIMEOUT
    observation = result.messages[-1]
    assert isinstance(observation, ToolMessage)
    assert observation.is_error


async def test_stuck_detection_nudges_then_stops() -> None:
    same = turn("again", call("add", a=1, b=1))
    agent, model = make_agent([same] * 10, stuck_after=3)
    result = await agent.run("go")
    assert result.stop_reason is StopReason.STUCK
    assert model.calls == 4
    nudges = [m for m in result.messages if isinstance(m, NoteMessage)]
    stopped = [m for m in result.messages if isinstance(m, ToolMessage) and m.is_error]
    # third identical turn: results plus a nudge; fourth: not run, each call answered by the stop
    assert [m.kind for m in nudges] == ["repeated_call"]
    assert "add" in nudges[0].content
    assert len(stopped) == 1
    assert stopped[0].tool_call_id
    assert "stuck" in result.detail or "same" in result.detail


async def test_a_different_call_resets_stuck_detection() -> None:
    a = turn("again", call("add", a=1, b=1))
    b = turn("other", call("add", a=2, b=2))
    agent, _ = make_agent([a, a, b, a, a, turn("ok", content="done")], stuck_after=3)
    result = await agent.run("go")
    assert result.stop_reason is StopReason.FINAL_ANSWER


async def test_tool_choice_required_rejects_a_plain_answer() -> None:
    agent, _ = make_agent(
        [turn("x", content="no tools for me"), turn("fine", call("add", a=1, b=2)), turn("y", content="3")],
        tool_choice="required",
        max_steps=3,
    )
    result = await agent.run("go")
    note = result.messages[3]
    assert isinstance(note, NoteMessage)
    assert note.kind == "tool_required"
    assert "must call" in note.content
    # with "required" every turn must call: the last plain answer is refused again and the budget ends it
    assert result.stop_reason is StopReason.MAX_STEPS


async def test_tool_choice_none_refuses_calls() -> None:
    agent, _ = make_agent([turn("x", call("add", a=1, b=2)), turn("y", content="3")], tool_choice="none")
    result = await agent.run("go")
    refused = result.messages[3]
    assert isinstance(refused, ToolMessage)
    assert refused.is_error
    assert result.tool_calls == 0
    assert result.answer == "3"


async def test_tool_choice_must_name_a_tool() -> None:
    with pytest.raises(ValueError, match="tool_choice"):
        Agent(ScriptedModel([]), tools=[add], tool_choice="nonexistent")


async def test_drafts_inside_reasoning_are_not_executed() -> None:
    drafted = "maybe " + call("add", a=1, b=1) + " no, answer directly\n</think>\n\n42"
    agent, _ = make_agent([drafted])
    result = await agent.run("go")
    assert result.answer == "42"
    assert result.tool_calls == 0


async def test_invented_tool_response_is_cut() -> None:
    invented = turn("x", call("add", a=1, b=2)) + "\n<tool_response>\n999\n</tool_response>\nSo 999."
    agent, _ = make_agent([invented, turn("y", content="3")])
    result = await agent.run("go")
    observation = result.messages[3]
    assert isinstance(observation, ToolMessage)
    assert observation.content == "3"
    assistant = result.messages[2]
    assert isinstance(assistant, AssistantMessage)
    assert "999" not in assistant.content


async def test_plain_functions_are_accepted_as_tools() -> None:
    def multiply(a: int, b: int) -> int:
        """Multiply two integers."""
        return a * b

    agent, _ = make_agent([turn("x", call("multiply", a=6, b=7)), turn("y", content="42")], tools=[multiply])
    result = await agent.run("go")
    assert result.messages[3].content == "42"


def test_run_sync() -> None:
    agent, _ = make_agent([turn("x", content="sync")])
    assert agent.run_sync("go").answer == "sync"


async def test_run_sync_inside_a_loop_says_what_to_do() -> None:
    agent, _ = make_agent([turn("x", content="sync")])
    with pytest.raises(RuntimeError, match=r"await agent\.run"):
        agent.run_sync("go")


async def test_transcript_is_written_per_step(tmp_path: Path) -> None:
    agent, _ = make_agent([turn("x", call("add", a=1, b=2)), turn("y", content="3")], transcript_dir=tmp_path)
    result = await agent.run("go")
    assert result.transcript_path is not None
    lines = [json.loads(x) for x in result.transcript_path.read_text().splitlines()]
    assert [x["type"] for x in lines] == ["run_start", "step", "step", "run_end"]
    record = read_transcript(result.transcript_path)
    assert record.messages == result.messages
    assert record.finished
    assert record.model_outputs[0].startswith("x\n</think>")


async def test_resume_of_a_finished_run_returns_its_result(tmp_path: Path) -> None:
    agent, _ = make_agent([turn("y", content="3")], transcript_dir=tmp_path)
    first = await agent.run("go")
    assert first.transcript_path is not None
    again, model = make_agent([], transcript_dir=tmp_path)
    result = await again.resume(first.transcript_path)
    assert result.answer == "3"
    assert model.calls == 0


async def test_resume_with_a_new_task_continues_the_conversation(tmp_path: Path) -> None:
    agent, _ = make_agent([turn("y", content="3")], transcript_dir=tmp_path)
    first = await agent.run("go")
    assert first.transcript_path is not None
    again, model = make_agent([turn("z", content="4")], transcript_dir=tmp_path)
    result = await again.resume(first.transcript_path, task="and now?")
    assert result.answer == "4"
    assert model.requests[0].messages[-1] == UserMessage(content="and now?")
    assert read_transcript(first.transcript_path).messages == result.messages


KILLED_RUN = textwrap.dedent(
    """
    import json, os, signal, sys
    from agent import Agent
    from agent.models import ScriptedModel
    from tools import tool

    @tool
    def step(n: int) -> str:
        '''Records a step; the second one kills this process as a crash would.'''
        if n == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        return f"did {n}"

    def call(n):
        body = json.dumps({"name": "step", "arguments": {"n": n}})
        return "think\\n</think>\\n\\n<tool_call>\\n" + body + "\\n</tool_call>"

    agent = Agent(ScriptedModel([call(1), call(2)]), tools=[step], transcript_dir=sys.argv[1])
    agent.run_sync("count")
    """
)


def test_resume_after_sigkill_loses_no_finished_step(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (path,) = tmp_path.glob("*.jsonl")
    # simulate a write torn by the kill, too
    with path.open("ab") as handle:
        handle.write(b'{"type": "step", "step": 2, "mess')
    record = read_transcript(path)
    assert record.steps == 1
    assert not record.finished

    @tool
    def step(n: int) -> str:
        """Records a step."""
        return f"did {n}"

    model = ScriptedModel(
        [
            "think\n</think>\n\n" + call("step", n=2),
            "think\n</think>\n\nall done",
        ]
    )
    agent = Agent(model, tools=[step], transcript_dir=tmp_path)
    result = asyncio.run(agent.resume(path))
    assert result.answer == "all done"
    assert result.steps == 3
    observations = [m.content for m in result.messages if isinstance(m, ToolMessage)]
    assert observations == ["did 1", "did 2"]
    # the resumed model saw the finished first step
    first_request = model.requests[0].messages
    assert any(isinstance(m, ToolMessage) and m.content == "did 1" for m in first_request)
    reread = read_transcript(path)
    assert reread.finished
    assert reread.messages == result.messages
    assert os.path.getsize(path) == reread.valid_length


async def test_a_call_that_ends_unclosed_reasoning_is_run_unless_disabled() -> None:
    # QwQ sometimes writes its call and ends the turn without closing </think>
    unclosed = "I need the sum. " + call("add", a=2, b=2)
    agent, _ = make_agent([unclosed, turn("4", content="4")])
    result = await agent.run("go")
    assert result.tool_calls == 1
    assert result.answer == "4"

    strict, _ = make_agent([unclosed, turn("4", content="4")], promote_trailing_drafts=False)
    result = await strict.run("go")
    assert result.tool_calls == 0
    note = result.messages[3]
    assert isinstance(note, NoteMessage)  # told that the turn had neither an answer nor a call


# -- the run handle ------------------------------------------------------------------------------------------


class _EchoModel:
    """Answers each request with the task it was given, after a pause: runs interleave on one Agent."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        task = next(m.content for m in request.messages if isinstance(m, UserMessage))
        for _ in range(5):
            await asyncio.sleep(0.001)
            yield ModelChunk(text="")
        yield ModelChunk(text=turn("echo", content=f"answer to {task}"))
        yield ModelChunk(usage=Usage(prompt_tokens=1, completion_tokens=1), finish_reason="stop")


async def test_concurrent_runs_on_one_agent_keep_their_own_results(tmp_path: Path) -> None:
    agent = Agent(_EchoModel(), tools=[add], transcript_dir=tmp_path)
    tasks = [f"task {i}" for i in range(20)]
    results = await asyncio.gather(*(agent.run(t) for t in tasks))
    assert [r.answer for r in results] == [f"answer to {t}" for t in tasks]
    assert len({r.transcript_path for r in results}) == len(tasks)
    for task, result in zip(tasks, results, strict=True):
        assert result.transcript_path is not None
        assert read_transcript(result.transcript_path).task == task


async def test_a_run_broken_off_early_has_no_result_and_a_resumable_transcript(tmp_path: Path) -> None:
    agent, _ = make_agent([turn("x", call("add", a=1, b=2)), turn("y", content="3")], transcript_dir=tmp_path)
    run = agent.iter("go")
    async for event in run:
        if isinstance(event, StepEnd):
            break
    assert run.result is None
    assert run.transcript_path is not None
    assert read_transcript(run.transcript_path).steps == 1
    with pytest.raises(RuntimeError, match="once"):
        async for _ in run:
            pass


# -- calls in other forms, and calls that could not be read ------------------------------------------------


async def test_a_call_in_another_form_naming_a_tool_is_run() -> None:
    tools_block = '<tools>\n{"name": "add", "arguments": {"a": 20, "b": 22}}\n</tools>'
    agent, _ = make_agent([turn("x", content=tools_block), turn("y", content="42")])
    result = await agent.run("go")
    assert result.tool_calls == 1
    assert result.answer == "42"
    observation = result.messages[3]
    assert isinstance(observation, ToolMessage)
    assert observation.content == "42"


async def test_an_unreadable_call_to_a_known_tool_is_never_the_final_answer() -> None:
    unreadable = '<call function="add">{"a": 1, "b": 2}</call>'
    agent, _ = make_agent(
        [turn("x", content=unreadable), turn("y", call("add", a=1, b=2)), turn("z", content="3")]
    )
    result = await agent.run("go")
    note = result.messages[3]
    assert isinstance(note, NoteMessage)
    assert note.kind == "unexecuted_call"
    assert "<tool_call>" in note.content
    assert result.answer == "3"


async def test_lenient_calls_can_be_switched_off() -> None:
    tools_block = '<tools>\n{"name": "add", "arguments": {"a": 20, "b": 22}}\n</tools>'
    agent, _ = make_agent([turn("x", content=tools_block), turn("y", content="42")], lenient_calls=False)
    result = await agent.run("go")
    assert result.tool_calls == 0
    assert isinstance(result.messages[3], NoteMessage)  # still never taken for the answer


class _NoThinkModel:
    """A backend whose model's turn does not start inside reasoning (Qwen2.5's own format)."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        yield ModelChunk(opens_thinking=False)
        yield ModelChunk(text="The answer is 4.")
        yield ModelChunk(usage=Usage(prompt_tokens=3, completion_tokens=5), finish_reason="stop")


async def test_a_turn_that_does_not_open_reasoning_is_read_as_content() -> None:
    result = await Agent(_NoThinkModel()).run("2+2?")
    assert result.answer == "The answer is 4."
    assistant = result.messages[-1]
    assert isinstance(assistant, AssistantMessage)
    assert assistant.thinking == ""


# -- failures of the model and the clock -------------------------------------------------------------------


class _FailingModel:
    def __init__(self, after_text: str = "") -> None:
        self.after_text = after_text

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        if self.after_text:
            yield ModelChunk(text=self.after_text)
        raise ModelUnavailableError(
            "http://127.0.0.1:9/v1 failed 5 times (last: ConnectError); is the server up?"
        )


async def test_a_failing_model_ends_the_run_with_its_error(tmp_path: Path) -> None:
    run = Agent(_FailingModel("partial"), transcript_dir=tmp_path).iter("go")
    events = [e async for e in run]
    final = events[-1]
    assert isinstance(final, FinalAnswer)
    assert final.stop_reason == "model_error"
    assert run.result is not None
    assert "is the server up" in run.result.detail
    assert isinstance(run.result.error, ModelUnavailableError)
    # it failed before any step finished: nothing to resume, so no transcript was left behind
    assert run.result.transcript_path is None
    assert os.listdir(tmp_path) == []


class _SlowModel:
    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        yield ModelChunk(usage=Usage(prompt_tokens=100, completion_tokens=0))
        for _ in range(1000):
            yield ModelChunk(text="thinking ")
            await asyncio.sleep(0.01)


async def test_a_mid_turn_timeout_keeps_the_tokens_reported_so_far() -> None:
    result = await Agent(_SlowModel(), timeout=0.2).run("go")
    assert result.stop_reason is StopReason.TIMEOUT
    assert result.usage.prompt_tokens == 100


async def test_a_task_with_lone_surrogates_reaches_the_model_and_the_transcript_cleaned(
    tmp_path: Path,
) -> None:
    # argv bytes that are not UTF-8 arrive as lone surrogates (surrogateescape); the model request must encode
    agent, model = make_agent([turn("ok", content="done")], transcript_dir=tmp_path)
    result = await agent.run("task \udcff \ud800")
    assert result.stop_reason is StopReason.FINAL_ANSWER
    task = model.requests[0].messages[-1]
    assert isinstance(task, UserMessage)
    assert task.content == "task \ufffd \ufffd"
    resumed_agent, resumed_model = make_agent([turn("ok", content="again")], transcript_dir=tmp_path)
    assert result.transcript_path is not None
    await resumed_agent.resume(result.transcript_path, task="more \udc80")
    assert resumed_model.requests[0].messages[-1].content == "more \ufffd"  # type: ignore[union-attr]
    assert "\ufffd" in read_transcript(result.transcript_path).task


async def test_function_model_answers_what_the_loop_sends() -> None:
    from agent.models import FunctionModel

    def reply(request: ModelRequest) -> str:
        results = [m for m in request.messages if isinstance(m, ToolMessage)]
        if not results:  # the first turn: call the tool the request offers
            assert [t.name for t in request.tools] == ["add"]
            return turn("add them", call("add", a=20, b=22))
        return turn("the tool said so", content=f"The sum is {results[-1].content}.")

    model = FunctionModel(reply)
    result = await Agent(model, [add]).run("20 + 22?")
    assert result.answer == "The sum is 42."
    assert model.calls == 2

    async def later(request: ModelRequest) -> str:
        await asyncio.sleep(0)
        return turn("thinking", content="done")

    assert (await Agent(FunctionModel(later)).run("go")).answer == "done"
    with pytest.raises(TypeError, match="must return the completion text"):  # a mistake in the test itself
        await Agent(FunctionModel(lambda request: 42)).run("go")  # type: ignore[arg-type,return-value]
