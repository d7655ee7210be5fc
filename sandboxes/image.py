"""The sandbox image: building it (from the Dockerfile, or from a debootstrapped Debian without a registry).

Both methods produce the same tag with the same contract: `python3` (with numpy), bash, a user 1000 and a
`/workspace` directory. The runner needs nothing else, so any other image with python3 also works.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from sandboxes._engine import get_client
from sandboxes.errors import ImageBuildError

__all__ = [
    "DEFAULT_IMAGE",
    "BuildMethod",
    "apt_mirror",
    "build_image",
    "choose_method",
    "image_exists",
    "registry_reachable",
]

DEFAULT_IMAGE = "qwq-agent-sandbox:0.1"
BASE_IMAGE = "python:3.11-slim"
SUITE = "bookworm"
# What the model gets on top of minbase: python3 and numpy (the rest of the Python stdlib comes with python3).
PACKAGES = ("python3", "python3-numpy", "ca-certificates")

BuildMethod = Literal["auto", "dockerfile", "debootstrap"]
Progress = Callable[[str], None]

_DOCKERFILE = Path(__file__).with_name("Dockerfile")
_PASSWD_LINE = "sandbox:x:1000:1000:sandbox:/workspace:/bin/bash\n"
_GROUP_LINE = "sandbox:x:1000:\n"
_CHANGES = [
    "USER 1000:1000",
    "WORKDIR /workspace",
    'CMD ["python3"]',
    "ENV LANG=C.UTF-8",
    "ENV PYTHONDONTWRITEBYTECODE=1",
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    'LABEL qwq-agent.image="1"',
]


def _noop(_: str) -> None:
    pass


def image_exists(image: str = DEFAULT_IMAGE, *, client: Any = None) -> bool:
    """Whether `image` is present on the engine (never pulls)."""
    client = client or get_client()
    try:
        client.images.get(image)
    except Exception as exc:
        if type(exc).__name__ == "ImageNotFound":
            return False
        raise
    return True


def registry_reachable(timeout: float = 3.0) -> bool:
    """Whether Docker Hub answers within `timeout` seconds (any HTTP status counts; DNS or TCP failure does not).

    Checked from this host with a short timeout, so an offline machine decides in well under a second instead
    of letting `docker build` hang on the pull.
    """
    try:
        urllib.request.urlopen("https://registry-1.docker.io/v2/", timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # 401 Unauthorized is the normal answer
    except (OSError, ValueError):
        return False
    return True


def choose_method(client: Any = None) -> Literal["dockerfile", "debootstrap"]:
    """`dockerfile` when its base image is already local or a registry answers, else `debootstrap`."""
    client = client or get_client()
    if image_exists(BASE_IMAGE, client=client) or registry_reachable():
        return "dockerfile"
    return "debootstrap"


def _deb822_sources() -> list[tuple[str, list[str]]]:
    """(URI, suites) of the enabled `deb` entries in /etc/apt/sources.list.d/*.sources."""
    found: list[tuple[str, list[str]]] = []
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        text = Path(path).read_text(errors="replace")
        for stanza in text.split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                found.extend(
                    (uri, fields.get("suites", "").split()) for uri in fields.get("uris", "").split()
                )
    return found


def _one_line_sources() -> list[tuple[str, list[str]]]:
    """(URI, [suite]) of the `deb` lines in /etc/apt/sources.list and sources.list.d/*.list."""
    found: list[tuple[str, list[str]]] = []
    for path in ["/etc/apt/sources.list", *sorted(glob.glob("/etc/apt/sources.list.d/*.list"))]:
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 3 and parts[0] == "deb":
                rest = [p for p in parts[1:] if not p.startswith("[")]
                if len(rest) >= 2:
                    found.append((rest[0], [rest[1]]))
    return found


def apt_mirror(suite: str = SUITE) -> str | None:
    """The Debian mirror this host's apt uses for `suite` (never any other host), or None if there is none."""
    for uri, suites in [*_deb822_sources(), *_one_line_sources()]:
        if suite in suites and uri.startswith(("http://", "https://")):
            return uri
    return None


def build_image(
    tag: str = DEFAULT_IMAGE,
    *,
    method: BuildMethod = "auto",
    mirror: str | None = None,
    progress: Progress | None = None,
    client: Any = None,
) -> str:
    """Build the sandbox image and return its tag; `progress` receives one line of text per step.

    `auto` uses the Dockerfile when a registry (or its base image) is available and otherwise debootstraps
    Debian from the mirror apt is configured with. Rebuilding an existing tag replaces it.
    """
    say = progress or _noop
    client = client or get_client()
    chosen = choose_method(client) if method == "auto" else method
    say(f"building {tag} with the {chosen} method")
    started = time.monotonic()
    if chosen == "dockerfile":
        _build_dockerfile(client, tag, say)
    else:
        _build_debootstrap(client, tag, mirror, say)
    _smoke_test(client, tag, say)
    say(f"built {tag} in {time.monotonic() - started:.0f} s")
    return tag


def _build_dockerfile(client: Any, tag: str, say: Progress) -> None:
    import io

    dockerfile = io.BytesIO(_DOCKERFILE.read_bytes())
    try:
        for chunk in client.api.build(fileobj=dockerfile, tag=tag, rm=True, forcerm=True, decode=True):
            if "error" in chunk:
                raise ImageBuildError(f"docker build failed: {chunk['error']}")
            line = str(chunk.get("stream", chunk.get("status", ""))).strip()
            if line:
                say(line)
    except ImageBuildError:
        raise
    except Exception as exc:
        raise ImageBuildError(f"docker build failed: {exc}") from exc


def _run_streaming(cmd: list[str], say: Progress, what: str) -> None:
    """Run a build step, forwarding its output lines and keeping a tail for the error message."""
    tail: list[str] = []
    with subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            say(line)
            tail = [*tail[-19:], line]
        code = proc.wait()
    if code != 0:
        raise ImageBuildError(f"{what} failed with exit status {code}:\n" + "\n".join(tail))


def _build_debootstrap(client: Any, tag: str, mirror: str | None, say: Progress) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError(
            "debootstrap is not installed: run `sudo apt-get install debootstrap` (Debian/Ubuntu), "
            "or build on a machine that reaches a registry with `qwq-agent sandbox build --method dockerfile`."
        )
    if os.geteuid() != 0:
        raise ImageBuildError(
            "debootstrap needs root to create device nodes and set file owners: run `sudo qwq-agent sandbox build`."
        )
    mirror = mirror or apt_mirror()
    if mirror is None:
        raise ImageBuildError(
            f"No Debian mirror for {SUITE!r} found in /etc/apt/sources.list*: pass one with --mirror URL."
        )
    rootfs = Path(tempfile.mkdtemp(prefix="qwq-sandbox-rootfs-"))
    try:
        say(f"debootstrap {SUITE} (minbase + {', '.join(PACKAGES)}) from {mirror} into {rootfs}")
        _run_streaming(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(PACKAGES)}",
                "--components=main",
                SUITE,
                str(rootfs),
                mirror,
            ],
            say,
            "debootstrap",
        )
        _finish_rootfs(rootfs)
        say("importing the root filesystem into the engine")
        with subprocess.Popen(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-c", "."],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as tar:
            assert tar.stdout is not None
            try:
                client.api.import_image(src=tar.stdout, stream_src=True, repository=tag, changes=_CHANGES)
            except Exception as exc:
                tar.kill()
                raise ImageBuildError(f"docker import failed: {exc}") from exc
            err = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
            if tar.wait() != 0:
                raise ImageBuildError(f"tar of the root filesystem failed: {err[-2000:]}")
    finally:
        say(f"removing {rootfs}")
        shutil.rmtree(rootfs, ignore_errors=True)


def _finish_rootfs(rootfs: Path) -> None:
    """Add the sandbox user and its workspace, and drop what a sandbox never needs (apt caches, docs)."""
    with open(rootfs / "etc/passwd", "a", encoding="utf-8") as f:
        f.write(_PASSWD_LINE)
    with open(rootfs / "etc/group", "a", encoding="utf-8") as f:
        f.write(_GROUP_LINE)
    workspace = rootfs / "workspace"
    workspace.mkdir(exist_ok=True)
    os.chown(workspace, 1000, 1000)
    for pattern in (
        "var/cache/apt/archives/*.deb",
        "var/lib/apt/lists/*",
        "usr/share/doc/*",
        "usr/share/man/*",
    ):
        for path in glob.glob(str(rootfs / pattern)):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.unlink(path)


def _smoke_test(client: Any, tag: str, say: Progress) -> None:
    """Check the image can do what the runner needs before anyone relies on it."""
    say("checking the image: python3, numpy, user 1000")
    script = "import os, numpy; print(os.getuid(), numpy.__version__)"
    try:
        out = client.containers.run(
            tag, ["python3", "-c", script], remove=True, network_mode="none", stdout=True, stderr=True
        )
    except Exception as exc:
        raise ImageBuildError(f"the built image {tag} does not work: {exc}") from exc
    text = out.decode(errors="replace").strip()
    say(f"image check: uid and numpy version {text}")
    if not text.startswith("1000 "):
        raise ImageBuildError(f"the built image {tag} does not run as user 1000: {text!r}")
