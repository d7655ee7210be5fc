"""The in-container runner: a supervisor that keeps a persistent Python worker and runs shell commands.

This file is sent as the container command (`python3 -I -c <this source>`), so it must stay standard-library only
and run on any python3 from 3.8 on; it is never imported by the host at run time (tests import it to check it).

Process design, inside the container's own PID namespace:

    PID 1  this supervisor: talks to the host over fds 0/1 (length-prefixed JSON frames), never runs model code,
           reaps orphans. Being the namespace's init, it cannot be stopped or killed from inside (Linux drops
           SIGSTOP and SIGKILL sent to PID 1 by its own namespace; other signals are caught and ignored).
      └─ worker (its own process group): holds the persistent namespace, runs Python cells; forked from the
           supervisor, so a fresh one costs a fork, not an interpreter start.
      └─ shell commands: `bash -c` (or `sh -c`) in a new session, one per call.

The container lives exactly as long as its host: the host's attach connection is the only writer of the
supervisor's stdin (Docker closes it when the connection drops, also when the host is SIGKILLed). A watchdog
thread waits for that hang-up and ends PID 1, which ends every process of the container at once, whatever the
main loop is doing at that moment. The model's code cannot hold the stdin open or stop the watchdog: the
supervisor makes itself non-dumpable before any code runs, so its `/proc/1/fd/*` (and its memory) are closed
to processes without CAP_SYS_PTRACE, which the container never has; and PID 1 cannot be SIGSTOPped from inside.

On timeout the supervisor sends the worker SIGINT (a KeyboardInterrupt keeps the namespace), waits a short
grace, then SIGKILLs the worker's process group and forks a fresh worker (state lost). Shell commands are
SIGKILLed with their session. After every call every process other than the supervisor and the worker is
killed, so nothing started by a call outlives it; threads started by a cell live on in the worker (they are
part of its state, like its variables). Every request carries an id; a cancel names the call it stops, so
cancelling a call that is only queued never touches the one running. The model's code runs as the same user
as the supervisor; the host treats every frame as untrusted anyway and replaces a container whose runner
died or misbehaved. Only the container boundary is a security boundary.
"""

from __future__ import annotations

import ast
import base64
import builtins
import contextlib
import fcntl
import io
import json
import linecache
import os
import select
import signal
import stat
import struct
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

WORKSPACE = "/workspace"
HEADER = struct.Struct(">I")
MAX_FRAME = 512 * 1024 * 1024
CHUNK = 65536
# Error messages are cut to this many characters (a path in them to the second): the host refuses longer ones.
MAX_ERROR = 2000
MAX_PATH_IN_ERROR = 300
# After SIGINT, how long a cell may take to unwind (finally blocks, KeyboardInterrupt handlers) before SIGKILL.
INTERRUPT_GRACE_S = 1.0
# Make PID 1 non-dumpable (see the module doc). Tests of the host's frame checks turn this off to forge frames.
GUARDED = True
PR_SET_DUMPABLE = 4


# ---------------------------------------------------------------------------------------------- framing


def read_exact(fd: int, n: int) -> bytes | None:
    """Read exactly n bytes from a blocking fd; None on end of file before the first byte or mid-frame."""
    parts = []
    while n:
        try:
            chunk = os.read(fd, n)
        except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for old interpreters
            continue
        except BlockingIOError:
            select.select([fd], [], [])
            continue
        if not chunk:
            return None
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)


def read_frame(fd: int) -> Any:
    """One JSON frame, or None at end of file (the other side is gone)."""
    head = read_exact(fd, HEADER.size)
    if head is None:
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_FRAME:
        raise ValueError("frame too large")
    body = read_exact(fd, size)
    if body is None:
        return None
    return json.loads(body.decode("utf-8"))


def write_frame(fd: int, obj: Any) -> None:
    body = json.dumps(obj, ensure_ascii=True, separators=(",", ":")).encode("ascii")
    data = memoryview(HEADER.pack(len(body)) + body)
    while data:
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        data = data[written:]


def set_nonblocking(fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)


# ---------------------------------------------------------------------------------------------- output capture


