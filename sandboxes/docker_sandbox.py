"""`DockerSandbox`: one hardened container per agent run, with a persistent Python namespace and a shell.

The host never runs `docker exec` per call: it attaches to the container's stdin/stdout once and talks to the
runner (`sandboxes/_runner.py`) with small frames, which is what makes a warm call take milliseconds. Every
limit is enforced twice: by the runner (timeouts, output caps, stray processes) and by the engine (memory, pids,
CPU, no network, read-only root). If the runner dies or stops answering, the container is replaced and the
result says the state was lost.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import concurrent.futures
import contextlib
import itertools
import secrets
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sandboxes._channel import DEFAULT_MAX_FRAME, Channel, ChannelClosed, ChannelTimeout
from sandboxes._engine import get_client, owner_labels, remove_container, remove_dead_leftovers
from sandboxes._lifecycle import Lifecycle
from sandboxes._protocol import Answer, Check, ProtocolError, answer_spec, clean_text, validate_answer
from sandboxes.config import ExecResult, LostCause, SandboxConfig, signal_name
from sandboxes.errors import (
    DockerUnavailableError,
    ImageNotFoundError,
    SandboxError,
    SandboxFileError,
    SandboxStartError,
)
from sandboxes.image import DEFAULT_IMAGE

__all__ = ["WORKSPACE", "DockerSandbox"]

WORKSPACE = "/workspace"
_T = TypeVar("_T")
_RUNNER_PATH = Path(__file__).with_name("_runner.py")
_runner_source: str | None = None
_LIVE: weakref.WeakSet[DockerSandbox] = weakref.WeakSet()
_ids = itertools.count(1)
_PING = answer_spec("ping")


def _runner() -> str:
    global _runner_source
    if _runner_source is None:
        _runner_source = _RUNNER_PATH.read_text(encoding="utf-8")
    return _runner_source


@atexit.register
def _close_all() -> None:
    """Remove sandboxes the program forgot to close (a crash that still runs atexit, a missing `with`)."""
    for sandbox in list(_LIVE):
        with contextlib.suppress(Exception):
            sandbox.close()


_MEASURED = ("stdout", "stderr", "stdout_bytes", "stderr_bytes", "truncated", "duration_s")


def _measured(a: Answer) -> dict[str, Any]:
    """The fields of an `ExecResult` that a Python and a shell call take from the runner's answer as they
    are: the output and what it measured. Whether the call succeeded, and why not, each judges its own way."""
    return {name: a[name] for name in _MEASURED}


class _Skipped(Exception):
    """The call was cancelled before it was sent to the runner: it never ran."""


class _Lost(Exception):
    """The call's sandbox was lost: replaced after its runner hung, died or broke the protocol, or closed."""

    def __init__(self, cause: LostCause, detail: str = "") -> None:
        self.cause = cause
        self.message = _LOST_SUMMARY[cause] + (f" ({detail})" if detail else "")
        super().__init__(self.message)


# For developers (`ExecResult.error`, `SandboxFileError`); the model reads the notes tools.code renders instead.
_LOST_SUMMARY: dict[LostCause, str] = {
    "unresponsive": "the sandbox stopped responding and was replaced: variables and files were lost",
    "died": "the sandbox's supervisor died and the sandbox was replaced: variables and files were lost",
    "protocol": "the sandbox's runner sent data that is not its protocol and the sandbox was replaced: "
    "variables and files were lost",
    "closed": "the sandbox was closed while the call was running",
}


def _engine_pids_limit(cfg: SandboxConfig) -> int:
    """The pids limit for the engine: gVisor runs each sandboxed process on several host threads of its own."""
    return cfg.pids_limit * 10 + 100 if cfg.runtime == "runsc" else cfg.pids_limit


def _base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


