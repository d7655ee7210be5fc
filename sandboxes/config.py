"""Sandbox settings and call results: one pydantic config whose defaults are the hardened ones, and `ExecResult`."""

from __future__ import annotations

import signal as _signal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ExecResult", "LostCause", "SandboxConfig", "signal_name"]

LostCause = Literal["unresponsive", "died", "protocol", "closed"]
"""Why a sandbox was lost during a call (`ExecResult.lost_cause`, `SandboxFileError.lost_cause`)."""


class SandboxConfig(BaseModel):
    """Every limit of a sandbox container. The defaults are safe; loosen them knowingly.

    Sizes use Docker's notation ("512m", "1g"). `memory` is also the memory+swap limit, so a sandbox never
    swaps; tmpfs contents count against it too.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    memory: str = "1g"
    cpus: float = Field(default=1.0, gt=0)
    pids_limit: int = Field(default=256, ge=16)
    """Processes and threads in the container. Under runsc the engine also counts gVisor's own threads (about
    60, and about 9 more per process in the sandbox, measured with Debian's runsc), so the engine is given
    `pids_limit * 10 + 100` there; a fork bomb then ends the whole sandbox, which is replaced."""
    workspace_size: str = "256m"
    tmp_size: str = "64m"
    network: bool = False
    """False: network mode "none" (only a loopback device). True: the default bridge; for trusted uses only."""
    user: str = "1000:1000"
    read_only_root: bool = True
    default_timeout: float = Field(default=30.0, gt=0)
    max_output_bytes: int = Field(default=64 * 1024, ge=1024)
    """Per stream and call, head and tail kept; the model's tools cut further."""
    max_value_chars: int = Field(default=10_000, ge=100)
    max_read_bytes: int = Field(default=16 * 1024 * 1024, ge=1)
    start_timeout: float = Field(default=60.0, gt=0)
    """How long a new container may take to answer its first ping (image on a slow disk, a busy engine)."""
    kill_grace: float = Field(default=10.0, gt=0)
    """How far past a call's timeout the host waits for the runner before it kills and replaces the container."""
    cleanup_leftovers: bool = True
    """At start, remove sandboxes whose owning process on this host has died."""
    environment: dict[str, str] = Field(default_factory=dict)
    """Extra variables for the container. Nothing from the host environment is ever copied in."""
    labels: dict[str, str] = Field(default_factory=dict)
    log_driver: str = "none"
    """The runner's protocol goes over stdout, which Docker would otherwise also write to disk as logs."""
    runtime: str | None = Field(default=None, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    """The engine's OCI runtime: None for the engine's default (normally `runc`), or a runtime registered with
    the engine, such as `"runsc"` (gVisor: the code talks to a kernel in user space, not to the host's).
    `qwq-agent sandbox doctor` lists the runtimes the engine has; docs/security.md says when to choose runsc."""


class ExecResult(BaseModel):
    """What one `run_python` or `run_shell` call produced.

    `stdout`/`stderr` are capped (head and tail, the cut marked, `truncated` set). `state_lost` means the Python
    namespace (and, when `sandbox_replaced`, also the files) were lost before or during this call.
    """

    model_config = ConfigDict(frozen=True)

    stdout: str = ""
    stderr: str = ""
    ok: bool = True
    error: str | None = None
    """A one-line summary: the exception, the exit status, the signal, or what killed the call."""
    timed_out: bool = False
    duration_s: float = 0.0
    value: str | None = None
    """repr() of a trailing expression in a Python cell, as a notebook shows it."""
    traceback: str | None = None
    exit_code: int | None = None
    state_lost: bool = False
    sandbox_replaced: bool = False
    truncated: bool = False
    stdout_bytes: int = 0
    stderr_bytes: int = 0
    oom_killed: bool = False
    cancelled: bool = False
    signal: int | None = None
    """The signal that ended the Python process (`crashed`) or the shell command, when one did."""
    crashed: bool = False
    """The Python process died during the call (os._exit, a signal, out of memory) and was restarted. Also
    set on a shell call during which the Python process died (the out-of-memory killer chose it): the
    command itself may still have succeeded (`ok`), but the Python variables are gone (`state_lost`)."""
    lost_before: bool = False
    """The state had been lost before this call: the Python process had died, or (with `sandbox_replaced`)
    the container had and was replaced; the call itself ran normally in the fresh one."""
    lost_cause: LostCause | None = None
    """Why the sandbox was lost during this call: its runner stopped answering, died, or sent something that is
    not the protocol (all three: the container was replaced), or the sandbox was closed meanwhile."""

    @property
    def signal_name(self) -> str | None:
        """`signal` by name ("SIGSEGV"), or None."""
        return None if self.signal is None else signal_name(self.signal)


def signal_name(number: int) -> str:
    """ "SIGKILL" for 9; "signal 99" for a number this platform has no name for."""
    try:
        return _signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
