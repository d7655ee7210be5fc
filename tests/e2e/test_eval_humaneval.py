"""`qwq-agent eval humaneval` through the real entry point (a subprocess) against the real Docker engine.

The model is scripted: for each problem it writes a given solution with the `write_file` tool, runs it with
the `shell` tool and answers. The checks run in real fresh sandboxes; nothing of the sandbox is mocked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.evals.problems import Problem, load_humaneval

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", autouse=True)
def _engine() -> None:
    from sandboxes.errors import DockerUnavailableError

    try:
        from sandboxes._engine import get_client

        get_client()
    except DockerUnavailableError as exc:
        pytest.skip(f"Docker engine unavailable: {exc}")


@pytest.fixture
def no_leftovers() -> Iterator[None]:
    """No sandbox container may outlive the CLI process that made it (judged by owner label)."""
    from sandboxes._engine import find_containers, get_client, owner_alive

    def orphans() -> set[str]:
        return {c.id for c in find_containers(get_client()) if owner_alive(c.labels) is False}

    before = orphans()
    yield
    assert orphans() - before == set(), "a sandbox container outlived the process that made it"


def turn(thinking: str, name: str | None = None, **arguments: object) -> str:
    """One completion in QwQ-32B's format: reasoning, `</think>`, then a tool call or a final answer."""
    if name is None:
        return f"{thinking}\n</think>\n\nThe solution is in solution.py; it runs."
    call = json.dumps({"name": name, "arguments": arguments})
    return f"{thinking}\n</think>\n\n<tool_call>\n{call}\n</tool_call>"


def solving_script(problem: Problem, solution: str | None) -> list[str]:
    """Write `solution` to solution.py (None: write nothing), run it, answer."""
    outputs = []
    if solution is not None:
        outputs.append(turn("I write the solution file.", "write_file", path="solution.py", content=solution))
    check = f"python3 solution.py && python3 -c 'import solution; print(solution.{problem.entry_point})'"
    outputs.append(turn("Now I run it.", "shell", command=check))
    outputs.append(turn("It ran."))
    return outputs


def eval_cli(tmp_path: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "120"}
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "eval", "humaneval", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
        timeout=timeout,
    )


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.usefixtures("no_leftovers")
def test_scripted_agent_writes_the_canonical_solutions_and_all_pass_then_resume_adds_only_the_rest(
    tmp_path: Path,
) -> None:
    problems = load_humaneval()[:3]
    script = tmp_path / "script.json"
    script.write_text(json.dumps({p.task_id: solving_script(p, p.canonical_program) for p in problems}))
    output = tmp_path / "results.jsonl"
    common = ["--scripted", str(script), "--output", str(output), "--transcript-dir", str(tmp_path / "runs")]

    first = eval_cli(tmp_path, "--limit", "2", *common)
    assert first.returncode == 0, first.stdout + first.stderr
    assert {r["task_id"] for r in rows(output)} == {"HumanEval/0", "HumanEval/1"}

    # A kill mid-write leaves half a line; resume must neither choke on it nor glue the next row to it.
    with output.open("a") as f:
        f.write('{"task_id": "HumanEval/2", "kind": "ag')
    second = eval_cli(tmp_path, "--limit", "3", "--concurrency", "2", "--resume", *common)
    assert second.returncode == 0, second.stdout + second.stderr
    written = [json.loads(x) for x in output.read_text().splitlines() if x.endswith("}")]
    assert sorted(r["task_id"] for r in written) == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    for row in written:
        assert row["kind"] == "agent"
        assert row["passed"] is True, row
        assert row["error"] is None
        assert row["steps"] == 3
        assert row["tool_calls"] == 2
        assert row["stop_reason"] == "final_answer"
        assert row["solution_found"]
        assert row["final_run_ok"]
        assert row["ran_by_agent"]
        assert row["tokens"] == row["prompt_tokens"] + row["completion_tokens"] > 0
        assert row["duration_s"] > 0
        assert row["check_s"] > 0
        assert Path(row["transcript"]).is_file()
    assert "pass@1" in second.stdout
    assert "100.0%" in second.stdout
    assert "HumanEval/2" in second.stderr
    assert "HumanEval/0" not in second.stderr


