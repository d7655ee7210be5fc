"""Access to the Docker engine: one lazily created client per process, labels, and leftover cleanup.

`docker` is imported here, inside functions, so that `import sandboxes` stays cheap and works without the SDK
being importable until a sandbox is actually used.
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import threading
from typing import Any

from sandboxes.errors import DockerUnavailableError

__all__ = [
    "LABEL",
    "LABEL_CREATED",
    "LABEL_OWNER_HOST",
    "LABEL_OWNER_PID",
    "LABEL_OWNER_START",
    "find_containers",
    "get_client",
    "owner_alive",
    "owner_labels",
    "remove_container",
    "remove_dead_leftovers",
]

LABEL = "qwq-agent.sandbox"
LABEL_OWNER_PID = "qwq-agent.owner-pid"
LABEL_OWNER_HOST = "qwq-agent.owner-host"
LABEL_OWNER_START = "qwq-agent.owner-start"
LABEL_CREATED = "qwq-agent.created"

_client: Any = None
_client_lock = threading.Lock()

_HOW_TO_FIX = (
    "Is Docker installed and running, and may this user use it? "
    "Run `qwq-agent sandbox doctor` to see what is missing."
)


def get_client() -> Any:
    """The shared `docker.DockerClient` (from DOCKER_HOST or the default socket), created on first use.

    One client is shared because each holds a connection pool; the pool is made larger than the SDK default so
    that many sandboxes started at once do not queue behind each other.
    """
    global _client
    with _client_lock:
        if _client is None:
            try:
                import docker
            except ImportError as exc:  # pragma: no cover - docker is a hard dependency
                raise DockerUnavailableError(f"The `docker` Python package is missing: {exc}") from exc
            try:
                client = docker.from_env(max_pool_size=64, timeout=120)
                client.ping()
            except Exception as exc:
                raise DockerUnavailableError(
                    f"Cannot reach the Docker engine ({exc}). {_HOW_TO_FIX}"
                ) from exc
            _client = client
        return _client


def _process_start_time(pid: int) -> str:
    """The kernel's start time of `pid` (clock ticks since boot), so a reused pid is not taken for its owner."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            stat = f.read()
    except OSError:
        return ""
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else ""


def owner_labels() -> dict[str, str]:
    """Labels naming this process as the owner of a container, checked later by `owner_alive`."""
    return {
        LABEL: "1",
        LABEL_OWNER_PID: str(os.getpid()),
        LABEL_OWNER_HOST: socket.gethostname(),
        LABEL_OWNER_START: _process_start_time(os.getpid()),
        LABEL_CREATED: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def owner_alive(labels: dict[str, str]) -> bool | None:
    """Whether the process that created a container still runs: None when that cannot be told from here.

    Only containers made on this host can be judged (a remote engine serves many hosts); a pid that is alive but
    started at another time was reused by an unrelated process, so the owner is dead.
    """
    if labels.get(LABEL_OWNER_HOST) != socket.gethostname():
        return None
    try:
        pid = int(labels.get(LABEL_OWNER_PID, ""))
    except ValueError:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, owned by another user
    started = labels.get(LABEL_OWNER_START, "")
    return not (started and started != _process_start_time(pid))


def find_containers(client: Any, *, owner_pid: int | None = None) -> list[Any]:
    """All containers (running or not) labelled as sandboxes, optionally only those of one owner pid."""
    filters = [f"{LABEL}=1"]
    if owner_pid is not None:
        filters.append(f"{LABEL_OWNER_PID}={owner_pid}")
    containers: list[Any] = client.containers.list(all=True, filters={"label": filters}, ignore_removed=True)
    return containers


def remove_container(client: Any, container_id: str) -> None:
    """Kill and remove, ignoring containers that are already gone or being removed by `auto_remove`."""
    try:
        client.api.remove_container(container_id, force=True)
    except Exception as exc:
        # NotFound, or a 409 "removal already in progress": either way it is going away.
        name = type(exc).__name__
        if name not in {"NotFound", "APIError", "Conflict"}:
            raise


def remove_dead_leftovers(client: Any) -> list[str]:
    """Remove sandboxes whose owning process on this host has died (killed with SIGKILL, a crashed host run).

    Returns the short ids removed. Containers of live processes, and of other hosts, are left alone.
    """
    removed = []
    for container in find_containers(client):
        if owner_alive(container.labels) is False:
            remove_container(client, container.id)
            removed.append(container.short_id)
    return removed
