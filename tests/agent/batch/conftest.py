"""Helpers of the batch tests: scripted task files, the CLI as a subprocess, the sandboxes a batch left."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.models import completion_text, tool_call_text

REPO = Path(__file__).resolve().parents[3]


def cli_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["COLUMNS"] = "120"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # the subprocess imports this checkout, as the test process does
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.update(extra)
    return env


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli", *args]


def run_cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli(*args), capture_output=True, text=True, cwd=cwd, env=cli_env(), check=False, timeout=timeout
    )


def sandbox_task(index: int, *, sleep: float = 0.0, checked: bool = True) -> dict[str, Any]:
    """A task whose script runs Python in the sandbox (optionally sleeping there), then answers."""
    code = (f"import time; time.sleep({sleep}); " if sleep else "") + f"print({index} * 7)"
    script = [
        completion_text("I compute it in Python.", tool_call_text("python", {"code": code})),
        completion_text("The tool printed it.", content=f"The answer is {index * 7}."),
    ]
    task: dict[str, Any] = {
        "id": f"task-{index}",
        "task": f"What is {index} * 7?",
        "tools": ["python"],
        "metadata": {"script": script},
    }
    if checked:
        # every fifth task's check expects a wrong number, so the solved rate is 80%
        task["check"] = {"answer_contains": str(index * 7 + (1 if index % 5 == 4 else 0))}
    return task


def write_tasks(path: Path, tasks: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(t) + "\n" for t in tasks))
    return path


def rows(path: Path) -> list[dict[str, Any]]:
    """Complete rows (a torn last line from a killed writer is not a row)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def batch_containers(batch_id: str) -> list[str]:
    """Ids of containers (running or not) labelled with this batch."""
    from sandboxes._engine import get_client

    found = get_client().containers.list(
        all=True, filters={"label": [f"qwq-agent.batch={batch_id}"]}, ignore_removed=True
    )
    return [c.id for c in found]


@pytest.fixture(scope="session")
def docker_engine() -> None:
    from sandboxes.errors import DockerUnavailableError

    try:
        from sandboxes._engine import get_client
        from sandboxes.image import DEFAULT_IMAGE, image_exists

        get_client()
    except DockerUnavailableError as exc:
        pytest.skip(f"Docker engine unavailable: {exc}")
    if not image_exists(DEFAULT_IMAGE):
        pytest.skip(f"the sandbox image {DEFAULT_IMAGE} is missing: qwq-agent sandbox build")


@pytest.fixture(scope="session")
def h() -> Any:
    """This module's helpers (test modules are not importable by name under --import-mode=importlib)."""
    return sys.modules[__name__]
