"""The config file gives defaults to command-line options; the command line and environment outrank it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.transcript import read_transcript


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("QWQ_AGENT_")}
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environment,
    )


def test_config_file_supplies_defaults_and_the_command_line_wins(tmp_path: Path) -> None:
    (tmp_path / "script.json").write_text(json.dumps(["ok\n</think>\n\ndone"]))
    (tmp_path / "qwq-agent.toml").write_text(
        '[defaults]\nmax-steps = 3\n\n[run]\ntools = "none"\ntranscript-dir = "from-config"\nscripted = "script.json"\n'
    )
    proc = run(tmp_path, "run", "task", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n"
    (transcript,) = (tmp_path / "from-config").glob("*.jsonl")
    record = read_transcript(transcript)
    assert record.config["max_steps"] == 3
    assert record.config["tools"] == []

    proc = run(tmp_path, "run", "task", "--quiet", "--max-steps", "7", "--transcript-dir", "cli")
    assert proc.returncode == 0, proc.stderr
    (transcript,) = (tmp_path / "cli").glob("*.jsonl")
    assert read_transcript(transcript).config["max_steps"] == 7


def test_environment_outranks_the_file_and_explicit_file_is_used(tmp_path: Path) -> None:
    config = tmp_path / "elsewhere.toml"
    config.write_text('[run]\nmodel = "/nonexistent/from-file.gguf"\ntools = "none"\n')
    proc = run(tmp_path, "run", "task", env={"QWQ_AGENT_CONFIG": str(config)})
    assert proc.returncode == 2
    assert "from-file.gguf" in proc.stderr  # the file's model was used, and its absence explained
    proc = run(
        tmp_path,
        "run",
        "task",
        env={"QWQ_AGENT_CONFIG": str(config), "QWQ_AGENT_MODEL": "/nonexistent/env.gguf"},
    )
    assert proc.returncode == 2
    assert "env.gguf" in proc.stderr
    # a server named in the file does not win over a model named in the environment
    config.write_text('[run]\nbase-url = "http://127.0.0.1:9/v1"\ntools = "none"\n')
    proc = run(
        tmp_path,
        "run",
        "task",
        env={"QWQ_AGENT_CONFIG": str(config), "QWQ_AGENT_MODEL": "/nonexistent/env.gguf"},
    )
    assert proc.returncode == 2
    assert "env.gguf" in proc.stderr


def test_unknown_option_in_the_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "qwq-agent.toml").write_text("[run]\nmax-stpes = 3\n")
    proc = run(tmp_path, "run", "task")
    assert proc.returncode == 2
    assert "max_stpes" in proc.stderr
    assert "max-steps" in proc.stderr


@pytest.mark.parametrize(
    "content",
    [b"\xff\xfe not UTF-8", b"[" * 100_000 + b"]" * 100_000, b"[" + b"9" * 5_000 + b"]", b"[NaN"],
    ids=["not-utf8", "deep", "huge-number", "broken"],
)
def test_a_script_that_cannot_be_read_is_a_configuration_error(tmp_path: Path, content: bytes) -> None:
    from agent.cli.common import ConfigurationError, load_script

    path = tmp_path / "script.json"
    path.write_bytes(content)
    with pytest.raises(ConfigurationError, match="script"):
        load_script(path)
