"""Container runtimes: runc and gVisor's runsc, chosen in `SandboxConfig`, on the command line or in the config file.

The runsc cases are skipped, saying why, only where the engine has no runsc (`.ci/install_docker.sh` registers
it). Inside gVisor the kernel the code sees is gVisor's, which reports release 4.4.0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from sandboxes import DockerSandbox, SandboxConfig, SandboxStartError

pytestmark = pytest.mark.docker

GVISOR_RELEASE = "4.4.0"


def test_the_sandbox_really_runs_under_its_runtime(
    sandbox_image: str, runtime: str, docker_client: Any
) -> None:
    with DockerSandbox(sandbox_image, config=SandboxConfig(runtime=runtime)) as sb:
        assert sb.container_id is not None
        inspected = docker_client.api.inspect_container(sb.container_id)
        assert inspected["HostConfig"]["Runtime"] == runtime
        release = sb.run_python("import platform; platform.release()").value
        dmesg = sb.run_shell("dmesg 2>/dev/null | head -n 3").stdout
        hardening = inspected["HostConfig"]
        assert hardening["NetworkMode"] == "none"
        assert hardening["ReadonlyRootfs"] is True
        assert hardening["CapDrop"] == ["ALL"]
    if runtime == "runsc":
        assert release == repr(GVISOR_RELEASE)
        assert "gVisor" in dmesg
    else:
        assert release != repr(GVISOR_RELEASE)
        assert release == repr(os.uname().release)  # runc: the host's own kernel


def test_the_default_is_the_engines_default_runtime(sandbox_image: str, docker_client: Any) -> None:
    with DockerSandbox(sandbox_image) as sb:
        assert sb.container_id is not None
        inspected = docker_client.api.inspect_container(sb.container_id)
    assert inspected["HostConfig"]["Runtime"] == docker_client.info()["DefaultRuntime"]


def test_an_unregistered_runtime_says_what_to_do(sandbox_image: str, engine_runtimes: set[str]) -> None:
    assert "nosuch" not in engine_runtimes
    with pytest.raises(SandboxStartError, match=r"no runtime 'nosuch'.*qwq-agent sandbox doctor"):
        DockerSandbox(sandbox_image, config=SandboxConfig(runtime="nosuch")).start()


@pytest.mark.parametrize("name", ["", "runsc --debug", "../runc", "a" * 65])
def test_runtime_names_are_checked(name: str) -> None:
    with pytest.raises(ValidationError):
        SandboxConfig(runtime=name)


def test_doctor_lists_the_runtimes_and_checks_the_one_asked_for(
    sandbox_image: str, engine_runtimes: set[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main
    from agent.cli.sandbox import _doctor

    main(["sandbox", "doctor"])
    out = capsys.readouterr().out
    assert "[ok] runtimes: " in out
    for name in engine_runtimes:
        assert name in out.split("[ok] runtimes: ")[1].splitlines()[0]
    if "runsc" not in engine_runtimes:
        assert "apt-get install runsc" in out
    else:
        assert main(["sandbox", "doctor", "--sandbox-runtime", "runsc"]) == 0
        assert "(runtime runsc, kernel 4.4.0)" in capsys.readouterr().out
    assert _doctor("nosuch") == 1
    out = capsys.readouterr().out
    assert "[!!] runtime nosuch is not registered with the engine" in out


# ----------------------------------------------------------------------------------------------- the CLI


def _cli(cwd: Path, *args: str, config: str | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("QWQ_AGENT_")}
    if config is not None:
        (cwd / "qwq-agent.toml").write_text(config)
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env=environment,
    )


def test_the_config_file_and_the_command_line_choose_the_runtime(tmp_path: Path, runtime: str) -> None:
    """`qwq-agent run` with the python tool, a scripted model, and the runtime from the file, then the CLI."""
    call = {"name": "python", "arguments": {"code": "import platform; print('kernel', platform.release())"}}
    script = [f"look\n</think>\n\n<tool_call>\n{json.dumps(call)}\n</tool_call>", "seen\n</think>\n\ndone"]
    (tmp_path / "script.json").write_text(json.dumps(script))
    config = f'[run]\ntools = "python"\nscripted = "script.json"\n\n[sandbox]\nruntime = "{runtime}"\n'
    proc = _cli(tmp_path, "run", "task", "--json", config=config)
    assert proc.returncode == 0, proc.stderr
    kernel = GVISOR_RELEASE if runtime == "runsc" else os.uname().release
    assert f"kernel {kernel}" in proc.stdout
    proc = _cli(tmp_path, "run", "task", "--json", "--sandbox-runtime", "runc")  # the command line wins
    assert proc.returncode == 0, proc.stderr
    assert f"kernel {os.uname().release}" in proc.stdout


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[sandbox]\nruntime = "kata"\n', "[sandbox] runtime = 'kata': choose from runc, runsc"),
        ('[sandbox]\nruntim = "runsc"\n', "[sandbox] has no setting runtim; settings: runtime"),
        ('sandbox = "runsc"\n', "[sandbox] must be a table"),
    ],
)
def test_a_bad_sandbox_table_is_a_configuration_error(tmp_path: Path, table: str, message: str) -> None:
    proc = _cli(tmp_path, "sandbox", "doctor", config=table)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
