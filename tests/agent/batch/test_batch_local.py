"""Batches on this machine: the library API with in-process tools, and `qwq-agent batch` with real sandboxes.

Models are scripted (each task's script in its metadata, or `--scripted`); the sandboxes, the Docker engine
and the CLI process are real. Every CLI test checks that the batch left no container behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from agent.batch import BatchTask, run_batch
from agent.batch.run import BatchAbortedError
from agent.cli.batch import batch_id_for
from agent.loop import Agent
from agent.models import ScriptedModel, completion_text, tool_call_text
from tools.base import Tool, tool


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: the first factor
        b: the second factor
    """
    return a * b


def make_agent(task: BatchTask, tools: list[Tool[Any, Any]]) -> Agent:
    return Agent(ScriptedModel(task.metadata["script"]), [*tools, multiply], max_steps=4)


def is_file(path: str) -> bool:
    return Path(path).is_file()


def multiply_task(index: int) -> dict[str, Any]:
    script = [
        completion_text("Use the tool.", tool_call_text("multiply", {"a": index, "b": 3})),
        completion_text("Got it.", content=f"It is {index * 3}."),
    ]
    return {
        "id": f"m{index}",
        "task": f"{index} times 3?",
        "tools": [],
        "metadata": {"script": script},
        "check": {"answer_equals": f"It is {index * 3}."},
    }


async def test_run_batch_yields_every_task_once_with_its_outcome(tmp_path: Path) -> None:
    tasks = [multiply_task(i) for i in range(30)]
    tasks[7]["metadata"]["script"] = tasks[7]["metadata"]["script"][:1]  # the script runs out: an error
    tasks[8]["check"] = {"answer_equals": "It is 0."}  # a wrong expectation: not solved
    results = [
        r
        async for r in run_batch(
            tasks, make_agent, concurrency=8, transcript_dir=tmp_path / "runs", skip_ids={"m29"}
        )
    ]
    by_id = {r.id: r for r in results}
    assert len(results) == len(by_id) == 29
    assert "m29" not in by_id
    good = by_id["m3"]
    assert (good.answer, good.stop_reason, good.steps, good.tool_calls, good.solved) == (
        "It is 9.",
        "final_answer",
        2,
        1,
        True,
    )
    assert good.usage["completion_tokens"] > 0
    assert good.wall_s > 0
    assert good.error is None
    assert good.transcript is not None
    assert is_file(good.transcript)
    assert by_id["m7"].error_type == "ScriptExhaustedError"
    assert by_id["m7"].solved is False
    assert by_id["m8"].solved is False
    assert by_id["m8"].error is None
    assert sum(r.solved is True for r in results) == 27


async def test_a_configuration_error_stops_the_batch() -> None:
    def broken(task: BatchTask, tools: list[Tool[Any, Any]]) -> Agent:
        from agent.models.errors import ModelConfigurationError

        raise ModelConfigurationError("no such model file: /nowhere.gguf")

    with pytest.raises(BatchAbortedError, match="no such model file"):
        async for _ in run_batch([multiply_task(1)], broken, concurrency=2):
            pass


async def test_closing_the_iterator_early_cancels_the_rest() -> None:
    started: list[str] = []

    async def slow(task: BatchTask, tools: list[Tool[Any, Any]]) -> Agent:
        started.append(task.id)
        if task.id != "m0":
            await asyncio.sleep(30)
        return make_agent(task, tools)

    stream = run_batch([multiply_task(i) for i in range(6)], slow, concurrency=3)
    began = time.monotonic()
    async with contextlib.aclosing(stream):
        async for result in stream:
            assert result.id == "m0"
            break
    assert time.monotonic() - began < 10
    # the worker that finished m0 may have taken the next task before the loop stopped; no other started
    assert set(started) <= {"m0", "m1", "m2", "m3"}


# ------------------------------------------------------------------------------------------ the CLI, Docker