class Capture:
    """Keeps the first and last `limit // 2` bytes of a stream and counts the rest, so 100 MB costs nothing."""

    def __init__(self, limit: int) -> None:
        self.half = max(limit // 2, 1)
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.half - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            if len(data) >= self.half:
                self.tail = bytearray(data[-self.half :])
            else:
                self.tail += data
                if len(self.tail) > self.half:
                    del self.tail[: len(self.tail) - self.half]

    @property
    def truncated(self) -> bool:
        return self.total > len(self.head) + len(self.tail)

    def text(self) -> str:
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        if not self.truncated:
            return head + tail
        omitted = self.total - len(self.head) - len(self.tail)
        return f"{head}\n[... {omitted} bytes of output omitted ...]\n{tail}"


def drain(fd: int, capture: Capture) -> bool:
    """Read what is available now from a non-blocking fd; False once it reached end of file."""
    while True:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        capture.feed(data)


# ---------------------------------------------------------------------------------------------- processes


def oom_kills() -> int:
    """How many processes the kernel killed for lack of memory in this container's cgroup (v1 or v2)."""
    for path in ("/sys/fs/cgroup/memory/memory.oom_control", "/sys/fs/cgroup/memory.events"):
        try:
            with open(path) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


def process_state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return "gone"
    return stat[stat.rfind(b")") + 2 :][:1].decode("ascii", "replace")


def stat_fields(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (state is [0], parent pid [1]); [] if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return []
    return stat[stat.rfind(b")") + 2 :].decode("ascii", "replace").split()


def kill_own_children() -> None:
    """SIGKILL and reap this process's children, so their zombies do not use up the pids limit.

    The worker calls this after each cell: nothing a cell started outlives it anyway (the supervisor sweeps
    the rest), but only the parent can reap its children, and a fork bomb leaves dozens of them.
    """
    me = str(os.getpid())
    for _ in range(100):
        children = [
            int(name)
            for name in os.listdir("/proc")
            if name.isdigit() and stat_fields(int(name))[1:2] == [me]
        ]
        if not children:
            return
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def sweep(keep: set[int]) -> int:
    """SIGKILL every process of the container except PID 1, this supervisor and `keep`; returns how many.

    Repeated until nothing is left, because a fork bomb keeps forking while it is being killed; the pids
    limit bounds how long that can go on.
    """
    keep = keep | {1, os.getpid()}
    killed = 0
    for _ in range(200):
        victims = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                pid = int(name)
                if pid not in keep and process_state(pid) not in ("Z", "X", "gone"):
                    victims.append(pid)
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        reap(victims)
        time.sleep(0.001)
    reap_orphans(keep)
    return killed


def reap_orphans(keep: set[int]) -> None:
    """Collect the zombies among this process's children, except `keep`.

    As the namespace's init the supervisor inherits every orphan (a cell's double-forked daemon); their zombies
    would otherwise use up the pids limit. `keep` holds the worker, whose status the supervisor reads itself.
    """
    me = str(os.getpid())
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in keep:
            continue
        fields = stat_fields(int(name))
        if fields[:1] == ["Z"] and fields[1:2] == [me]:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(name), os.WNOHANG)


def reap(pids: list[int]) -> None:
    """Collect the exit status of those of `pids` that are our own children (others are reaped by PID 1)."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def describe_status(status: int) -> tuple[int | None, int | None]:
    """(exit code, signal number) from a waitpid status."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, None


def child_setup() -> None:
    """In a new child: make it the first thing the OOM killer picks, slightly nicer than the supervisor, and
    unable to signal the supervisor (see `SignalShield`)."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    with contextlib.suppress(OSError):
        os.nice(5)
    if SHIELD is not None:
        SHIELD.install()


# ---------------------------------------------------------------------------------------------- the shield

# struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 * i (the low 32 bits first: little-endian only).
_LD, _JEQ, _JGE, _RET = 0x20, 0x15, 0x35, 0x06
_ALLOW, _EPERM = 0x7FFF0000, 0x00050001
_MINUS_ONE = 0xFFFFFFFF
# arch -> (AUDIT_ARCH value, syscall numbers by name)
_SYSCALLS: dict[str, tuple[int, dict[str, int]]] = {
    "x86_64": (
        0xC000003E,
        {"kill": 62, "tkill": 200, "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297,
         "pidfd_open": 434, "pidfd_send_signal": 424, "setpgid": 109, "ptrace": 101, "fcntl": 72, "ioctl": 16,
         "process_vm_readv": 310, "process_vm_writev": 311},
    ),
    "aarch64": (
        0xC00000B7,
        {"kill": 129, "tkill": 130, "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240,
         "pidfd_open": 434, "pidfd_send_signal": 424, "setpgid": 154, "ptrace": 117, "fcntl": 25, "ioctl": 29,
         "process_vm_readv": 270, "process_vm_writev": 271},
    ),
}  # fmt: skip


class SignalShield:
    """A seccomp filter for every process the model's code runs in: no signal, trace or memory access can
    reach the supervisor (PID 1) or its watchdog thread.

    Linux already drops SIGSTOP and SIGKILL sent to a namespace's init from inside; gVisor does not, so there
    a stopped supervisor would outlive its host. The filter refuses (EPERM) `kill`, `tkill`, `tgkill`,
    `rt_(tg)sigqueueinfo`, `pidfd_open`, `ptrace`, `process_vm_readv/writev` aimed at PID 1, at -1 (everyone,
    or PID 1's process group) or at the watchdog's thread, joining PID 1's process group, `pidfd_send_signal`,
    and making PID 1 the owner of a descriptor's SIGIO (`F_SETOWN`, `FIOSETOWN`, `SIOCSPGRP`). Any other
    architecture's system calls (a 64-bit process entering the 32-bit way) are refused as a whole.
    """

    def __init__(self, arch: str, protected: list[int]) -> None:
        import ctypes

        audit_arch, nr = _SYSCALLS[arch]
        program = self.program(audit_arch, nr, protected, x32=arch == "x86_64")

        class Filter(ctypes.Structure):
            _fields_ = [
                ("code", ctypes.c_ushort),
                ("jt", ctypes.c_ubyte),
                ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint),
            ]

        class Program(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

        self.filters = (Filter * len(program))(*[Filter(*op) for op in program])
        self.prog = Program(len(program), self.filters)
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.ctypes = ctypes

    @staticmethod
    def program(
        audit_arch: int, nr: dict[str, int], protected: list[int], x32: bool
    ) -> list[tuple[int, ...]]:
        """The BPF program as (code, jt, jf, k); "deny" jumps are resolved at the end."""
        pids = sorted({1, _MINUS_ONE, *protected})
        rules: list[tuple[str, int, list[int]]] = [  # (syscall, argument, refused values)
            *(
                (name, 0, pids)
                for name in ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")
            ),
            *((name, 0, pids) for name in ("pidfd_open", "process_vm_readv", "process_vm_writev")),
            ("ptrace", 1, pids),
            ("setpgid", 1, [1]),
            ("fcntl", 1, [8, 15]),  # F_SETOWN, F_SETOWN_EX
            ("ioctl", 1, [0x8901, 0x8902]),  # FIOSETOWN, SIOCSPGRP
        ]
        ops: list[Any] = [(_LD, 0, 0, 4), (_JEQ, 1, 0, audit_arch), (_RET, 0, 0, _EPERM), (_LD, 0, 0, 0)]
        if x32:
            ops.append((_JGE, "deny", 0, 0x40000000))
        ops.append((_JEQ, "deny", 0, nr["pidfd_send_signal"]))
        for name, arg, values in rules:
            block: list[Any] = [(_LD, 0, 0, 16 + 8 * arg)]
            block += [(_JEQ, "deny", 0, value) for value in values]
            block.append((_RET, 0, 0, _ALLOW))
            ops.append((_JEQ, 0, len(block), nr[name]))
            ops += block
        ops += [(_RET, 0, 0, _ALLOW), (_RET, 0, 0, _EPERM)]
        deny = len(ops) - 1
        return [tuple(deny - i - 1 if part == "deny" else part for part in op) for i, op in enumerate(ops)]

    def install(self) -> None:
        """Apply the filter to the calling process (and everything it starts); it cannot be lifted."""
        self.libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS (Docker's no-new-privileges set it already)
        if self.libc.prctl(22, 2, self.ctypes.byref(self.prog), 0, 0) != 0:  # PR_SET_SECCOMP, FILTER
            os._exit(71)  # never run the model's code unshielded once the shield was promised


SHIELD: SignalShield | None = None


# ---------------------------------------------------------------------------------------------- the worker


class Worker:
    """The supervisor's handle on one Python worker process."""

    def __init__(self, pid: int, req_w: int, res_r: int, out_r: int, err_r: int) -> None:
        self.pid = pid
        self.req_w = req_w
        self.res_r = res_r
        self.out_r = out_r
        self.err_r = err_r
        self.status: int | None = None

    def fds(self) -> list[int]:
        return [self.req_w, self.res_r, self.out_r, self.err_r]

    def alive(self) -> bool:
        if self.status is not None:
            return False
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            self.status = 0
            return False
        if pid == 0:
            return True
        self.status = status
        return False

    def kill(self) -> None:
        """SIGKILL the worker's whole process group and collect it."""
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            os.kill(self.pid, signal.SIGKILL)  # in case it left its process group
        if self.status is None:
            try:
                _, self.status = os.waitpid(self.pid, 0)
            except ChildProcessError:
                self.status = 0
        for fd in self.fds():
            with contextlib.suppress(OSError):
                os.close(fd)


def spawn_worker(close_fds: list[int]) -> Worker:
    """Fork a fresh worker with an empty namespace (retrying while a fork bomb's leftovers free their pids)."""
    req_r, req_w = os.pipe()
    res_r, res_w = os.pipe()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    deadline = time.monotonic() + 5.0
    while True:
        try:
            pid = os.fork()
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise
            sweep(set())
            time.sleep(0.01)
    if pid == 0:  # the worker
        try:
            os.setpgid(0, 0)
            for fd in [*close_fds, req_w, res_r, out_r, err_r]:
                os.close(fd)
            worker_main(req_r, res_w, out_w, err_w)
        finally:
            os._exit(70)
    for fd in (req_r, res_w, out_w, err_w):
        os.close(fd)
    # Also from the parent, so the group exists before we might signal it; fails harmlessly if the child
    # did it first or already died.
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)
    for fd in (res_r, out_r, err_r):
        set_nonblocking(fd)
    return Worker(pid, req_w, res_r, out_r, err_r)


def text_stream(fd: int) -> Any:
    """A line-buffered text stream on `fd`: lines printed by Python stay in order with what subprocesses and
    `os.write` put on the same descriptor, as in a terminal."""
    return open(fd, "w", encoding="utf-8", errors="backslashreplace", closefd=False, buffering=1)


def worker_setup(out_w: int, err_w: int) -> None:
    """A fresh worker's signals (Ctrl-C raises KeyboardInterrupt again) and its stdin, stdout and stderr."""
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.set_wakeup_fd(-1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    os.close(out_w)
    os.close(err_w)
    child_setup()
    set_dumpable(1)  # only the supervisor is shielded; the worker is the model's own process


def worker_main(req_r: int, res_w: int, out_w: int, err_w: int) -> None:
    """The worker's loop: read a cell, run it in the persistent namespace, answer; never returns."""
    worker_setup(out_w, err_w)
    me = os.getpid()

    def streams() -> None:
        # Rebuilt when the model's code closed or replaced them, so one bad cell does not mute the next ones.
        if getattr(sys.stdout, "fileno", None) is None or sys.stdout.closed:
            sys.stdout = text_stream(1)
        if getattr(sys.stderr, "fileno", None) is None or sys.stderr.closed:
            sys.stderr = text_stream(2)

    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115 - lives as long as the process
    sys.stdout = text_stream(1)
    sys.stderr = text_stream(2)
    sys.path.insert(0, "")
    sys.argv = [""]
    namespace: dict[str, Any] = {"__name__": "__main__", "__builtins__": builtins}
    while True:
        try:
            request = read_frame(req_r)
        except KeyboardInterrupt:  # a late interrupt that arrived after the cell had finished
            continue
        if request is None:
            os._exit(0)
        streams()
        try:
            result = run_cell(namespace, request["code"], int(request["cell"]), int(request["value_limit"]))
        except KeyboardInterrupt:
            result = {"error": "KeyboardInterrupt", "traceback": None, "value": None}
        if os.getpid() != me:
            os._exit(0)  # a process the cell forked fell through to here: it must not answer
        try:
            kill_own_children()
        except KeyboardInterrupt:
            kill_own_children()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(BaseException):
                stream.flush()
        try:
            write_frame(res_w, result)
        except KeyboardInterrupt:
            write_frame(res_w, result)


def run_cell(namespace: dict[str, Any], code: str, cell: int, value_limit: int) -> dict[str, Any]:
    """Run one cell like a notebook: statements, then the value of a trailing expression; errors as traceback."""
    filename = f"<cell-{cell}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    try:
        tree = ast.parse(code, filename, "exec")
        last = None
        final = tree.body[-1] if tree.body else None
        if isinstance(final, ast.Expr):
            tree.body.pop()
            last = ast.Expression(final.value)
        body = compile(tree, filename, "exec")
        tail = compile(last, filename, "eval") if last is not None else None
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as exc:
        lines = traceback.format_exception_only(type(exc), exc)
        return {"error": lines[-1].strip(), "traceback": "".join(lines), "value": None}
    try:
        exec(body, namespace)
        value = eval(tail, namespace) if tail is not None else None
    except BaseException as exc:
        tb = exc.__traceback__
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("<cell-"):
            tb = tb.tb_next
        try:
            lines = traceback.format_exception(type(exc), exc, tb)
            summary = traceback.format_exception_only(type(exc), exc)[-1].strip()
        except BaseException:
            lines, summary = [f"{type(exc).__name__}\n"], type(exc).__name__
        return {"error": summary, "traceback": "".join(lines), "value": None}
    if value is None:
        return {"error": None, "traceback": None, "value": None}
    namespace["_"] = value
    try:
        text = repr(value)
    except BaseException as exc:
        text = f"<repr failed: {type(exc).__name__}: {exc}>"
    return {"error": None, "traceback": None, "value": cap_text(text, value_limit)}


# ---------------------------------------------------------------------------------------------- the supervisor


class Cancelled(Exception):
    """The host asked to stop the running call."""


def cap_text(text: str, limit: int) -> str:
    """`text`, or its head and tail around a note of how much was cut when it is longer than `limit`."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - 2 * half} characters omitted ...]\n{text[len(text) - half :]}"


def as_text(value: Any, limit: int) -> str | None:
    """A field of the worker's answer as the host expects it: None, or a string of about `limit` characters."""
    if value is None:
        return None
    return cap_text(value if isinstance(value, str) else repr(value), limit)


def read_worker_result(fd: int) -> Any:
    """The worker's answer; None if it is not a frame (the worker died mid-write, or the cell forged one)."""
    try:
        return read_frame(fd)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


class Cell:
    """One Python cell running in the worker: its deadline, its interruption, and what came back."""

    def __init__(self, supervisor: Supervisor, worker: Worker, timeout: float, max_output: int) -> None:
        self.supervisor = supervisor
        self.worker = worker
        self.deadline = time.monotonic() + timeout
        self.out, self.err = Capture(max_output), Capture(max_output)
        self.interrupted_at: float | None = None
        self.timed_out = self.cancelled = self.died = False
        self.result: Any = None

    def wait(self) -> None:
        """Until the worker answers or dies; at the deadline or on cancel it is interrupted, after a grace killed."""
        while True:
            now = time.monotonic()
            if self.interrupted_at is None:
                self.timed_out = self.timed_out or now >= self.deadline
                if self.timed_out or self.cancelled:
                    now = self.interrupt()
            elif now >= self.interrupted_at + INTERRUPT_GRACE_S:
                self.died = True
                return
            end = self.deadline if self.interrupted_at is None else self.interrupted_at + INTERRUPT_GRACE_S
            if self.poll(max(end - now, 0)):
                return

    def interrupt(self) -> float:
        """KeyboardInterrupt in the worker; returns when that was sent."""
        pid = self.worker.pid
        # First everything the cell started (a fork bomb's copies would starve the worker of CPU while it
        # unwinds), then the worker itself. Freezing the group first stops them forking while they are killed.
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGSTOP)
        sweep({pid})
        self.interrupted_at = time.monotonic()
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGINT)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGCONT)
        return self.interrupted_at

    def poll(self, wait: float) -> bool:
        """Handle what becomes ready within `wait` seconds; True once the cell is over (answered or died)."""
        sup, worker = self.supervisor, self.worker
        fds = [sup.proto_in, worker.res_r, worker.out_r, worker.err_r, sup.wake_r]
        ready, _, _ = select.select(fds, [], [], wait)
        if sup.wake_r in ready:
            sup.clear_wakeups()
        if worker.out_r in ready:
            drain(worker.out_r, self.out)
        if worker.err_r in ready:
            drain(worker.err_r, self.err)
        if sup.proto_in in ready and sup.host_cancelled():
            self.cancelled = True
        if worker.res_r in ready:
            self.result = read_worker_result(worker.res_r)
            self.died = self.result is None
            return True
        if sup.wake_r in ready and not worker.alive():
            self.died = True
            return True
        return False