class DockerSandbox(Lifecycle):
    """A started container with the runner in it; use it as a (sync or async) context manager.

    `image=None` means the image `qwq-agent sandbox build` makes. Nothing happens in the constructor: the
    container is created by `start()` / `__enter__` / `__aenter__` and removed by `close()` / leaving the block,
    also on errors and Ctrl-C. Calls on one sandbox are serialised; many sandboxes run in parallel.
    """

    def __init__(
        self,
        image: str | None = None,
        config: SandboxConfig | None = None,
        *,
        client: Any = None,
    ) -> None:
        self.image = image or DEFAULT_IMAGE
        self.config = config or SandboxConfig()
        self._client = client
        self._container: str | None = None
        self._channel: Channel | None = None
        self._lock = threading.RLock()  # held for a whole call: calls on one sandbox are serial
        self._swap_lock = threading.Lock()  # held only to swap the container and channel attributes
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._closed = False
        # Cancelling by call id: `_running` is the id of the request the runner has and has not answered;
        # `_queued` the ids of async calls not finished yet, `_cancelled` those of them cancelled before they
        # were sent. `_cancel_lock` makes "not cancelled, so send it" one step against a concurrent cancel.
        self._cancel_lock = threading.Lock()
        self._running: int | None = None
        self._queued: set[int] = set()
        self._cancelled: set[int] = set()
        self.replacements = 0
        """How many times the container was replaced after its runner died or hung."""
        self.guarded: bool | None = None
        """Whether the runner shielded itself (PID 1, not dumpable), so that the container dies with this
        process whatever the code inside does (None until started). False only with images whose python3
        lacks ctypes: then code that holds the runner's stdin open can outlive a SIGKILLed host."""

    # ------------------------------------------------------------------ lifecycle

    @property
    def container_id(self) -> str | None:
        """The id of the current container (it changes when a dead one is replaced)."""
        return self._container

    @property
    def started(self) -> bool:
        return self._container is not None

    def start(self) -> DockerSandbox:
        """Create and start the container and wait for its runner (idempotent)."""
        with self._lock:
            if self._closed:
                raise SandboxError("this sandbox was closed; create a new one")
            if self._container is None:
                self._start_container()
                _LIVE.add(self)
        return self

    def close(self) -> None:
        """Remove the container (idempotent). Files in the workspace are gone with it."""
        self._closed = True
        self._drop_container()
        _LIVE.discard(self)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    async def astart(self) -> DockerSandbox:
        return await self._in_thread(self.start)

    async def aclose(self) -> None:
        # Not on the sandbox's own executor: that one may still be busy with a call being cancelled.
        await asyncio.to_thread(self.close)

    def _docker(self) -> Any:
        if self._client is None:
            self._client = get_client()
        return self._client

    def _create_kwargs(self) -> dict[str, Any]:
        from docker.types import LogConfig, Ulimit

        cfg = self.config
        threads = str(max(1, int(cfg.cpus + 0.999)))
        environment = {
            "HOME": WORKSPACE,
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "OMP_NUM_THREADS": threads,
            "OPENBLAS_NUM_THREADS": threads,
            **cfg.environment,
        }
        labels = {**cfg.labels, **owner_labels()}
        # The workspace belongs to the sandbox user: an image directory at the mount point would otherwise
        # impose its own owner and mode on the tmpfs.
        uid, _, gid = cfg.user.partition(":")
        owner = f",uid={uid},gid={gid or uid}" if uid.isdigit() and (gid or uid).isdigit() else ""
        host_config = {
            "network_mode": "bridge" if cfg.network else "none",
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges"],
            "read_only": cfg.read_only_root,
            "tmpfs": {
                # exec: compiled programs and scripts must run from the workspace; /tmp stays noexec.
                WORKSPACE: f"rw,exec,nosuid,nodev,size={cfg.workspace_size},mode=1777{owner}",
                "/tmp": f"rw,noexec,nosuid,nodev,size={cfg.tmp_size},mode=1777",
            },
            "shm_size": "64m",
            "ipc_mode": "private",
            "pids_limit": _engine_pids_limit(cfg),
            "mem_limit": cfg.memory,
            "memswap_limit": cfg.memory,
            "nano_cpus": int(cfg.cpus * 1e9),
            # No docker-init: the runner is PID 1 itself, which the code inside can neither stop nor kill, and
            # reaps orphans itself (see sandboxes/_runner.py).
            "init": False,
            "auto_remove": True,
            "ulimits": [Ulimit(name="core", soft=0, hard=0), Ulimit(name="nofile", soft=1024, hard=1024)],
            "log_config": LogConfig(type=cfg.log_driver),
        }
        if cfg.runtime is not None:
            host_config["runtime"] = cfg.runtime
        return {
            "name": f"qwq-sandbox-{secrets.token_hex(6)}",
            "command": ["python3", "-I", "-c", _runner()],
            # stdin_open without detach makes the SDK set StdinOnce: when the host's attach connection closes
            # (even when the host process is SIGKILLed) Docker closes the runner's stdin, the runner's watchdog
            # ends PID 1 and with it the container, and `auto_remove` deletes it.
            "stdin_open": True,
            "detach": False,
            "tty": False,
            "user": cfg.user,
            "working_dir": WORKSPACE,
            "hostname": "sandbox",
            "environment": environment,
            # The SDK would otherwise copy proxy settings from ~/.docker/config.json into the container.
            "use_config_proxy": False,
            "labels": labels,
            "host_config": self._docker().api.create_host_config(**host_config),
        }

    def _start_container(self) -> None:
        client = self._docker()
        if self.config.cleanup_leftovers:
            # Best effort: starting must not fail because of someone else's container.
            with contextlib.suppress(Exception):
                remove_dead_leftovers(client)
        try:
            container = str(client.api.create_container(self.image, **self._create_kwargs())["Id"])
        except Exception as exc:
            raise self._explain_create_error(exc) from exc
        channel: Channel | None = None
        try:
            attached = client.api.attach_socket(container, params={"stdin": 1, "stdout": 1, "stream": 1})
            # Room for the largest file read (base64) and capped outputs; anything bigger is a broken runner.
            max_frame = max(DEFAULT_MAX_FRAME, self.config.max_read_bytes * 4 // 3 + (1 << 20))
            channel = Channel(attached, max_frame=max_frame)
            client.api.start(container)
            channel.send({"op": "ping", "id": 0})
            answer = validate_answer(channel.recv(time.monotonic() + self.config.start_timeout), _PING)
            if not answer["ok"]:
                raise SandboxStartError(f"the runner did not start: {answer['error']}")
            self.guarded = answer["guarded"]
        except BaseException as exc:
            if channel is not None:
                channel.close()
            remove_container(client, container)
            if isinstance(exc, (ChannelClosed, ChannelTimeout, ProtocolError)):
                raise SandboxStartError(
                    f"The sandbox runner in image {self.image!r} did not answer ({exc or type(exc).__name__}). "
                    "The image needs python3 on its PATH; `qwq-agent sandbox doctor` checks the setup."
                ) from exc
            raise
        with self._swap_lock:
            self._container = container
            self._channel = channel

    def _explain_create_error(self, exc: Exception) -> Exception:
        name = type(exc).__name__
        if name == "ImageNotFound":
            if self.image == DEFAULT_IMAGE:
                hint = "run `qwq-agent sandbox build` to make it"
            else:
                hint = f"pull or build it first (`docker pull {self.image}`)"
            return ImageNotFoundError(
                f"The sandbox image {self.image!r} is not on the Docker engine: {hint}."
            )
        if isinstance(exc, DockerUnavailableError):
            return exc
        runtime = self.config.runtime
        if runtime is not None and "runtime" in str(exc).lower():
            install = (
                "install gVisor (Debian: `apt-get install runsc`) and register it in /etc/docker/daemon.json "
                '(`"runtimes": {"runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none"]}}`), '
                "then reload the engine (`kill -HUP $(pidof dockerd)`); "
                if runtime == "runsc"
                else ""
            )
            return SandboxStartError(
                f"The Docker engine has no runtime {runtime!r} ({exc}): {install}"
                "`qwq-agent sandbox doctor` lists the runtimes the engine has."
            )
        return SandboxStartError(f"Docker could not create the sandbox container: {exc}")

    def _drop_container(self) -> None:
        # Not under `_lock`, which a running call holds: closing from another thread must not wait for the call.
        # Closing the channel makes that call return at once (as a lost sandbox).
        with self._swap_lock:
            container, self._container = self._container, None
            channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()
        if container is not None:
            remove_container(self._docker(), container)

    def _replace(self) -> None:
        """Throw the current container away and start a fresh one (the runner died, hung or misbehaved)."""
        self._drop_container()
        if not self._closed:
            self._start_container()
            self.replacements += 1

    # ------------------------------------------------------------------ calls

    def _call(
        self, request: dict[str, Any], wait_s: float, spec: dict[str, Check], call_id: int | None = None
    ) -> tuple[Answer, bool]:
        """Send one request; returns its checked answer and whether the container was replaced before it ran.

        Raises `_Lost` after replacing a container whose runner hung, died or answered anything but an answer
        of `spec` (a runner failing a `python` or `shell` call counts as broken too), and `_Skipped` when the
        call was cancelled (`cancel(call_id)`) before it was sent.
        """
        with self._lock:
            if self._container is None:
                self.start()
            request = {**request, "id": next(_ids) if call_id is None else call_id}
            channel, replaced_before = self._send(request)
            try:
                answer = self._answer_to(channel, request["id"], time.monotonic() + wait_s)
                answer = validate_answer(answer, spec)
                if not answer["ok"] and request["op"] in ("python", "shell"):
                    raise ProtocolError(f"the runner failed: {answer['error'][:300]}")
            except KeyboardInterrupt:
                # Ctrl-C on the host: stop the code in the sandbox too; its late answer is skipped next time.
                self.cancel()
                raise
            except ChannelTimeout:
                self._replace()
                raise _Lost("unresponsive") from None
            except (ChannelClosed, ProtocolError) as exc:
                if self._closed:
                    raise _Lost("closed") from None
                self._replace()
                raise _Lost("protocol" if isinstance(exc, ProtocolError) else "died", str(exc)) from None
            finally:
                with self._cancel_lock:
                    self._running = None
            return answer, replaced_before

    def _send(self, request: dict[str, Any]) -> tuple[Channel, bool]:
        """Send `request`; a runner that died between calls is replaced first (the request had not run)."""
        channel = self._channel
        assert channel is not None
        try:
            self._send_unless_cancelled(channel, request)
            return channel, False
        except ChannelClosed:
            pass
        self._replace()
        channel = self._channel
        assert channel is not None
        try:
            self._send_unless_cancelled(channel, request)
        except ChannelClosed as exc:  # the fresh container died at once
            if not self._closed:
                self._replace()
            raise _Lost("closed" if self._closed else "died", str(exc)) from None
        return channel, True

    @staticmethod
    def _answer_to(channel: Channel, request_id: int, deadline: float) -> dict[str, Any]:
        while True:
            answer = channel.recv(deadline)
            answer_id = answer.get("id")
            if isinstance(answer_id, int) and not isinstance(answer_id, bool) and answer_id < request_id:
                continue  # the late answer to a call abandoned with Ctrl-C
            if answer_id != request_id:
                raise ProtocolError("an answer to another request")
            return answer

    def _send_unless_cancelled(self, channel: Channel, request: dict[str, Any]) -> None:
        with self._cancel_lock:
            if request["id"] in self._cancelled:
                raise _Skipped()
            channel.send(request)
            self._running = request["id"]

    def cancel(self, call_id: int | None = None) -> None:
        """Stop one call (from any thread): the one in progress (None), or the call `call_id` names.

        A call that is running is interrupted in the sandbox; one that is still waiting its turn is dropped
        and never runs; any other call, running or queued, is left alone. A no-op when that call is over.
        """
        with self._cancel_lock:
            target = self._running if call_id is None else call_id
            if target is None:
                return
            if target != self._running:
                if target in self._queued:
                    self._cancelled.add(target)
                return
            channel = self._channel
        if channel is not None:
            with contextlib.suppress(ChannelClosed):
                channel.send({"op": "cancel", "id": target})

    def run_python(self, code: str, timeout: float | None = None) -> ExecResult:
        """Run a cell in the persistent namespace (like a notebook: a trailing expression's repr is `value`)."""
        return self._run_python(code, timeout, None)

    def _run_python(self, code: str, timeout: float | None, call_id: int | None) -> ExecResult:
        timeout = timeout or self.config.default_timeout
        started = time.monotonic()
        cfg = self.config
        request = {
            "op": "python",
            "code": code,
            "timeout": timeout,
            "max_output": cfg.max_output_bytes,
            "value_limit": cfg.max_value_chars,
        }
        spec = answer_spec("python", max_output=cfg.max_output_bytes, value_limit=cfg.max_value_chars)
        try:
            answer, replaced_before = self._call(request, timeout + cfg.kill_grace, spec, call_id)
        except _Lost as lost:
            return self._lost_result(lost, started)
        except _Skipped:
            return ExecResult(ok=False, error="cancelled before it started", cancelled=True)
        return self._python_result(answer, timeout, replaced_before)

    def run_shell(self, cmd: str, timeout: float | None = None) -> ExecResult:
        """Run `bash -c cmd` (or `sh`) in the workspace; everything it started is killed when it ends."""
        return self._run_shell(cmd, timeout, None)

    def _run_shell(self, cmd: str, timeout: float | None, call_id: int | None) -> ExecResult:
        timeout = timeout or self.config.default_timeout
        started = time.monotonic()
        max_output = self.config.max_output_bytes
        request = {"op": "shell", "cmd": cmd, "timeout": timeout, "max_output": max_output}
        spec = answer_spec("shell", max_output=max_output)
        try:
            answer, replaced_before = self._call(request, timeout + self.config.kill_grace, spec, call_id)
        except _Lost as lost:
            return self._lost_result(lost, started)
        except _Skipped:
            return ExecResult(ok=False, error="cancelled before it started", cancelled=True)
        return self._shell_result(answer, timeout, replaced_before)

    def write_file(self, path: str, data: str | bytes) -> str:
        """Write a file under /workspace (parents created); returns its absolute path in the sandbox.

        Text is written as UTF-8; a lone surrogate in it (which UTF-8 cannot encode) is written as U+FFFD.
        """
        raw = clean_text(data).encode("utf-8") if isinstance(data, str) else bytes(data)
        request = {"op": "write", "path": path, "data": base64.b64encode(raw).decode("ascii")}
        answer = self._file_call(request, answer_spec("write"))
        path_written: str = answer["path"]
        return path_written

    def read_file(self, path: str) -> bytes:
        """The bytes of a file under /workspace (at most `config.max_read_bytes`)."""
        limit = self.config.max_read_bytes
        request = {"op": "read", "path": path, "max_bytes": limit}
        answer = self._file_call(request, answer_spec("read", max_data=_base64_length(limit)))
        data: bytes = answer["data"]
        return data

    def reset(self) -> None:
        """Start a fresh Python namespace (files in the workspace stay)."""
        self._file_call({"op": "reset"}, answer_spec("reset"))

    def _file_call(self, request: dict[str, Any], spec: dict[str, Check]) -> Answer:
        try:
            answer, _ = self._call(request, 60.0, spec)
        except _Lost as lost:
            raise SandboxFileError(lost.message, lost_cause=lost.cause) from None
        if not answer["ok"]:
            raise SandboxFileError(answer["error"] or "the file operation failed", reason=answer["reason"])
        return answer

    # ------------------------------------------------------------------ async

    def _submit(self, fn: Callable[..., _T], *args: Any) -> concurrent.futures.Future[_T]:
        # A private single thread per sandbox: calls on one sandbox are serial anyway, and many sandboxes must
        # not queue behind each other in the loop's small default executor.
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qwq-sandbox")
        return self._executor.submit(fn, *args)

    def _in_thread(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        return asyncio.wrap_future(self._submit(fn, *args))

    async def _cancellable(self, fn: Callable[..., _T], *args: Any) -> _T:
        """`fn(*args, call_id)` in the sandbox's thread; cancelling the await cancels that call and no other.

        The id is chosen here, before the call waits its turn, so that a cancel can name it wherever it is:
        still queued for the thread (dropped there), waiting for the sandbox's lock (never sent), or running
        in the sandbox (interrupted).
        """
        call_id = next(_ids)
        with self._cancel_lock:
            self._queued.add(call_id)
        submitted = self._submit(fn, *args, call_id)
        # Forgotten when the thread is done with it, or when it is taken out of the queue unrun.
        submitted.add_done_callback(lambda _: self._forget(call_id))
        try:
            # Cancelling this cannot stop the running thread, only stop waiting for it (and unqueue the call).
            return await asyncio.wrap_future(submitted)
        except asyncio.CancelledError:
            self.cancel(call_id)  # a running call ends promptly, a queued one never runs; the rest go on
            raise

    def _forget(self, call_id: int) -> None:
        with self._cancel_lock:
            self._queued.discard(call_id)
            self._cancelled.discard(call_id)

    # `timeout` is the sandbox's hard limit for the code (enforced inside the container), not a limit on the
    # await; wrap the await in `asyncio.timeout` for that (cancelling stops the code in the sandbox too).
    async def arun_python(self, code: str, timeout: float | None = None) -> ExecResult:  # noqa: ASYNC109
        return await self._cancellable(self._run_python, code, timeout)

    async def arun_shell(self, cmd: str, timeout: float | None = None) -> ExecResult:  # noqa: ASYNC109
        return await self._cancellable(self._run_shell, cmd, timeout)

    async def awrite_file(self, path: str, data: str | bytes) -> str:
        return await self._in_thread(self.write_file, path, data)

    async def aread_file(self, path: str) -> bytes:
        return await self._in_thread(self.read_file, path)

    async def areset(self) -> None:
        await self._in_thread(self.reset)

    # ------------------------------------------------------------------ results

    def _lost_result(self, lost: _Lost, started: float) -> ExecResult:
        return ExecResult(
            ok=False,
            error=lost.message,
            timed_out=lost.cause == "unresponsive",
            state_lost=True,
            sandbox_replaced=not self._closed,
            lost_cause=lost.cause,
            duration_s=time.monotonic() - started,
        )

    def _python_result(self, a: Answer, timeout: float, replaced_before: bool) -> ExecResult:
        timed_out, cancelled, crashed = a["timed_out"], a["cancelled"], a["crashed"]
        state_lost, oom = a["state_lost"], a["oom_killed"]
        sig: int | None = a["signal"]
        error: str | None = a["error"]  # the exception, if the cell raised one
        if timed_out or cancelled:
            what = f"timed out after {timeout:g} s" if timed_out else "cancelled"
            how = (
                "killed: interpreter restarted, variables lost"
                if state_lost
                else "interrupted: variables kept"
            )
            error = f"{what} ({how})"
        elif crashed:
            if oom:
                cause = f"ran out of memory (limit {self.config.memory})"
            elif sig is not None:
                cause = f"was killed by {signal_name(sig)}"
            else:
                cause = f"exited with status {a['exit_code']}"
            error = f"the Python process {cause}; it was restarted: variables lost, files kept"
        lost_before = (a["lost_before"] or replaced_before) and not crashed
        if lost_before:
            note = "the Python state had been lost before this call (it ran in a fresh interpreter)"
            error = note if error is None else f"{error}; {note}"
        return ExecResult(
            **_measured(a),
            ok=not (timed_out or cancelled or crashed) and a["error"] is None,
            error=error,
            timed_out=timed_out,
            value=a["value"],
            traceback=a["traceback"],
            exit_code=a["exit_code"] if crashed else None,
            state_lost=state_lost or lost_before,
            sandbox_replaced=replaced_before,
            oom_killed=oom,
            cancelled=cancelled,
            signal=sig if crashed else None,
            crashed=crashed,
            lost_before=lost_before,
        )

    def _shell_result(self, a: Answer, timeout: float, replaced_before: bool) -> ExecResult:
        timed_out, cancelled = a["timed_out"], a["cancelled"]
        exit_code: int | None = a["exit_code"]
        sig: int | None = a["signal"]
        error: str | None = a["error"]  # the shell could not even be started
        if timed_out:
            error = f"timed out after {timeout:g} s: the command and everything it started were killed"
        elif cancelled:
            error = "cancelled: the command and everything it started were killed"
        elif sig is not None:
            error = f"the command was killed by {signal_name(sig)}"
        elif exit_code:
            error = f"exit status {exit_code}"
        if error is not None and a["oom_killed"]:
            error += f"; a process ran out of memory (limit {self.config.memory}) and was killed"
        ok = error is None
        python_lost: bool = a["python_lost"]
        if python_lost:
            cause = f"ran out of memory (limit {self.config.memory})" if a["oom_killed"] else "died"
            note = (
                f"the Python process {cause} during the command; it was restarted: variables lost, files kept"
            )
            error = note if error is None else f"{error}; {note}"
        if replaced_before:
            note = "the sandbox had died before this call and was replaced: variables and files were lost"
            error = note if error is None else f"{error}; {note}"
        return ExecResult(
            **_measured(a),
            ok=ok,
            error=error,
            timed_out=timed_out,
            exit_code=exit_code,
            state_lost=replaced_before or python_lost,
            sandbox_replaced=replaced_before,
            oom_killed=a["oom_killed"],
            cancelled=cancelled,
            signal=sig,
            crashed=python_lost,
            lost_before=replaced_before,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else (self.container_id or "not started")[:12]
        return f"DockerSandbox(image={self.image!r}, {state})"