@pytest.mark.docker
@pytest.mark.slow
def test_batch_command_runs_sandboxed_tasks_and_resumes(tmp_path: Path, h: Any, docker_engine: None) -> None:
    tasks = h.write_tasks(tmp_path / "tasks.jsonl", [h.sandbox_task(i) for i in range(10)])
    out = tmp_path / "results.jsonl"
    done = h.run_cli("batch", str(tasks), "-o", str(out), "-j", "4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    got = h.rows(out)
    assert sorted(r["id"] for r in got) == sorted(f"task-{i}" for i in range(10))
    assert all(r["stop_reason"] == "final_answer" and r["tool_calls"] == 1 for r in got)
    assert sum(r["solved"] for r in got) == 8
    assert all((tmp_path / r["transcript"]).is_file() for r in got)
    assert "solved 8/10 (80%)" in done.stderr
    assert "tasks run" in done.stderr
    assert h.batch_containers(batch_id_for(out)) == []

    # the same file again: refused without --resume; with it, only the new tasks run
    again = h.run_cli("batch", str(tasks), "-o", str(out), cwd=tmp_path)
    assert again.returncode == 2
    assert "--resume" in again.stderr
    more = h.write_tasks(tmp_path / "tasks.jsonl", [h.sandbox_task(i) for i in range(12)])
    resumed = h.run_cli("batch", str(more), "-o", str(out), "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "10 task(s) already in" in resumed.stderr
    assert sorted(r["id"] for r in h.rows(out)) == sorted(f"task-{i}" for i in range(12))


@pytest.mark.docker
@pytest.mark.slow
def test_scripted_file_and_errors_in_rows(tmp_path: Path, h: Any, docker_engine: None) -> None:
    tasks = h.write_tasks(
        tmp_path / "tasks.jsonl",
        [{"id": "a", "task": "say hi", "tools": "none"}, {"id": "b", "task": "say hi", "tools": "none"}],
    )
    scripts = tmp_path / "scripts.json"
    scripts.write_text(json.dumps({"a": [completion_text("Hi.", content="hi")], "b": []}))
    out = tmp_path / "results.jsonl"
    done = h.run_cli("batch", str(tasks), "-o", str(out), "--scripted", str(scripts), cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # task b's run failed: its row says why
    by_id = {r["id"]: r for r in h.rows(out)}
    assert by_id["a"]["answer"] == "hi"
    assert by_id["a"]["error"] is None
    assert by_id["b"]["error_type"] == "ScriptExhaustedError"
    assert "Traceback" not in done.stderr


def test_batch_command_refuses_bad_input_with_a_message(tmp_path: Path, h: Any) -> None:
    tasks = h.write_tasks(tmp_path / "tasks.jsonl", [{"id": "a", "task": "t", "tools": ["browser"]}])
    bad = h.run_cli("batch", str(tasks), "-o", str(tmp_path / "r.jsonl"), cwd=tmp_path)
    assert bad.returncode == 2
    assert "unknown tool(s) browser" in bad.stderr
    h.write_tasks(tasks, [{"id": "a", "task": "t", "tools": []}])
    no_model = h.run_cli(
        "batch",
        str(tasks),
        "-o",
        str(tmp_path / "r.jsonl"),
        "--model",
        str(tmp_path / "absent.gguf"),
        cwd=tmp_path,
    )
    assert no_model.returncode == 2
    assert "absent.gguf does not exist" in no_model.stderr
    assert "Traceback" not in bad.stderr + no_model.stderr


@pytest.mark.docker
@pytest.mark.slow
def test_ctrl_c_cancels_running_tasks_and_leaves_no_container(
    tmp_path: Path, h: Any, docker_engine: None
) -> None:
    tasks = h.write_tasks(tmp_path / "tasks.jsonl", [h.sandbox_task(i, sleep=20) for i in range(8)])
    out = tmp_path / "results.jsonl"
    process = subprocess.Popen(
        h.cli("batch", str(tasks), "-o", str(out), "-j", "3"),
        cwd=tmp_path,
        env=h.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    batch_id = batch_id_for(out)
    try:
        deadline = time.monotonic() + 120
        while len(h.batch_containers(batch_id)) < 3:  # three tasks are in their sandboxes
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "the tasks never started"
            time.sleep(0.5)
        time.sleep(2)  # now they sleep inside their python calls
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert "continue with --resume" in err
    assert "Traceback" not in err
    assert h.rows(out) == []
    assert h.batch_containers(batch_id) == []
