"""`qwq-agent sandbox build|doctor|clean`: make the sandbox image, say what is missing, remove leftovers.

Module-level imports stay light (argparse only) because `qwq-agent --help` imports every sub-command module;
`sandboxes` and the Docker SDK are imported when a sub-command actually runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from typing import Any

__all__ = ["add_parser", "main"]


def add_parser(subparsers: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text, description=help_text)
    actions = parser.add_subparsers(dest="sandbox_command", metavar="ACTION")
    build = actions.add_parser(
        "build", help="build the sandbox image (from the Dockerfile or with debootstrap)"
    )
    build.add_argument("--tag", default=None, help="image tag (default: the one sandboxes use)")
    build.add_argument(
        "--method",
        choices=["auto", "dockerfile", "debootstrap"],
        default="auto",
        help="auto: the Dockerfile if a registry answers, else debootstrap (default)",
    )
    build.add_argument(
        "--mirror", default=None, help="Debian mirror for debootstrap (default: the one apt uses)"
    )
    build.add_argument("--force", action="store_true", help="rebuild even if the image exists")
    doctor = actions.add_parser(
        "doctor", help="check the engine, its runtimes, permissions and image; say what to run"
    )
    from agent.cli.common import add_sandbox_arguments

    add_sandbox_arguments(doctor)
    clean = actions.add_parser("clean", help="remove sandbox containers left behind")
    clean.add_argument(
        "--all", action="store_true", help="remove every sandbox container, also those of running processes"
    )
    parser.set_defaults(_sandbox_parser=parser)
    return parser


def main(args: argparse.Namespace) -> int:
    from agent.cli.common import exit_code_for

    command = getattr(args, "sandbox_command", None)
    try:
        if command == "build":
            return _build(args)
        if command == "doctor":
            return _doctor(getattr(args, "sandbox_runtime", None))
        if command == "clean":
            return _clean(all_containers=bool(args.all))
    except KeyboardInterrupt:
        print("qwq-agent sandbox: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        return exit_code_for(f"sandbox {command}", exc)
    args._sandbox_parser.print_help()
    return 2


def _docker_host_problem(host: str) -> list[str] | None:
    """What is wrong with a DOCKER_HOST that cannot work, and what to do; None when it may well work.

    Said before any connection is tried, so that a typo is not reported as an engine that is not running.
    """
    default = "/var/run/docker.sock"
    use_default = (
        f"`unset DOCKER_HOST` to use the local engine ({default} exists)"
        if os.path.exists(default)
        else "`unset DOCKER_HOST` to use the local engine once it is installed and started"
    )
    scheme, sep, rest = host.partition("://")
    if not sep or scheme not in ("unix", "tcp", "ssh", "npipe", "http", "https"):
        return [
            f"DOCKER_HOST={host} is not an engine address: it must look like unix:///path/to/docker.sock, "
            "tcp://HOST:PORT or ssh://USER@HOST",
            f"fix DOCKER_HOST, or {use_default}; `docker context ls` lists the engines the docker CLI knows",
        ]
    if scheme == "unix":
        path = "/" + rest.lstrip("/")
        if not os.path.exists(path):
            return [
                f"DOCKER_HOST={host} names the socket {path}, which does not exist",
                f"point DOCKER_HOST at a running engine's socket, or {use_default}; "
                "`docker context ls` lists the engines the docker CLI knows",
            ]
        if not os.access(path, os.R_OK | os.W_OK):
            return [
                f"no permission on {path} (DOCKER_HOST={host})",
                "run: sudo usermod -aG docker $USER   (then log in again), or use a socket you can open",
            ]
    if scheme == "ssh":
        import importlib.util

        if importlib.util.find_spec("paramiko") is None:
            return [
                f"DOCKER_HOST={host} needs the paramiko package for ssh:// engines",
                "run: pip install paramiko   (or forward the remote socket and use unix://)",
            ]
    return None


def _build(args: argparse.Namespace) -> int:
    from sandboxes.errors import SandboxError
    from sandboxes.image import DEFAULT_IMAGE, build_image, image_exists

    tag = args.tag or DEFAULT_IMAGE
    started = time.monotonic()

    def progress(line: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {line}", flush=True)

    try:
        if not args.force and image_exists(tag):
            print(f"{tag} is already built (use --force to rebuild)")
            return 0
        build_image(tag, method=args.method, mirror=args.mirror, progress=progress)
    except SandboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


# How to add gVisor to a Debian/Ubuntu engine; docs/security.md says when it is worth it.
_RUNSC_HOW = (
    "   to add gVisor: sudo apt-get install runsc, then in /etc/docker/daemon.json add\n"
    '   "runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}}\n'
    "   and reload the engine: sudo kill -HUP $(pidof dockerd)   (see docs/security.md)"
)


def _runtimes(client: Any, wanted: str | None, line: Any) -> bool:
    """List the engine's runtimes; False if `wanted` is not among them."""
    info = client.info()
    names = sorted(info.get("Runtimes") or {})
    default = info.get("DefaultRuntime") or "runc"
    shown = ", ".join(f"{n} (default)" if n == default else n for n in names)
    if wanted is not None and wanted not in names:
        line(False, f"runtime {wanted} is not registered with the engine (it has: {shown})")
        if wanted == "runsc":
            print(_RUNSC_HOW)
        return False
    line(True, f"runtimes: {shown}")
    if "runsc" not in names:
        print("   gVisor (runsc) is not registered: sandboxes use the host's kernel through runc.")
        print(_RUNSC_HOW)
    return True


