"""`qwq-agent report` and `qwq-agent eval --report` through the real entry point (a subprocess).

The eval test runs the real evaluation against the real Docker engine with a scripted model, as
tests/e2e/test_eval_humaneval.py does, and checks the page it writes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent import Agent
from agent.models import ScriptedModel, completion_text, tool_call_text

REPO = Path(__file__).resolve().parents[2]


def qwq_agent(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"},
        check=False,
        timeout=timeout,
    )


def double(x: int) -> int:
    """Double a number."""
    return 2 * x


def transcript(tmp_path: Path) -> Path:
    outputs = [
        completion_text("Double it.", tool_call_text("double", {"x": 21})),
        completion_text("That is it.", content="42"),
    ]
    result = Agent(ScriptedModel(outputs), [double], transcript_dir=tmp_path).run_sync("Double 21.")
    assert result.transcript_path is not None
    return result.transcript_path


def test_report_writes_the_page_of_a_transcript(tmp_path: Path) -> None:
    path = transcript(tmp_path)
    out = tmp_path / "pages" / "run.html"
    done = qwq_agent("report", str(path), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"report: {out}"
    html = out.read_text(encoding="utf-8")
    assert "Double 21." in html
    assert html.count('<article class="card step') == 2
    # without -o, the page goes beside the file
    again = qwq_agent("report", str(path))
    assert again.returncode == 0, again.stderr
    assert path.with_suffix(".html").is_file()


def test_report_says_what_is_wrong_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not json\n")
    for name, message in [
        ("notes.txt", "does not start with a JSON line"),
        ("absent.jsonl", "no file at"),
    ]:
        done = qwq_agent("report", str(tmp_path / name), "-o", str(tmp_path / "x.html"))
        assert done.returncode == 2
        assert message in done.stderr
        assert "Traceback" not in done.stderr
    unwritable = qwq_agent("report", str(transcript(tmp_path)), "-o", str(tmp_path / "notes.txt" / "x.html"))
    assert unwritable.returncode == 2
    assert "cannot write" in unwritable.stderr
    assert "Traceback" not in unwritable.stderr


def test_report_keeps_the_cli_start_light() -> None:
    """Building the `report` command's parser imports neither the report machinery nor its template engine."""
    program = (
        "import sys\n"
        "from agent.cli import build_parser\n"
        "build_parser('report').parse_args(['report', 'x.jsonl'])\n"
        "print(sorted(m for m in ('jinja2', 'pydantic', 'agent.reports', 'agent.transcript') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.docker
def test_eval_writes_its_report(tmp_path: Path) -> None:
    from agent.evals.problems import load_humaneval
    from sandboxes.errors import DockerUnavailableError

    try:
        from sandboxes._engine import get_client

        get_client()
    except DockerUnavailableError as exc:
        pytest.skip(f"Docker engine unavailable: {exc}")

    def solving(solution: str) -> list[str]:
        write = tool_call_text("write_file", {"path": "solution.py", "content": solution})
        return [completion_text("I write it.", write), completion_text("Written.", content="In solution.py.")]

    first, second = load_humaneval()[:2]
    script = {
        first.task_id: solving(first.canonical_program),
        second.task_id: solving(f"def {second.entry_point}(*args):\n    return None\n"),
    }
    (tmp_path / "script.json").write_text(json.dumps(script))
    done = qwq_agent(
        "eval",
        "humaneval",
        "--limit",
        "2",
        "--scripted",
        "script.json",
        "--output",
        "he.jsonl",
        "--report",
        "he.html",
        cwd=tmp_path,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"report: {Path('he.html')}" in done.stderr
    html = (tmp_path / "he.html").read_text(encoding="utf-8")
    assert re.search(r'id="passed-count">1</b> of <b id="judged-count">2</b>', html)
    assert re.search(r'id="pass-rate">50.0%<', html)
    assert html.count('<tr class="task') == 2
    assert f"<code>{first.task_id}</code>" in html
    assert f"<code>{second.task_id}</code>" in html
    # each row links to its run's section, which holds the run read from its transcript
    assert re.findall(r'href="#(run-\d)"', html) == ["run-0", "run-1"]
    assert html.count('<span class="preview">I write it.</span>') == 2  # each run's first step