class Supervisor:
    def __init__(self, proto_in: int, proto_out: int, *, guarded: bool = False) -> None:
        self.proto_in = proto_in
        self.proto_out = proto_out
        self.guarded = guarded
        self.wake_r, self.wake_w = os.pipe()
        set_nonblocking(self.wake_r)
        set_nonblocking(self.wake_w)
        for fd in (self.proto_in, self.proto_out, self.wake_r, self.wake_w):
            os.set_inheritable(fd, False)
        self.cell = 0
        self.worker: Worker | None = None
        self.pending: list[Any] = []
        self.current: Any = None  # the id of the request being served
        self.dropped: set[Any] = set()  # ids of pending requests the host cancelled before they ran

    # -- plumbing

    def private_fds(self) -> list[int]:
        return [self.proto_in, self.proto_out, self.wake_r, self.wake_w]

    def new_worker(self) -> Worker:
        self.worker = spawn_worker(self.private_fds())
        return self.worker

    def clear_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except OSError:
            pass

    def host_message(self) -> None:
        """A frame that arrived while a call runs: `cancel` stops the call, others wait their turn; EOF ends all."""
        message = read_frame(self.proto_in)
        if message is None:
            self.shutdown()
        if isinstance(message, dict) and message.get("op") == "cancel":
            target = message.get("id")
            if target is not None and target == self.current:
                raise Cancelled()
            if any(isinstance(p, dict) and p.get("id") == target for p in self.pending):
                self.dropped.add(target)  # queued behind the running call: answered as cancelled, not run
            return  # a cancel for a call that already ended
        # The host may send its next request right after a cancel (Ctrl-C, then a new call): keep it for later.
        self.pending.append(message)

    def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.kill()
        sweep(set())
        os._exit(0)

    # -- operations

    def host_cancelled(self) -> bool:
        """Read the frame the host sent during a call; True if it asks to cancel the call."""
        try:
            self.host_message()
        except Cancelled:
            return True
        return False

    def ready_worker(self) -> tuple[Worker, bool]:
        """The live worker, forking a fresh one if it died between calls (then True: the state was lost)."""
        worker = self.worker
        if worker is not None and worker.alive():
            return worker, False
        if worker is not None:
            worker.kill()
        return self.new_worker(), worker is not None

    def finish_cell(self, cell: Cell) -> tuple[bool, int | None, int | None]:
        """After a cell: (state lost, exit code, signal). A dead worker is collected and a fresh one forked."""
        worker = cell.worker
        drain(worker.out_r, cell.out)
        drain(worker.err_r, cell.err)
        if not cell.died and worker.alive():
            sweep({worker.pid})
            return False, None, None
        worker.kill()  # collects it if needed and closes its pipes
        exit_code, exit_signal = describe_status(worker.status or 0)
        if cell.interrupted_at is not None and exit_signal == signal.SIGKILL and cell.result is None:
            exit_signal = None  # we killed it ourselves: not a crash
        fresh = self.new_worker()
        sweep({fresh.pid})
        return True, exit_code, exit_signal

    def op_python(self, req: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        max_output, value_limit = int(req["max_output"]), int(req["value_limit"])
        worker, lost_before = self.ready_worker()
        self.cell += 1
        ooms_before = oom_kills()
        write_frame(worker.req_w, {"code": req["code"], "cell": self.cell, "value_limit": value_limit})
        cell = Cell(self, worker, float(req.get("timeout", 30.0)), max_output)
        cell.wait()
        state_lost, exit_code, exit_signal = self.finish_cell(cell)
        # The worker runs the model's code, which can write an answer of its own: take nothing in it on trust.
        result = cell.result if isinstance(cell.result, dict) else {}
        return {
            "stdout": cell.out.text(),
            "stderr": cell.err.text(),
            "stdout_bytes": cell.out.total,
            "stderr_bytes": cell.err.total,
            "truncated": cell.out.truncated or cell.err.truncated,
            "value": as_text(result.get("value"), value_limit),
            "error": as_text(result.get("error"), max_output),
            "traceback": as_text(result.get("traceback"), max_output),
            "timed_out": cell.timed_out,
            "cancelled": cell.cancelled,
            "state_lost": state_lost or lost_before,
            "lost_before": lost_before,
            "crashed": state_lost and cell.interrupted_at is None,
            "exit_code": exit_code,
            "signal": exit_signal,
            "oom_killed": oom_kills() > ooms_before,
            "duration_s": time.monotonic() - started,
        }

    def op_shell(self, req: dict[str, Any]) -> dict[str, Any]:
        started = time.monotonic()
        timeout = float(req.get("timeout", 30.0))
        out, err = Capture(int(req["max_output"])), Capture(int(req["max_output"]))
        shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
        ooms_before = oom_kills()
        worker_before = self.worker if self.worker is not None and self.worker.alive() else None
        try:
            proc = subprocess.Popen(
                [shell, "-c", req["cmd"]],
                cwd=WORKSPACE if os.path.isdir(WORKSPACE) else "/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                preexec_fn=child_setup,
            )
        except (OSError, ValueError) as exc:  # ValueError: a command that cannot be encoded (lone surrogates)
            return shell_answer(out, err, error=f"could not start {shell}: {exc}", started=started)
        assert proc.stdout is not None
        assert proc.stderr is not None
        out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
        set_nonblocking(out_fd)
        set_nonblocking(err_fd)
        open_fds = {out_fd: out, err_fd: err}
        deadline = started + timeout
        timed_out = cancelled = False
        while True:
            if proc.poll() is not None:
                break
            wait = deadline - time.monotonic()
            if wait <= 0:
                timed_out = True
                break
            ready, _, _ = select.select([self.proto_in, self.wake_r, *open_fds], [], [], wait)
            if self.wake_r in ready:
                self.clear_wakeups()
            for fd in list(open_fds):
                if fd in ready and not drain(fd, open_fds[fd]):
                    del open_fds[fd]
            if self.proto_in in ready:
                try:
                    self.host_message()
                except Cancelled:
                    cancelled = True
                    break
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        code = proc.wait()
        for fd, capture in open_fds.items():
            drain(fd, capture)
        proc.stdout.close()
        proc.stderr.close()
        python_lost = False
        if worker_before is not None and not worker_before.alive():
            python_lost = True
            worker_before.kill()  # collected already; this closes its pipes
            self.new_worker()
        sweep({self.worker.pid} if self.worker is not None and self.worker.alive() else set())
        killed = timed_out or cancelled
        return shell_answer(
            out,
            err,
            started=started,
            exit_code=None if killed or code < 0 else code,
            exit_signal=-code if code < 0 and not killed else None,
            timed_out=timed_out,
            cancelled=cancelled,
            oom_killed=oom_kills() > ooms_before,
            python_lost=python_lost,
        )

    def op_write(self, req: dict[str, Any]) -> dict[str, Any]:
        path = confine(req["path"])
        data = base64.b64decode(req["data"])
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        if os.path.realpath(parent) != parent:
            raise Refused("outside_workspace", f"only files under {WORKSPACE} can be used: {parent}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(path, flags, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        return {"path": path, "size": len(data)}

    def op_read(self, req: dict[str, Any]) -> dict[str, Any]:
        path = confine(req["path"])
        limit = int(req["max_bytes"])
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
        try:
            info = os.fstat(fd)
            size = info.st_size
            if not stat.S_ISREG(info.st_mode):
                raise Refused("not_a_file", f"not a regular file: {path}")
            if size > limit:
                raise Refused("too_large", f"the file has {size} bytes, more than the limit of {limit}")
            chunks = []
            while True:
                chunk = os.read(fd, CHUNK * 16)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(fd)
        return {"path": path, "data": base64.b64encode(b"".join(chunks)).decode("ascii")}

    def op_reset(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.worker is not None:
            self.worker.kill()
        sweep(set())
        self.new_worker()
        return {}

    def op_ping(self, req: dict[str, Any]) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "python": sys.version.split()[0],
            "uid": os.getuid(),
            "guarded": self.guarded,
        }

    # -- main loop

    def serve(self) -> None:
        self.new_worker()
        while True:
            try:
                request = self.pending.pop(0) if self.pending else read_frame(self.proto_in)
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                request = None
            if request is None:
                self.shutdown()
            if not isinstance(request, dict):
                continue
            op = request.get("op")
            if op == "cancel":
                continue  # arrived after its call had ended
            if op == "exit":
                self.shutdown()
            self.current = request.get("id")
            if self.current in self.dropped and op in ("python", "shell"):
                self.dropped.discard(self.current)
                response = dict(skipped_answer(op), id=self.current, ok=True)
            else:
                response = self.handle(op, request)
            self.current = None
            write_frame(self.proto_out, response)

    def handle(self, op: Any, request: dict[str, Any]) -> dict[str, Any]:
        handler = getattr(self, f"op_{op}", None)
        try:
            if handler is None:
                raise ValueError(f"unknown op {str(op)[:100]!r}")
            return dict(handler(request), id=request.get("id"), ok=True)
        except Exception as exc:
            return failure(request, exc)


def skipped_answer(op: str) -> dict[str, Any]:
    """The answer to a `python` or `shell` call the host cancelled while it waited its turn: it never ran."""
    answer = shell_answer(Capture(1), Capture(1), started=time.monotonic(), cancelled=True)
    if op == "python":
        del answer["python_lost"]
        answer.update(value=None, traceback=None, state_lost=False, lost_before=False, crashed=False)
    return answer


def shell_answer(
    out: Capture,
    err: Capture,
    *,
    started: float,
    error: str | None = None,
    exit_code: int | None = None,
    exit_signal: int | None = None,
    timed_out: bool = False,
    cancelled: bool = False,
    oom_killed: bool = False,
    python_lost: bool = False,
) -> dict[str, Any]:
    """The answer to a shell call: always the same fields, which the host checks one by one.

    `python_lost`: the Python worker died while the command ran (the out-of-memory killer picks the largest
    process, which may well be the worker holding the model's variables); a fresh one was started.
    """
    return {
        "stdout": out.text(),
        "stderr": err.text(),
        "stdout_bytes": out.total,
        "stderr_bytes": err.total,
        "truncated": out.truncated or err.truncated,
        "error": error,
        "exit_code": exit_code,
        "signal": exit_signal,
        "timed_out": timed_out,
        "cancelled": cancelled,
        "oom_killed": oom_killed,
        "python_lost": python_lost,
        "duration_s": time.monotonic() - started,
    }


def failure(request: dict[str, Any], exc: Exception) -> dict[str, Any]:
    """The answer to a request whose operation raised: the error in a line (paths cut, so it stays short)."""
    if isinstance(exc, OSError) and exc.strerror:
        message = f"{exc.strerror}: {cap_text(str(request.get('path', '')), MAX_PATH_IN_ERROR)}"
    elif isinstance(exc, (OSError, Refused)):
        message = str(exc)
    else:
        message = f"{type(exc).__name__}: {exc}"
    reason = exc.reason if isinstance(exc, Refused) else None
    return {"id": request.get("id"), "ok": False, "error": cap_text(message, MAX_ERROR), "reason": reason}


class Refused(Exception):
    """A file operation the runner will not do. `reason` names the case for the host, which words it for the
    model (the sentences live in the host's templates; this file must stay standard-library only)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def confine(path: str) -> str:
    """An absolute path inside the workspace for `path` (relative paths start there); anything else is refused."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise Refused("bad_path", "the path must be a non-empty string without NUL")
    full = os.path.normpath(os.path.join(WORKSPACE, path))
    real = os.path.realpath(full)
    if real != WORKSPACE and not real.startswith(WORKSPACE + "/"):
        raise Refused("outside_workspace", f"only files under {WORKSPACE} can be used: {cap_text(path, 300)}")
    return real


def set_dumpable(value: int) -> bool:
    """prctl(PR_SET_DUMPABLE, value); False where it cannot be done (no ctypes in the image)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_DUMPABLE, value, 0, 0, 0)) == 0
    except (ImportError, OSError, AttributeError):
        return False


def watch_host(fd: int) -> None:
    """Until the host's end of `fd` (the supervisor's stdin) hangs up; then end the whole container.

    Runs in a thread of its own, so a main loop stuck on anything (a worker that half-wrote a frame, a full
    pipe) cannot keep the container alive. No events are requested: a hang-up is always reported.
    """
    poller = select.poll()
    hang_up = getattr(select, "POLLRDHUP", 0)  # a socket's half-close; a pipe reports POLLHUP unasked
    poller.register(fd, hang_up)
    while True:
        for _, events in poller.poll():
            if events & (hang_up | select.POLLHUP | select.POLLERR | select.POLLNVAL):
                os._exit(0)  # PID 1 ending makes the kernel kill every process of the namespace


def shield_children(watchdog: threading.Thread) -> bool:
    """Prepare the `SignalShield` every child installs; False where this machine is not one it knows."""
    global SHIELD
    arch = os.uname().machine
    if arch not in _SYSCALLS or sys.byteorder != "little" or watchdog.native_id is None:
        return False
    try:
        SHIELD = SignalShield(arch, [watchdog.native_id])
    except (ImportError, OSError, AttributeError):
        return False
    return True


def main() -> None:
    # Before anything else runs: PID 1's descriptors and memory become unreachable for the model's code.
    guarded = GUARDED and os.getpid() == 1 and set_dumpable(0)
    # Keep the protocol on private descriptors so nothing printed by accident can corrupt it, and so no child
    # inherits them; fds 0 and 1 become /dev/null and stderr.
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), encoding="utf-8")
    watchdog = threading.Thread(target=watch_host, args=(proto_in,), name="watch-host", daemon=True)
    watchdog.start()
    if guarded:
        guarded = shield_children(watchdog)
    supervisor = Supervisor(proto_in, proto_out, guarded=guarded)

    def ignore(signum: int, frame: Any) -> None:
        pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, ignore)
    signal.set_wakeup_fd(supervisor.wake_w)
    os.environ.setdefault("HOME", WORKSPACE)
    with contextlib.suppress(OSError):
        os.chdir(WORKSPACE)
    supervisor.serve()


if __name__ == "__main__":
    main()
