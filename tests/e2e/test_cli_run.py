"""`qwq-agent run` and `replay` through the real entry point (a subprocess), with scripted model outputs.

The sandbox is real: runs that use the python tool start a hardened container, and every test checks that no
container is left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.models import completion_text, tool_call_text
from agent.transcript import read_transcript

REPO = Path(__file__).resolve().parents[2]


def call(name: str, **arguments: object) -> str:
    return tool_call_text(name, arguments)


turn = completion_text


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """One `qwq-agent` command to its end, through the real entry point."""
    return subprocess.run(
        cli(*args), capture_output=True, text=True, cwd=REPO, check=False, timeout=timeout, env=env()
    )


def env() -> dict[str, str]:
    result = dict(os.environ)
    result["COLUMNS"] = "120"
    return result


def script(tmp_path: Path, outputs: list[str], name: str = "script.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(outputs))
    return path


def orphans() -> set[str]:
    """Our sandbox containers whose owning process is gone: what a CLI run that cleaned up leaves none of.

    Other processes (parallel test sessions, a user's runs) may own live sandboxes meanwhile; those are not
    leaks, so containers are judged by their owner label rather than counted.
    """
    from sandboxes._engine import find_containers, get_client, owner_alive

    return {c.id for c in find_containers(get_client()) if owner_alive(c.labels) is False}


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    before = orphans()
    yield
    assert orphans() - before == set(), "a sandbox container outlived the process that made it"


def test_help_lists_the_commands() -> None:
    proc = run_cli("--help", timeout=60)
    assert proc.returncode == 0, proc.stderr
    for command in ("run", "replay"):
        assert command in proc.stdout


def test_run_without_a_task_says_what_to_give() -> None:
    proc = run_cli("run", timeout=60)
    assert proc.returncode == 2
    assert "TASK" in proc.stderr


def test_quiet_run_without_tools_prints_only_the_answer(tmp_path: Path) -> None:
    outputs = script(tmp_path, [turn("easy", content="4")])
    proc = run_cli(
        "run",
        "2+2?",
        "--scripted",
        str(outputs),
        "--tools",
        "none",
        "--quiet",
        "--transcript-dir",
        str(tmp_path),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "4\n"
    (transcript,) = tmp_path.glob("*.jsonl")
    assert read_transcript(transcript).finished


@pytest.mark.docker
def test_live_view_shows_reasoning_calls_results_and_answer(tmp_path: Path, no_leftovers: None) -> None:
    outputs = script(
        tmp_path,
        [
            turn("I will compute it in Python.", call("python", code="print(sum(range(101)))")),
            turn("The sandbox printed 5050.", content="The sum is 5050."),
        ],
    )
    proc = run_cli(
        "run",
        "sum 0..100",
        "--scripted",
        str(outputs),
        "--tools",
        "python",
        "--transcript-dir",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "I will compute it in Python." in out
    assert "python" in out
    assert "5050" in out
    assert "The sum is 5050." in out
    assert "step 1" in out  # the status line, printed per step when stdout is not a terminal
    assert "transcript:" in proc.stderr + out


@pytest.mark.docker
def test_json_events_and_replay_rerun(tmp_path: Path, no_leftovers: None) -> None:
    outputs = script(
        tmp_path,
        [
            turn("define", call("python", code="x = 6 * 7")),
            turn("use it", call("python", code="print(x)")),
            turn("done", content="x is 42"),
        ],
    )
    proc = run_cli(
        "run",
        "remember x",
        "--scripted",
        str(outputs),
        "--tools",
        "python",
        "--json",
        "--transcript-dir",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    events = [json.loads(line) for line in proc.stdout.splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "final"
    assert events[-1]["answer"] == "x is 42"
    finished = [e for e in events if e["type"] == "tool_call_finished"]
    assert [e["result"]["content"].strip() for e in finished][1].endswith("42")
    (transcript,) = tmp_path.glob("*.jsonl")

    shown = run_cli("replay", str(transcript), "--json", timeout=120)
    assert shown.returncode == 0, shown.stderr
    replayed = [json.loads(line) for line in shown.stdout.splitlines()]

    def shape(items: list[dict[str, object]]) -> list[object]:
        # deltas arrive in other chunks when replayed: compare runs of a kind and the text they add up to
        runs: list[list[object]] = []
        for item in items:
            kind = item["type"]
            if kind == "step_end":
                continue
            text = item.get("text", "")
            if runs and runs[-1][0] == kind and kind.endswith("_delta"):  # type: ignore[union-attr]
                runs[-1][1] = str(runs[-1][1]) + str(text)
            else:
                runs.append([kind, text])
        return runs

    assert shape(replayed) == shape(events)

    rerun = run_cli("replay", str(transcript), "--rerun", "--quiet")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "matches" in rerun.stderr

    # a transcript whose recorded observation no longer holds is reported
    lines = transcript.read_text().splitlines()
    tampered = [json.loads(x) for x in lines]
    for record in tampered:
        if record["type"] == "step" and record["step"] == 2:
            record["messages"][1]["content"] = "41\n"
    bad = tmp_path / "tampered.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in tampered))
    differs = run_cli("replay", str(bad), "--rerun", "--quiet")
    assert differs.returncode == 1
    assert "differs" in differs.stderr


@pytest.mark.docker
def test_ctrl_c_saves_the_transcript_removes_the_sandbox_and_resume_continues(
    tmp_path: Path, no_leftovers: None
) -> None:
    outputs = script(
        tmp_path,
        [
            turn("first", call("python", code="print('one')")),
            turn("this takes long", call("python", code="import time; time.sleep(600)")),
        ],
    )
    orphans_before = orphans()
    proc = subprocess.Popen(
        cli(
            "run",
            "slow task",
            "--scripted",
            str(outputs),
            "--tools",
            "python",
            "--json",
            "--transcript-dir",
            str(tmp_path),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 240
    for line in proc.stdout:
        event = json.loads(line)
        if event["type"] == "tool_call_started" and event["step"] == 2:
            break
        assert time.monotonic() < deadline
    time.sleep(1.0)  # the long call is running in the sandbox now
    proc.send_signal(signal.SIGINT)
    try:
        code = proc.wait(timeout=120)
    finally:
        proc.kill()
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 130, err
    (transcript,) = tmp_path.glob("*.jsonl")
    assert f"qwq-agent run --resume {transcript}" in err  # the note names the file that exists
    record = read_transcript(transcript)
    assert record.steps == 1
    assert not record.finished
    # checked before the resumed run starts a sandbox, which would also sweep up a dead run's leftovers
    assert orphans() - orphans_before == set(), "the interrupted run left its sandbox behind"

    resumed_outputs = script(tmp_path, [turn("quick now", content="resumed fine")], name="resume.json")
    resumed = run_cli(
        "run", "--resume", str(transcript), "--scripted", str(resumed_outputs), "--tools", "python", "--quiet"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "resumed fine"
    final = read_transcript(transcript)
    assert final.finished
    assert final.steps == 2