@pytest.mark.usefixtures("no_leftovers")
def test_wrong_missing_and_exiting_solutions_fail(tmp_path: Path) -> None:
    problems = load_humaneval()[:3]
    wrong, missing, exiting = problems
    script = {
        wrong.task_id: solving_script(wrong, f"def {wrong.entry_point}(*args):\n    return None\n"),
        missing.task_id: solving_script(missing, None),
        exiting.task_id: solving_script(exiting, "import os\nos._exit(0)\n"),
    }
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    output = tmp_path / "results.jsonl"
    proc = eval_cli(
        tmp_path, "--limit", "3", "-j", "3", "--scripted", str(path), "--output", str(output), "--quiet"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the agent failing is a result, not an error
    by_id = {r["task_id"]: r for r in rows(output)}
    assert by_id[wrong.task_id]["passed"] is False
    assert by_id[wrong.task_id]["error"] == "AssertionError"
    assert by_id[missing.task_id]["passed"] is False
    assert by_id[missing.task_id]["solution_found"] is False
    assert "no solution file" in by_id[missing.task_id]["error"]
    assert by_id[exiting.task_id]["passed"] is False
    assert "the solution's process ended" in by_id[exiting.task_id]["error"]
    assert "0.0%" in proc.stdout


@pytest.mark.usefixtures("no_leftovers")
def test_check_harness_canonical_pass_and_broken_fail(tmp_path: Path) -> None:
    output = tmp_path / "harness.jsonl"
    proc = eval_cli(
        tmp_path, "--limit", "5", "--check-harness", "--concurrency", "2", "--output", str(output)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    written = rows(output)
    assert len(written) == 5 * 6
    canonical = [r for r in written if r["kind"] == "canonical"]
    broken = [r for r in written if r["kind"] == "broken"]
    assert sorted(r["task_id"] for r in canonical) == [f"HumanEval/{i}" for i in range(5)]
    assert all(r["passed"] for r in canonical), canonical
    assert {r["variant"] for r in broken} == {"raise", "constant", "exit", "frame", "always-equal"}
    assert not any(r["passed"] for r in broken), broken
    assert all(r["ok"] for r in written)
    assert "OK" in proc.stdout


def _problem_line(task_id: str, canonical: str, test: str) -> str:
    return json.dumps(
        {
            "task_id": task_id,
            "prompt": "def f(x):\n    '''Return x + 1.'''\n",
            "entry_point": "f",
            "canonical_solution": canonical,
            "test": test,
        }
    )


@pytest.mark.usefixtures("no_leftovers")
def test_check_harness_fails_when_the_reference_fails_or_a_broken_solution_passes(tmp_path: Path) -> None:
    good_test = "def check(candidate):\n    assert candidate(1) == 2\n"
    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        "\n".join(
            [
                _problem_line("ok/0", "    return x + 1\n", good_test),
                _problem_line("wrong-reference/1", "    return x\n", good_test),
                # A test that asserts nothing lets every broken solution through.
                _problem_line("toothless-test/2", "    return x + 1\n", "def check(candidate):\n    pass\n"),
            ]
        )
    )
    output = tmp_path / "harness.jsonl"
    proc = eval_cli(
        tmp_path, "--problems", str(problems), "--check-harness", "--broken", "raise", "--output", str(output)
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    by_key = {(r["task_id"], r["kind"]): r for r in rows(output)}
    assert by_key["ok/0", "canonical"]["ok"]
    assert by_key["ok/0", "broken"]["ok"]
    assert not by_key["wrong-reference/1", "canonical"]["ok"]
    assert not by_key["toothless-test/2", "broken"]["ok"]
    assert "WRONG" in proc.stdout


@pytest.mark.usefixtures("no_leftovers")
def test_checks_run_in_the_sandbox_not_on_the_host(tmp_path: Path) -> None:
    """The check asserts what only the sandbox has: its hostname, no network, a read-only root; and a file
    the solution writes does not appear on the host."""
    marker = tmp_path / "written-by-the-check"
    test = (
        "def check(candidate):\n"
        "    import os, socket\n"
        "    assert candidate(1) == 2\n"
        "    assert socket.gethostname() == 'sandbox'\n"
        "    assert os.getcwd() == '/workspace'\n"
        "    try:\n"
        f"        open({str(marker)!r}, 'w').close()\n"
        "    except OSError:\n"
        "        pass\n"
        "    try:\n"
        "        socket.create_connection(('1.1.1.1', 53), timeout=2)\n"
        "    except OSError:\n"
        "        pass\n"
        "    else:\n"
        "        raise AssertionError('the check had network access')\n"
        "    try:\n"
        "        open('/etc/escaped', 'w')\n"
        "    except OSError:\n"
        "        pass\n"
        "    else:\n"
        "        raise AssertionError('the root filesystem was writable')\n"
    )
    problems = tmp_path / "problems.jsonl"
    problems.write_text(_problem_line("isolated/0", "    return x + 1\n", test))
    output = tmp_path / "harness.jsonl"
    proc = eval_cli(
        tmp_path, "--problems", str(problems), "--check-harness", "--broken", "raise", "--output", str(output)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert all(r["ok"] for r in rows(output)), rows(output)
    assert not marker.exists()


# Solutions that try to pass without solving: each reaches for the test's state or fakes a comparison.
CHEATS = {
    "eq-subclass": "class _Int(int):\n    def __eq__(self, other):\n        return True\n"
    "    __hash__ = int.__hash__\n\ndef f(x):\n    return _Int(0)\n",
    "patch-builtins": "import builtins\nbuiltins.AssertionError = type('Never', (Exception,), {})\n"
    "def f(x):\n    return 0\n",
    "kill-the-test": "import os, signal\ndef f(x):\n    os.kill(os.getppid(), signal.SIGKILL)\n",
    "read-the-tests-memory": "import os\ndef f(x):\n"
    "    data = open(f'/proc/{os.getppid()}/mem', 'rb')\n    return 0\n",
    "huge-nesting": "def f(x):\n    v = []\n    for _ in range(10000):\n        v = [v]\n    return v\n",
    "forged-answer": 'import os, json\ndef f(x):\n    os.write(4, b\'{"value": {"list": 5}}\\n\')\n'
    "    return 0\n",
}


@pytest.mark.usefixtures("no_leftovers")
def test_solutions_that_cheat_fail(tmp_path: Path) -> None:
    """Beside the broken variants of --check-harness (frame, always-equal): other ways to fake a pass."""
    test = "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(5) == 6\n"
    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        "\n".join(_problem_line(f"cheat/{name}", "    return x + 1\n", test) for name in CHEATS)
    )
    script = {
        f"cheat/{name}": [
            turn("I write it.", "write_file", path="solution.py", content=code),
            turn("Done."),
        ]
        for name, code in CHEATS.items()
    }
    path = tmp_path / "script.json"
    path.write_text(json.dumps(script))
    output = tmp_path / "results.jsonl"
    proc = eval_cli(
        tmp_path, "--problems", str(problems), "-j", "2", "--scripted", str(path), "--output", str(output)
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    by_id = {r["task_id"]: r for r in rows(output)}
    assert set(by_id) == {f"cheat/{name}" for name in CHEATS}
    passed = {task for task, row in by_id.items() if row["passed"]}
    assert passed == set(), {task: by_id[task] for task in passed}


def test_usage_errors_exit_2_and_say_what_to_do(tmp_path: Path) -> None:
    output = tmp_path / "results.jsonl"
    output.write_text('{"task_id": "HumanEval/0", "kind": "agent", "passed": true}\n')
    proc = eval_cli(tmp_path, "--limit", "1", "--check-harness", "--output", str(output))
    assert proc.returncode == 2
    assert "--resume" in proc.stderr

    proc = eval_cli(
        tmp_path, "--tasks", "HumanEval/999", "--check-harness", "--output", str(tmp_path / "x.jsonl")
    )
    assert proc.returncode == 2
    assert "HumanEval/999" in proc.stderr

    proc = eval_cli(
        tmp_path, "--problems", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "y.jsonl")
    )
    assert proc.returncode == 2
    assert "missing.jsonl" in proc.stderr
