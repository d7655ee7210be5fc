"""Transcripts: finished runs stay finished, a step is on disk before the next request, one writer at a time,
no empty files, and nothing a model or tool sends can make the writer raise."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent import Agent, StopReason
from agent.events import FinalAnswer
from agent.messages import AssistantMessage, SystemMessage, ToolMessage, UserMessage
from agent.models import (
    ModelChunk,
    ModelRequest,
    ModelUnavailableError,
    ScriptedModel,
    completion_text,
    tool_call_text,
)
from agent.testing import add
from agent.transcript import (
    MAX_DEPTH,
    TranscriptError,
    TranscriptLockedError,
    TranscriptWriter,
    read_transcript,
)
from tools import tool
from tools.types import ToolCall

REPO = Path(__file__).resolve().parents[2]

turn = completion_text


def call(name: str, **arguments: object) -> str:
    return tool_call_text(name, arguments)


class FailingModel(ScriptedModel):
    """Replays its script, then fails as a server that went away does (a `ModelError`, not a script error)."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        if len(self.requests) >= len(self.outputs):
            self.requests.append(request)
            yield ModelChunk(text="half a thought")  # text already streamed when the server dies
            raise ModelUnavailableError("http://127.0.0.1:9/v1 failed 5 times (last: ConnectError)")
        async for chunk in super().stream(request):
            yield chunk


