"""Fixtures for the sandbox tests: a real Docker engine and the real image (built here if missing).

The image build takes a few minutes the first time; its progress is printed straight to the terminal.
When the engine cannot be reached the docker tests are skipped with the reason; CI starts the engine first.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandboxes import DEFAULT_IMAGE, DockerSandbox, SandboxConfig
from sandboxes._engine import find_containers, get_client
from sandboxes.errors import DockerUnavailableError
from sandboxes.image import build_image, image_exists

# Small limits so hostile cases hit them quickly.
TIGHT = SandboxConfig(
    memory="256m", workspace_size="32m", tmp_size="16m", pids_limit=64, default_timeout=20, kill_grace=10
)


def _say(line: str) -> None:
    print(f"[sandbox image] {line}", file=sys.__stderr__, flush=True)


@pytest.fixture(scope="session")
def docker_client() -> object:
    try:
        return get_client()
    except DockerUnavailableError as exc:
        pytest.skip(f"Docker engine unavailable: {exc}")


@pytest.fixture(scope="session")
def sandbox_image(docker_client: object) -> str:
    if not image_exists(DEFAULT_IMAGE, client=docker_client):
        _say(f"{DEFAULT_IMAGE} is missing: building it (a few minutes)")
        build_image(DEFAULT_IMAGE, progress=_say, client=docker_client)
    return DEFAULT_IMAGE


@pytest.fixture(scope="session", autouse=True)
def _no_leftover_containers() -> Iterator[None]:
    """After the session, no sandbox container of this process may remain (checked by label)."""
    yield
    try:
        client = get_client()
    except DockerUnavailableError:
        return
    deadline = time.monotonic() + 20
    left = find_containers(client, owner_pid=os.getpid())
    while left and time.monotonic() < deadline:  # auto-removal is asynchronous in the engine
        time.sleep(0.2)
        left = find_containers(client, owner_pid=os.getpid())
    assert not left, f"sandbox containers left behind: {[c.name for c in left]}"


@pytest.fixture
def sb(sandbox_image: str) -> Iterator[DockerSandbox]:
    with DockerSandbox(sandbox_image, config=TIGHT) as sandbox:
        yield sandbox


@pytest.fixture(scope="session")
def engine_runtimes(docker_client: Any) -> set[str]:
    """The OCI runtimes registered with the engine (`runc`, and `runsc` where gVisor is installed)."""
    return set(docker_client.info().get("Runtimes") or {})


@pytest.fixture(params=["runc", "runsc"])
def runtime(request: pytest.FixtureRequest, engine_runtimes: set[str]) -> str:
    """Each runtime in turn; runsc is skipped, saying why, only where the engine does not have it."""
    name: str = request.param
    if name not in engine_runtimes:
        pytest.skip(
            f"the Docker engine has no runtime {name!r} (it has {', '.join(sorted(engine_runtimes))}); "
            "`bash .ci/install_docker.sh` installs gVisor's runsc and registers it"
        )
    return name


@pytest.fixture
def sb_on_runtime(sandbox_image: str, runtime: str) -> Iterator[DockerSandbox]:
    """A sandbox with the TIGHT limits under each runtime in turn (runc, runsc)."""
    with DockerSandbox(sandbox_image, config=TIGHT.model_copy(update={"runtime": runtime})) as sandbox:
        yield sandbox


@pytest.fixture
def unguarded_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sandboxes started in this test run a runner that leaves PID 1 dumpable, as a broken or tampered-with
    runner would: the code inside can then write frames straight to the host (`/proc/1/fd/4`), which is how
    the tests check that the host survives any frame. The real runner makes that impossible."""
    from sandboxes import docker_sandbox

    source = docker_sandbox._runner()
    unguarded = source.replace("\nGUARDED = True\n", "\nGUARDED = False\n")
    assert unguarded != source
    monkeypatch.setattr(docker_sandbox, "_runner_source", unguarded)


@pytest.fixture
def unguarded_sb_on_runtime(
    unguarded_runner: None, sandbox_image: str, runtime: str
) -> Iterator[DockerSandbox]:
    """`sb_on_runtime`, with the unguarded runner."""
    with DockerSandbox(sandbox_image, config=TIGHT.model_copy(update={"runtime": runtime})) as sandbox:
        assert sandbox.guarded is False
        yield sandbox


def assert_healthy(sandbox: DockerSandbox) -> None:
    """The normal call that must work after every hostile one."""
    r = sandbox.run_python("print(6 * 7)", timeout=20)
    assert r.ok, r
    assert r.stdout == "42\n"
    s = sandbox.run_shell("echo ok", timeout=20)
    assert s.ok, s
    assert s.stdout == "ok\n"


@pytest.fixture
def healthy() -> Callable[[DockerSandbox], None]:
    """`healthy(sandbox)`: the normal call that must work after every hostile one."""
    return assert_healthy
