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
import signal
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from sandboxes._channel import DEFAULT_MAX_FRAME, Channel, ChannelClosed, ChannelTimeout, ProtocolError
from sandboxes._engine import get_client, owner_labels, remove_container, remove_dead_leftovers
from sandboxes.config import ExecResult, SandboxConfig
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


class _Lost(Exception):
    """The container had to be replaced during a call."""

    def __init__(self, message: str, *, timed_out: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.timed_out = timed_out


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise ProtocolError("expected a string in the runner's answer")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _int(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError("expected an integer in the runner's answer")
    return value


class DockerSandbox:
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
        self.replacements = 0
        """How many times the container was replaced after its runner died or hung."""

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

    def __enter__(self) -> DockerSandbox:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def astart(self) -> DockerSandbox:
        return await self._in_thread(self.start)

    async def aclose(self) -> None:
        # Not on the sandbox's own executor: that one may still be busy with a call being cancelled.
        await asyncio.to_thread(self.close)

    async def __aenter__(self) -> DockerSandbox:
        return await self.astart()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

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
            "pids_limit": cfg.pids_limit,
            "mem_limit": cfg.memory,
            "memswap_limit": cfg.memory,
            "nano_cpus": int(cfg.cpus * 1e9),
            "init": True,
            "auto_remove": True,
            "ulimits": [Ulimit(name="core", soft=0, hard=0), Ulimit(name="nofile", soft=1024, hard=1024)],
            "log_config": LogConfig(type=cfg.log_driver),
        }
        return {
            "name": f"qwq-sandbox-{secrets.token_hex(6)}",
            "command": ["python3", "-I", "-c", _runner()],
            # stdin_open without detach makes the SDK set StdinOnce: when the host's attach connection closes
            # (even when the host process is SIGKILLed) Docker closes the runner's stdin, the runner exits and
            # `auto_remove` deletes the container.
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
            answer = channel.recv(time.monotonic() + self.config.start_timeout)
            if answer.get("ok") is not True:
                raise SandboxStartError(f"the runner did not start: {answer.get('error')}")
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

    def _call(self, request: dict[str, Any], wait_s: float) -> dict[str, Any]:
        """Send one request and return its answer; raises `_Lost` after replacing a dead or hung container."""
        with self._lock:
            if self._container is None:
                self.start()
            channel = self._channel
            assert channel is not None
            request = {**request, "id": next(_ids)}
            try:
                channel.send(request)
            except ChannelClosed:
                # Died between calls, so this request never ran: replace and send it once more.
                self._replace()
                channel = self._channel
                assert channel is not None
                channel.send(request)
                request["_lost_before"] = True
            try:
                answer = self._answer_to(channel, request["id"], time.monotonic() + wait_s)
            except KeyboardInterrupt:
                # Ctrl-C on the host: stop the code in the sandbox too; its late answer is skipped next time.
                self.cancel()
                raise
            except ChannelTimeout:
                self._replace()
                raise _Lost(
                    "The sandbox stopped responding and was replaced by a fresh one: "
                    "all variables and files were lost.",
                    timed_out=True,
                ) from None
            except (ChannelClosed, ProtocolError) as exc:
                if self._closed:
                    raise _Lost("The sandbox was closed while the call was running.") from None
                self._replace()
                cause = (
                    "sent data that is not its protocol (was its output written to?)"
                    if isinstance(exc, ProtocolError)
                    else "process died (was it killed?)"
                )
                raise _Lost(
                    f"The sandbox's supervisor {cause} and the sandbox was replaced by a fresh one: "
                    f"all variables and files were lost. ({exc})"
                ) from None
            if request.get("_lost_before"):
                answer["lost_before"] = True
                answer["replaced_before"] = True
            return answer

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

    def cancel(self) -> None:
        """Ask the runner to stop the call in progress (from any thread); a no-op when idle."""
        channel = self._channel
        if channel is not None:
            with contextlib.suppress(ChannelClosed):
                channel.send({"op": "cancel"})

    def run_python(self, code: str, timeout: float | None = None) -> ExecResult:
        """Run a cell in the persistent namespace (like a notebook: a trailing expression's repr is `value`)."""
        timeout = timeout or self.config.default_timeout
        started = time.monotonic()
        request = {
            "op": "python",
            "code": code,
            "timeout": timeout,
            "max_output": self.config.max_output_bytes,
            "value_limit": self.config.max_value_chars,
        }
        try:
            answer = self._call(request, timeout + self.config.kill_grace)
        except _Lost as lost:
            return self._lost_result(lost, started)
        try:
            return self._python_result(answer, timeout)
        except ProtocolError as exc:
            self._replace()
            return self._lost_result(
                _Lost(f"The sandbox answered nonsense and was replaced ({exc})."), started
            )

    def run_shell(self, cmd: str, timeout: float | None = None) -> ExecResult:
        """Run `bash -c cmd` (or `sh`) in the workspace; everything it started is killed when it ends."""
        timeout = timeout or self.config.default_timeout
        started = time.monotonic()
        request = {"op": "shell", "cmd": cmd, "timeout": timeout, "max_output": self.config.max_output_bytes}
        try:
            answer = self._call(request, timeout + self.config.kill_grace)
        except _Lost as lost:
            return self._lost_result(lost, started)
        try:
            return self._shell_result(answer, timeout)
        except ProtocolError as exc:
            self._replace()
            return self._lost_result(
                _Lost(f"The sandbox answered nonsense and was replaced ({exc})."), started
            )

    def write_file(self, path: str, data: str | bytes) -> str:
        """Write a file under /workspace (parents created); returns its absolute path in the sandbox."""
        raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        request = {"op": "write", "path": path, "data": base64.b64encode(raw).decode("ascii")}
        answer = self._file_call(request)
        return _str(answer.get("path"))

    def read_file(self, path: str) -> bytes:
        """The bytes of a file under /workspace (at most `config.max_read_bytes`)."""
        request = {"op": "read", "path": path, "max_bytes": self.config.max_read_bytes}
        answer = self._file_call(request)
        try:
            return base64.b64decode(_str(answer.get("data")), validate=True)
        except ValueError as exc:
            raise ProtocolError(f"bad file data: {exc}") from exc

    def reset(self) -> None:
        """Start a fresh Python namespace (files in the workspace stay)."""
        answer = self._file_call({"op": "reset"})
        del answer

    def _file_call(self, request: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = self._call(request, 60.0)
        except _Lost as lost:
            raise SandboxFileError(lost.message) from None
        if answer.get("ok") is not True:
            raise SandboxFileError(str(answer.get("error") or "the file operation failed"))
        return answer

    # ------------------------------------------------------------------ async

    def _in_thread(self, fn: Callable[..., _T], *args: Any) -> asyncio.Future[_T]:
        # A private single thread per sandbox: calls on one sandbox are serial anyway, and many sandboxes must
        # not queue behind each other in the loop's small default executor.
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qwq-sandbox")
        return asyncio.wrap_future(self._executor.submit(fn, *args))

    async def _cancellable(self, fn: Callable[..., _T], *args: Any) -> _T:
        future = self._in_thread(fn, *args)
        try:
            return await future  # cancelling this cannot stop the running thread, only stop waiting for it
        except asyncio.CancelledError:
            self.cancel()  # the thread's call ends promptly; the caller's cancellation goes on
            raise

    # `timeout` is the sandbox's hard limit for the code (enforced inside the container), not a limit on the
    # await; wrap the await in `asyncio.timeout` for that (cancelling stops the code in the sandbox too).
    async def arun_python(self, code: str, timeout: float | None = None) -> ExecResult:  # noqa: ASYNC109
        return await self._cancellable(self.run_python, code, timeout)

    async def arun_shell(self, cmd: str, timeout: float | None = None) -> ExecResult:  # noqa: ASYNC109
        return await self._cancellable(self.run_shell, cmd, timeout)

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
            timed_out=lost.timed_out,
            state_lost=True,
            sandbox_replaced=not self._closed,
            duration_s=time.monotonic() - started,
        )

    def _python_result(self, a: dict[str, Any], timeout: float) -> ExecResult:
        if a.get("ok") is not True:
            raise ProtocolError(str(a.get("error")))
        error = _opt_str(a.get("error"))
        timed_out = a.get("timed_out") is True
        cancelled = a.get("cancelled") is True
        state_lost = a.get("state_lost") is True
        crashed = a.get("crashed") is True
        oom = a.get("oom_killed") is True
        exit_code, sig = _int(a.get("exit_code")), _int(a.get("signal"))
        if timed_out or cancelled:
            what = f"Timed out after {timeout:g} s" if timed_out else "Cancelled"
            if state_lost:
                error = f"{what}: the Python process was killed and restarted, so all variables were lost."
            else:
                error = f"{what}: the code was interrupted with KeyboardInterrupt; variables are kept."
        elif crashed:
            if oom or sig == signal.SIGKILL:
                cause = (
                    f"it ran out of memory (limit {self.config.memory})" if oom else "it was killed (SIGKILL)"
                )
                error = f"The Python process died: {cause}."
            elif sig is not None:
                error = f"The Python process died from {_signal_name(sig)} (a crash in native code?)."
            else:
                error = (
                    f"The Python process exited with status {exit_code} (os._exit or sys.exit in a thread?)."
                )
            error += " It was restarted: all variables and imports were lost (files in /workspace are kept)."
        if a.get("lost_before") is True and not crashed:
            note = "Note: the Python state had been lost before this call; it ran in a fresh interpreter."
            error = note if error is None else f"{error} {note}"
        ok = not (timed_out or cancelled or crashed) and _opt_str(a.get("error")) is None
        return ExecResult(
            stdout=_str(a.get("stdout")),
            stderr=_str(a.get("stderr")),
            ok=ok,
            error=error,
            timed_out=timed_out,
            duration_s=float(a.get("duration_s") or 0.0),
            value=_opt_str(a.get("value")),
            traceback=_opt_str(a.get("traceback")),
            exit_code=exit_code if crashed else None,
            state_lost=state_lost,
            sandbox_replaced=a.get("replaced_before") is True,
            truncated=a.get("truncated") is True,
            stdout_bytes=_int(a.get("stdout_bytes")) or 0,
            stderr_bytes=_int(a.get("stderr_bytes")) or 0,
            oom_killed=oom,
            cancelled=cancelled,
        )

    def _shell_result(self, a: dict[str, Any], timeout: float) -> ExecResult:
        if a.get("ok") is not True:
            raise ProtocolError(str(a.get("error")))
        if a.get("error") is not None:  # the shell could not even be started
            return ExecResult(ok=False, error=_str(a.get("error")))
        timed_out = a.get("timed_out") is True
        cancelled = a.get("cancelled") is True
        exit_code, sig = _int(a.get("exit_code")), _int(a.get("signal"))
        error: str | None = None
        if timed_out:
            error = f"Timed out after {timeout:g} s: the command and everything it started were killed."
        elif cancelled:
            error = "Cancelled: the command and everything it started were killed."
        elif sig is not None:
            error = f"The command was killed by {_signal_name(sig)}."
        elif exit_code:
            error = f"Exit status {exit_code}."
        if error is not None and a.get("oom_killed") is True:
            error += f" A process ran out of memory (limit {self.config.memory}) and was killed."
        note = None
        if a.get("replaced_before") is True:
            note = (
                "Note: the sandbox had died before this call and was replaced: variables and files were lost."
            )
            error = note if error is None else f"{error} {note}"
        return ExecResult(
            stdout=_str(a.get("stdout")),
            stderr=_str(a.get("stderr")),
            ok=error is None or (note is not None and error == note),
            error=error,
            timed_out=timed_out,
            duration_s=float(a.get("duration_s") or 0.0),
            exit_code=exit_code,
            state_lost=note is not None,
            sandbox_replaced=note is not None,
            truncated=a.get("truncated") is True,
            stdout_bytes=_int(a.get("stdout_bytes")) or 0,
            stderr_bytes=_int(a.get("stderr_bytes")) or 0,
            oom_killed=a.get("oom_killed") is True,
            cancelled=cancelled,
        )

    def __repr__(self) -> str:
        state = "closed" if self._closed else (self.container_id or "not started")[:12]
        return f"DockerSandbox(image={self.image!r}, {state})"