def lines_of(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


async def finished_run(tmp_path: Path) -> Path:
    agent = Agent(
        ScriptedModel([turn("add", call("add", a=1, b=2)), turn("done", content="three")]),
        tools=[add],
        transcript_dir=tmp_path,
    )
    result = await agent.run("1+2?")
    assert result.transcript_path is not None
    return result.transcript_path


# ----------------------------------------------------------------- a final step finishes the run


@pytest.mark.parametrize("damage", ["missing", "torn"])
async def test_a_final_step_without_a_whole_run_end_is_finished_and_resume_asks_nothing(
    tmp_path: Path, damage: str
) -> None:
    path = await finished_run(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    assert json.loads(lines[-1])["type"] == "run_end"
    path.write_bytes(b"".join(lines[:-1]) + (lines[-1][:25] if damage == "torn" else b""))

    record = read_transcript(path)
    assert record.finished
    assert record.answered
    assert record.end is not None
    assert record.end["answer"] == "three"

    model = ScriptedModel([turn("again", content="a different answer")])
    result = await Agent(model, tools=[add], transcript_dir=tmp_path).resume(path)
    assert model.calls == 0
    assert result.answer == "three"
    assert result.stop_reason is StopReason.FINAL_ANSWER
    # the file was completed: the torn line cut, one run_end written
    assert [r["type"] for r in lines_of(path)] == ["run_start", "step", "step", "run_end"]


KILLED_BEFORE_RUN_END = textwrap.dedent(
    """
    import os, signal, sys
    from agent import Agent
    from agent.models import ScriptedModel
    from agent.transcript import TranscriptWriter

    def die(self, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)  # killed after the final step's line, before run_end

    TranscriptWriter.end = die
    agent = Agent(ScriptedModel(["thinking\\n</think>\\n\\nforty-two"]), transcript_dir=sys.argv[1])
    agent.run_sync("the answer?")
    """
)


def test_a_run_killed_between_its_final_step_and_run_end_resumes_as_finished(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_RUN_END, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (path,) = tmp_path.glob("*.jsonl")
    assert [r["type"] for r in lines_of(path)] == ["run_start", "step"]
    model = ScriptedModel(["no\n</think>\n\nanother answer"])
    result = asyncio.run(Agent(model, transcript_dir=tmp_path).resume(path))
    assert model.calls == 0
    assert result.answer == "forty-two"
    assert read_transcript(path).end == {**lines_of(path)[-1]}


async def test_a_run_stopped_by_a_budget_is_continued_by_resume(tmp_path: Path) -> None:
    agent = Agent(
        ScriptedModel([turn("add", call("add", a=1, b=2))]), tools=[add], max_steps=1, transcript_dir=tmp_path
    )
    first = await agent.run("1+2?")
    assert first.stop_reason is StopReason.MAX_STEPS
    assert first.transcript_path is not None
    record = read_transcript(first.transcript_path)
    assert record.finished
    assert not record.answered

    model = ScriptedModel([turn("so", content="3")])
    again = await Agent(model, tools=[add], transcript_dir=tmp_path).resume(first.transcript_path)
    assert model.calls == 1
    assert again.answer == "3"
    assert again.steps == 2
    assert read_transcript(first.transcript_path).answered


# ----------------------------------------------------------------- durable before the next request


class CheckingModel(ScriptedModel):
    """Before each request, reads the transcript from disk: every finished step must already be there."""

    def __init__(self, outputs: list[str], directory: Path) -> None:
        super().__init__(outputs)
        self.directory = directory
        self.seen_steps: list[int] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        files = list(self.directory.glob("*.jsonl"))
        finished = sum(isinstance(m, AssistantMessage) for m in request.messages)
        if finished == 0:
            assert files == [], "a transcript appeared before any step finished"
            self.seen_steps.append(0)
        else:
            (path,) = files
            self.seen_steps.append(read_transcript(path).steps)
        async for chunk in super().stream(request):
            yield chunk


async def test_every_finished_step_is_on_disk_before_the_next_model_request(tmp_path: Path) -> None:
    outputs = [turn(f"step {i}", call("add", a=i, b=i)) for i in range(4)] + [turn("done", content="ok")]
    model = CheckingModel(outputs, tmp_path)
    result = await Agent(model, tools=[add], transcript_dir=tmp_path, stuck_after=10).run("count")
    assert result.answer == "ok"
    assert model.seen_steps == [0, 1, 2, 3, 4]


async def test_recorded_steps_keep_usage_and_durations(tmp_path: Path) -> None:
    path = await finished_run(tmp_path)
    first, second = read_transcript(path).recorded_steps
    assert first.usage["prompt_tokens"] > 0
    assert first.usage["completion_tokens"] > 0
    assert first.duration_s is not None
    assert first.duration_s > 0
    assert len(first.tool_durations) == 1
    assert all(d >= 0 for d in first.tool_durations.values())
    assert second.tool_durations == {}


# ----------------------------------------------------------------- no empty transcripts; model errors


async def test_a_run_that_fails_before_its_first_step_leaves_no_transcript(tmp_path: Path) -> None:
    run = Agent(FailingModel([]), transcript_dir=tmp_path).iter("hi")
    events = [event async for event in run]
    final = events[-1]
    assert isinstance(final, FinalAnswer)
    assert final.stop_reason == "model_error"
    assert run.result is not None
    assert run.result.stop_reason is StopReason.MODEL_ERROR
    assert "ConnectError" in run.result.detail
    assert isinstance(run.result.error, ModelUnavailableError)
    assert run.result.transcript_path is None
    assert os.listdir(tmp_path) == []


async def test_a_model_failing_mid_run_ends_the_stream_and_the_transcript_with_the_error(
    tmp_path: Path,
) -> None:
    run = Agent(
        FailingModel([turn("add", call("add", a=2, b=2))]), tools=[add], transcript_dir=tmp_path
    ).iter("2+2?")
    events = [event async for event in run]
    final = events[-1]
    assert isinstance(final, FinalAnswer)
    assert final.stop_reason == "model_error"
    assert final.steps == 1
    assert run.result is not None
    assert run.result.transcript_path is not None
    end = lines_of(run.result.transcript_path)[-1]
    assert end["type"] == "run_end"
    assert end["stop_reason"] == "model_error"
    assert "failed 5 times" in str(end["detail"])
    # and such a run can be resumed once the server is back
    model = ScriptedModel([turn("back", content="4")])
    resumed = await Agent(model, tools=[add], transcript_dir=tmp_path).resume(run.result.transcript_path)
    assert resumed.answer == "4"
    assert model.calls == 1


# ----------------------------------------------------------------- one writer at a time

HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from agent import Agent
    from agent.models import ScriptedModel
    from tools import tool

    release = Path(sys.argv[2])

    @tool
    def wait(n: int) -> str:
        '''The first call returns at once; the second waits until the test lets it go.'''
        while n > 1 and not release.exists():
            time.sleep(0.05)
        return f"waited {n}"

    def call(n):
        return 'w\\n</think>\\n\\n<tool_call>\\n{"name": "wait", "arguments": {"n": %d}}\\n</tool_call>' % n

    agent = Agent(ScriptedModel([call(1), call(2), "done\\n</think>\\n\\nfinished"]), tools=[wait],
                  transcript_dir=sys.argv[1])
    agent.run_sync("wait twice")
    """
)


def test_a_second_process_cannot_resume_a_run_that_is_still_going(tmp_path: Path) -> None:
    release = tmp_path / "release"
    runs = tmp_path / "runs"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(runs), str(release)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            files = list(runs.glob("*.jsonl")) if runs.exists() else []
            # The writer thread creates the file, then writes its first lines: it may be seen empty first.
            with contextlib.suppress(TranscriptError):
                if files and read_transcript(files[0]).steps >= 1:
                    break
            assert holder.poll() is None, holder.communicate()
            assert time.monotonic() < deadline, "the holder never recorded its first step"
            time.sleep(0.05)
        (path,) = files
        model = ScriptedModel([turn("dup", content="duplicated")])
        with pytest.raises(TranscriptLockedError) as caught:
            asyncio.run(Agent(model, transcript_dir=tmp_path / "other").resume(path))
        error = caught.value
        assert model.calls == 0
        assert error.pid == holder.pid
        assert error.host == socket.gethostname()
        assert error.since is not None
        assert abs(error.since - time.time()) < 120
        message = str(error)
        assert f"process {holder.pid} on {socket.gethostname()}" in message
        assert "duplicate" in message
    finally:
        release.touch()
        _out, err = holder.communicate(timeout=120)
    assert holder.returncode == 0, err
    record = read_transcript(path)
    assert record.answered
    assert record.steps == 3
    # the holder is gone, and with it the lock: resuming now is allowed (and asks nothing: it is finished)
    model = ScriptedModel([])
    assert asyncio.run(Agent(model).resume(path)).answer == "finished"


# ----------------------------------------------------------------- text the writer must survive

LONE = "\ud800"
OTHER_LONE = "\udc80"


def every_message_with(text: str) -> list[object]:
    return [
        SystemMessage(content=f"sys {text}"),
        UserMessage(content=f"user {text}"),
        AssistantMessage(
            content=f"content {text}",
            thinking=f"thinking {text}",
            raw=f"raw {text}",
            tool_calls=[
                ToolCall(
                    name=f"name{text}",
                    id=f"id{text}",
                    arguments={f"key{text}": f"value{text}", "list": [text, {text: text}]},
                )
            ],
        ),
        ToolMessage(content=f"result {text}", name=f"tool{text}", tool_call_id=f"call{text}", is_error=True),
    ]


async def test_lone_surrogates_in_every_field_are_written_as_replacement_characters(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    writer = TranscriptWriter(path)
    messages = every_message_with(LONE + "x" + OTHER_LONE)  # "\ud800\udc80" would be a valid pair
    writer.start(run_id="r", task=f"task {LONE}", config={f"c{LONE}": LONE}, messages=messages[:2])  # type: ignore[arg-type]
    writer.step(
        step=1,
        messages=messages[2:],  # type: ignore[arg-type]
        model_output=f"output {OTHER_LONE}",
        usage={"prompt_tokens": 1, "completion_tokens": 1},
        duration_s=0.1,
    )
    await writer.aclose()
    data = path.read_bytes()
    data.decode("utf-8")  # valid UTF-8 throughout
    assert "\ufffd" in data.decode("utf-8")
    record = read_transcript(path)
    assert record.task == "task \ufffd"
    assert record.messages[0] == SystemMessage(content="sys \ufffdx\ufffd")
    assistant = record.messages[2]
    assert isinstance(assistant, AssistantMessage)
    assert assistant.tool_calls[0].name == "name\ufffdx\ufffd"
    assert assistant.tool_calls[0].arguments["list"] == ["\ufffdx\ufffd", {"\ufffdx\ufffd": "\ufffdx\ufffd"}]
    assert record.recorded_steps[0].model_output == "output \ufffd"


async def test_a_surrogate_pair_is_joined_into_its_character(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    writer = TranscriptWriter(path)
    writer.start(run_id="r", task="\ud83d\ude00 and " + LONE, config={}, messages=[])
    writer.step(step=1, messages=[], model_output="", usage={}, duration_s=0.0)
    await writer.aclose()
    assert read_transcript(path).task == "😀 and \ufffd"


@tool
def echo(text: str) -> str:
    """Returns the text with a lone surrogate after it, as a misbehaving tool might.

    Args:
        text: what to echo
    """
    return text + OTHER_LONE


async def test_a_run_with_surrogates_from_the_task_the_model_and_a_tool_completes(tmp_path: Path) -> None:
    model = ScriptedModel(
        [
            "think " + LONE + "\n</think>\n\n" + call("echo", text="x" + LONE),
            "done\n</think>\n\nanswer " + OTHER_LONE,
        ]
    )
    agent = Agent(model, tools=[echo], system_prompt="system " + LONE, transcript_dir=tmp_path)
    result = await agent.run("task " + LONE)
    assert result.stop_reason is StopReason.FINAL_ANSWER
    assert result.transcript_path is not None
    record = read_transcript(result.transcript_path)
    assert record.answered
    assert record.steps == 2


def nested(depth: int) -> object:
    value: object = "bottom"
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


@pytest.mark.parametrize("depth", [256, 300, 5000])
async def test_arguments_nested_too_deep_are_written_without_raising(tmp_path: Path, depth: int) -> None:
    path = tmp_path / "deep.jsonl"
    writer = TranscriptWriter(path)
    writer.start(run_id="r", task="t", config={}, messages=[])
    deep = AssistantMessage(tool_calls=[ToolCall(name="f", arguments={"data": nested(depth)})])
    writer.step(
        step=1,
        messages=[deep, ToolMessage(content="ok", name="f")],
        model_output="out",
        usage={"prompt_tokens": 0, "completion_tokens": 0},
        duration_s=0.0,
    )
    writer.step(
        step=2,
        messages=[AssistantMessage(content="fine")],
        model_output="fine",
        usage={"prompt_tokens": 0, "completion_tokens": 0},
        duration_s=0.0,
    )
    await writer.aclose()
    record = read_transcript(path)
    assert record.steps == 2
    assert record.answered
    kept = record.messages[0]
    assert isinstance(kept, AssistantMessage)
    # the value was cut where it got too deep, and says so
    text = json.dumps(kept.tool_calls[0].arguments)
    assert f"nested more than {MAX_DEPTH} levels deep" in text


async def test_numbers_too_large_for_json_text_are_written_without_raising(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    writer = TranscriptWriter(path)
    writer.start(run_id="r", task="t", config={"huge": 10**5000}, messages=[])
    writer.step(
        step=1,
        messages=[AssistantMessage(tool_calls=[ToolCall(name="f", arguments={"n": 10**5000, "m": 7})])],
        model_output="out",
        usage={"prompt_tokens": 0, "completion_tokens": 0},
        duration_s=0.0,
    )
    await writer.aclose()
    record = read_transcript(path)
    assistant = record.messages[0]
    assert isinstance(assistant, AssistantMessage)
    assert assistant.tool_calls[0].arguments["m"] == 7
    assert "bits: not recorded" in str(assistant.tool_calls[0].arguments["n"])


def test_a_directory_or_a_damaged_record_is_a_transcript_error(tmp_path: Path) -> None:
    from agent.transcript import TranscriptError

    with pytest.raises(TranscriptError, match="is a directory"):
        read_transcript(tmp_path)
    bad = tmp_path / "bad.jsonl"
    start = {"type": "run_start", "run_id": "r", "task": "t", "messages": []}
    bad.write_text(
        json.dumps(start) + "\n" + json.dumps({"type": "step", "messages": [{"role": "x"}]}) + "\n"
    )
    with pytest.raises(TranscriptError, match="line 2"):
        read_transcript(bad)
    bad.write_text(json.dumps(start) + "\n" + json.dumps({"type": "step", "usage": "lots"}) + "\n")
    with pytest.raises(TranscriptError, match="line 2"):
        read_transcript(bad)
    deep = "[" * 100_000 + "]" * 100_000
    bad.write_text(json.dumps(start) + "\n" + deep + "\n" + json.dumps({"type": "run_end"}) + "\n")
    with pytest.raises(TranscriptError, match="line 2"):
        read_transcript(bad)


def test_constructing_a_writer_or_ending_a_run_without_steps_touches_nothing(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "t.jsonl"
    writer = TranscriptWriter(path)
    writer.start(run_id="r", task="t", config={}, messages=[])
    writer.end(stop_reason="model_error", answer="", steps=0, usage={})
    assert writer.close() is None
    assert not path.parent.exists()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "damage",
    [
        '{"type": "step", "step": 1e999}',
        '{"type": "run_end", "stop_reason": "final_answer", "steps": 1e999}',
        '{"type": "run_end", "stop_reason": "final_answer", "steps": "abc"}',
        '{"type": "run_end", "stop_reason": {"a": 1}}',
        '{"type": "run_end", "stop_reason": "final_answer", "answer": ["x"]}',
        '{"type": "run_end", "stop_reason": "final_answer", "usage": [1]}',
    ],
)
def test_fields_of_the_wrong_type_are_a_transcript_error(tmp_path: Path, damage: str) -> None:
    # Found by the CLI fuzz: `steps: 1e999` raised OverflowError in replay, far from the reader.
    from agent.transcript import TranscriptError

    path = tmp_path / "damaged.jsonl"
    start = {"type": "run_start", "run_id": "r", "task": "t", "messages": []}
    path.write_text(json.dumps(start) + "\n" + damage + "\n")
    with pytest.raises(TranscriptError, match="line 2"):
        read_transcript(path)


async def test_config_records_every_setting(tmp_path: Path) -> None:
    """Every setting of `Agent` is in the transcript's config, as JSON, but the few whose field says why not."""
    import dataclasses
    import inspect

    from agent.loop import _UNRECORDED

    settings = {f.name for f in dataclasses.fields(Agent) if f.init}
    assert settings == set(inspect.signature(Agent).parameters)
    unrecorded = {f.name for f in dataclasses.fields(Agent) if _UNRECORDED in f.metadata}
    assert unrecorded == {"transcript_dir", "tracer_provider"}
    agent = Agent(
        ScriptedModel([completion_text("done")]),
        [add],
        system_prompt="Be brief.",
        max_tokens_per_step=99,
        max_malformed_turns=4,
        stuck_after=5,
        tool_timeout=7.5,
        promote_trailing_drafts=False,
        remind_to_answer=True,
        transcript_dir=tmp_path,
    )
    result = await agent.run("t")
    assert result.transcript_path is not None
    config = read_transcript(result.transcript_path).config
    assert set(config) == settings - unrecorded | {"tool_specs"}
    assert config["system_prompt"] == "Be brief."
    assert (config["max_tokens_per_step"], config["max_malformed_turns"], config["stuck_after"]) == (99, 4, 5)
    assert (config["tool_timeout"], config["promote_trailing_drafts"], config["remind_to_answer"]) == (
        7.5,
        False,
        True,
    )
    json.dumps(config)  # plain JSON values throughout