def _line(ok: bool, text: str) -> None:
    print(f"[{'ok' if ok else '!!'}] {text}")


def _doctor(runtime: str | None = None) -> int:
    """Check each prerequisite in order and stop at the first that fails, saying what to run.

    `runtime` (`--sandbox-runtime`, or `[sandbox] runtime` in the config file) is the one the trial sandbox
    uses; it must be registered with the engine.
    """
    client = _engine()
    if client is None or not _runtimes(client, runtime, _line) or not _image(client):
        return 1
    leftovers = _leftovers(client)
    if not _trial(runtime):
        return 1
    return 0 if not leftovers else 1


def _engine() -> Any:
    """The engine's client once its address, permissions and version check out; None after saying why not."""
    from sandboxes._engine import get_client
    from sandboxes.errors import DockerUnavailableError

    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock (default)")
    if "DOCKER_HOST" in os.environ and (problem := _docker_host_problem(os.environ["DOCKER_HOST"])):
        what, advice = problem
        _line(False, what)
        print(f"   {advice}")
        return None
    _line(True, f"engine address: {host}")
    socket_path = "/var/run/docker.sock"
    if (
        "DOCKER_HOST" not in os.environ
        and os.path.exists(socket_path)
        and not os.access(socket_path, os.W_OK)
    ):
        _line(False, f"no permission on {socket_path}: add yourself to the docker group")
        print("   run: sudo usermod -aG docker $USER   (then log in again)")
        return None
    try:
        client = get_client()
        version = client.version()
    except DockerUnavailableError as exc:
        _line(False, f"Docker engine not reachable: {exc.__cause__ or exc}")
        if "DOCKER_HOST" in os.environ:
            print(
                f"   nothing answers at DOCKER_HOST={os.environ['DOCKER_HOST']}: start the engine there, fix "
                "DOCKER_HOST, or `unset DOCKER_HOST` to use the local one"
            )
        elif shutil.which("docker") is None and shutil.which("dockerd") is None:
            print("   run: sudo apt-get install docker.io   (or install Docker Engine for your system)")
        else:
            print("   run: sudo systemctl start docker   (or start dockerd)")
        return None
    _line(True, f"Docker engine {version.get('Version', '?')} (API {version.get('ApiVersion', '?')})")
    return client


def _image(client: Any) -> bool:
    from sandboxes.image import DEFAULT_IMAGE, apt_mirror, image_exists, registry_reachable

    if image_exists(DEFAULT_IMAGE, client=client):
        _line(True, f"sandbox image {DEFAULT_IMAGE} present")
        return True
    _line(False, f"sandbox image {DEFAULT_IMAGE} is missing")
    if registry_reachable():
        print("   run: qwq-agent sandbox build   (uses sandboxes/Dockerfile; a registry answers)")
    else:
        mirror = apt_mirror()
        needs = [] if shutil.which("debootstrap") else ["sudo apt-get install debootstrap"]
        print(
            "   no registry reachable: the image is built with debootstrap from " + (mirror or "--mirror URL")
        )
        print("   run: " + " && ".join([*needs, "sudo qwq-agent sandbox build"]))
    return False


def _leftovers(client: Any) -> list[Any]:
    from sandboxes._engine import find_containers, owner_alive

    leftovers = [c for c in find_containers(client) if owner_alive(c.labels) is False]
    if leftovers:
        _line(False, f"{len(leftovers)} sandbox container(s) left by dead processes")
        print("   run: qwq-agent sandbox clean")
    else:
        _line(True, "no leftover sandbox containers")
    return leftovers


def _trial(runtime: str | None) -> bool:
    """Start a sandbox with `runtime` and run Python in it."""
    try:
        from sandboxes import DockerSandbox, SandboxConfig

        with DockerSandbox(config=SandboxConfig(runtime=runtime)) as sandbox:
            code = "import platform, sys; print(sys.version.split()[0], platform.release())"
            result = sandbox.run_python(code, timeout=30)
            guarded = sandbox.guarded
    except Exception as exc:
        _line(False, f"a sandbox did not start: {exc}")
        return False
    if not result.ok:
        _line(False, f"the sandbox runner failed: {result.error}")
        return False
    python, _, kernel = result.stdout.strip().partition(" ")
    where = f"runtime {runtime or 'of the engine'}, kernel {kernel}"
    _line(True, f"a sandbox starts and runs Python {python} ({where})")
    if not guarded:
        _line(
            False,
            "the runner could not shield itself: code inside could keep a sandbox alive after its host died",
        )
        print("   (the image's python3 lacks ctypes, or the CPU is neither x86_64 nor aarch64)")
        print("   run: qwq-agent sandbox build   (the image it makes has what the runner needs)")
        return False
    _line(True, "the runner is shielded: a sandbox dies with the process that started it")
    return True


def _clean(*, all_containers: bool) -> int:
    from sandboxes._engine import find_containers, get_client, owner_alive, remove_container
    from sandboxes.errors import DockerUnavailableError

    try:
        client = get_client()
    except DockerUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    removed = kept = 0
    for container in find_containers(client):
        if all_containers or owner_alive(container.labels) is False:
            remove_container(client, container.id)
            removed += 1
        else:
            kept += 1
    print(f"removed {removed} sandbox container(s)" + (f"; kept {kept} of running processes" if kept else ""))
    return 0
