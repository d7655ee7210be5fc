"""`qwq-agent solve` through the real entry point (a subprocess), with scripted model outputs.

The sandbox is real: the scripted agent writes files and runs them in a hardened container, the solve loop
runs the solution once more itself, and official tests (for HumanEval-style problems) run in a fresh one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.evals.problems import load_humaneval

REPO = Path(__file__).resolve().parents[2]

PROBLEM_MD = """\
# Run-length encoding

Write a function `rle(s: str) -> str` that replaces each run of a repeated character by the character
followed by the run's length, omitting lengths of 1: `rle("aaabcc") == "a3bc2"`, `rle("") == ""`.
Running the file prints `rle("aaabcc")`.
"""

SOLUTION = """\
import itertools


def rle(s: str) -> str:
    return "".join(c + (str(n) if (n := len(list(g))) > 1 else "") for c, g in itertools.groupby(s))


if __name__ == "__main__":
    print(rle("aaabcc"))
"""

TESTS = """\
from solution import rle

assert rle("aaabcc") == "a3bc2"
assert rle("") == ""
assert rle("abc") == "abc"
assert rle("zzzzzzzzzzzz") == "z12"
print("all tests passed")
"""


def turn(thinking: str, name: str | None = None, **arguments: object) -> str:
    if name is None:
        return f"{thinking}\n</think>\n\nsolution.py encodes runs with itertools.groupby; my tests pass."
    call = json.dumps({"name": name, "arguments": arguments})
    return f"{thinking}\n</think>\n\n<tool_call>\n{call}\n</tool_call>"


def solve_cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", "solve", *args, "--transcript-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "120", **(env or {})},
        check=False,
        timeout=300,
    )


def write_script(tmp_path: Path, outputs: list[str]) -> Path:
    path = tmp_path / "script.json"
    path.write_text(json.dumps(outputs))
    return path


@pytest.fixture
def docker() -> Iterator[None]:
    """A real engine (else skip); afterwards no container may outlive the CLI process that made it."""
    from sandboxes._engine import find_containers, get_client, owner_alive
    from sandboxes.errors import DockerUnavailableError

    try:
        client = get_client()
    except DockerUnavailableError as exc:
        pytest.skip(f"Docker engine unavailable: {exc}")

    def orphans() -> set[str]:
        return {c.id for c in find_containers(client) if owner_alive(c.labels) is False}

    before = orphans()
    yield
    assert orphans() - before == set(), "a sandbox container outlived the process that made it"


@pytest.mark.docker
@pytest.mark.usefixtures("docker")
def test_markdown_problem_solution_is_written_tested_run_and_copied_out(tmp_path: Path) -> None:
    (tmp_path / "rle.md").write_text(PROBLEM_MD)
    script = write_script(
        tmp_path,
        [
            turn("A groupby does it.", "write_file", path="solution.py", content=SOLUTION),
            turn("Now my own tests.", "write_file", path="test_solution.py", content=TESTS),
            turn(
                "Run them, then the file.", "shell", command="python3 test_solution.py && python3 solution.py"
            ),
            turn("All passed."),
        ],
    )
    output = tmp_path / "out" / "rle.py"
    proc = solve_cli(
        tmp_path, "rle.md", "--scripted", str(script), "--output", str(output), "--hide-thinking"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert output.read_text() == SOLUTION
    report = proc.stdout + proc.stderr
    assert "final run (python3 solution.py): ok" in report
    assert "a3bc2" in report  # what the loop's own run of the file printed
    assert "ran by the agent after its last change: yes" in report
    assert "official test" not in report  # a Markdown problem has none
    assert list((tmp_path / "runs").glob("*.jsonl"))


@pytest.mark.docker
@pytest.mark.usefixtures("docker")
def test_humaneval_json_problem_gets_its_official_test_in_a_fresh_sandbox(tmp_path: Path) -> None:
    problem = load_humaneval()[0]
    data = {
        "task_id": problem.task_id,
        "prompt": problem.prompt,
        "entry_point": problem.entry_point,
        "test": problem.test,
    }
    (tmp_path / "problem.json").write_text(json.dumps(data))
    good = [
        turn("Write it.", "write_file", path="solution.py", content=problem.canonical_program),
        turn(
            "Run it.",
            "python",
            code="exec(open('solution.py').read())\nprint(has_close_elements([1.0, 2.0], 0.5))",
        ),
        turn("Done."),
    ]
    proc = solve_cli(tmp_path, "problem.json", "--scripted", str(write_script(tmp_path, good)), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = [json.loads(line) for line in proc.stdout.splitlines() if '"solve_result"' in line]
    assert len(results) == 1
    assert results[0]["solved"] is True
    assert results[0]["official_test_passed"] is True
    assert results[0]["ran_by_agent"] is True

    wrong = [
        turn(
            "Write it.",
            "write_file",
            path="solution.py",
            content="def has_close_elements(n, t):\n    return True\n",
        ),
        turn("Done."),
    ]
    proc = solve_cli(tmp_path, "problem.json", "--scripted", str(write_script(tmp_path, wrong)), "--quiet")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "official test (fresh sandbox): FAILED (AssertionError)" in proc.stderr
    assert "ran by the agent after its last change: no" in proc.stderr


@pytest.mark.docker
@pytest.mark.usefixtures("docker")
def test_no_solution_file_is_reported_and_exits_1(tmp_path: Path) -> None:
    outputs = [turn("Just look around.", "shell", command="ls -la"), turn("Done.")]
    output = tmp_path / "never.py"
    proc = solve_cli(
        tmp_path,
        "Print the first ten primes.",
        "--scripted",
        str(write_script(tmp_path, outputs)),
        "--output",
        str(output),
        "--quiet",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "solution: none" in proc.stderr
    assert not output.exists()


def test_without_a_model_or_network_it_says_how_to_name_one(tmp_path: Path) -> None:
    (tmp_path / "p.md").write_text(PROBLEM_MD)
    env = {
        "HF_HUB_OFFLINE": "1",
        "HF_HOME": str(tmp_path / "hf"),
        "QWQ_AGENT_MODEL": "",
        "QWQ_AGENT_BASE_URL": "",
    }
    proc = solve_cli(tmp_path, "p.md", env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "--model" in proc.stderr
    assert "--base-url" in proc.stderr


def test_a_missing_problem_file_is_a_usage_error(tmp_path: Path) -> None:
    proc = solve_cli(tmp_path, "nothere.md", "--scripted", str(write_script(tmp_path, [])))
    assert proc.returncode == 2
    assert "no such file: nothere.md" in proc.stderr


@pytest.mark.docker
@pytest.mark.llama
@pytest.mark.slow
@pytest.mark.usefixtures("docker")
def test_in_process_gguf_through_solve_ends_cleanly(tmp_path: Path) -> None:
    """The real llama.cpp path: a tiny random-weight Qwen2 GGUF with QwQ-32B's tokenizer. Its text is noise,
    so it leaves no solution; what is tested is that model selection, the loop, the sandbox and the report
    work end to end with it, and that the outcome is an honest exit code 1, not a crash."""
    pytest.importorskip("llama_cpp")
    pytest.importorskip("gguf")
    from agent.models.tiny import write_tiny_qwen2_gguf

    model = write_tiny_qwen2_gguf(tmp_path / "tiny.gguf")
    (tmp_path / "p.md").write_text(PROBLEM_MD)
    proc = solve_cli(
        tmp_path,
        "p.md",
        "--model",
        str(model),
        "--threads",
        "1",
        "--n-ctx",
        "4096",
        "--max-tokens",
        "48",
        "--max-steps",
        "2",
        "--seed",
        "1",
        "--quiet",
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "run: " in proc.stderr
    assert "solution: none" in proc.stderr
