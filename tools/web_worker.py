"""Page extraction in worker processes that a fetch's deadline can kill.

Turning a body into text (charset detection, readability, markdownify, pypdf) is CPU-bound and its cost
depends on what the page holds: a 5 MB page with a 25,000-row table takes over half a minute, a hostile PDF
longer. A thread cannot be stopped, so extraction in `asyncio.to_thread` kept a CPU busy long after the
fetch had given up, and filled the event loop's default executor that DNS lookups and sandboxes also use.
Here each extraction runs in a worker process; when the deadline passes, the worker is killed (SIGKILL) and
reaped, and the next extraction starts a new one. So the deadline ends the work, not just the wait.

The pool is small (`DEFAULT_WORKERS`, one per CPU up to 4) and belongs to no event loop: any loop, in any
thread, may use it, and workers stay warm (libraries imported) between fetches and between `asyncio.run`
calls. Each extraction is driven by a daemon thread of its own that blocks on the worker's pipes, so no
executor is involved and nothing waits for those threads at interpreter exit. Workers exit by themselves
after `IDLE_EXIT_S` without work, when their stdin closes (the parent exited), or when the parent process
dies (a watchdog thread); they start in a session of their own so that a Ctrl-C in the terminal reaches the
agent only, which then cancels the fetch and so kills the worker.

Protocol, over the worker's stdin and stdout: frames of an 8-byte big-endian length and a payload. A request
is a JSON header line and the body's bytes; a response is "K" (keep me) or "R" (replace me: I grew past
`RETIRE_RSS_BYTES`), a JSON header line and the text in UTF-8. JSON rather than pickle: the worker handles
hostile bytes, and nothing it sends back should be able to run code in the agent.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import struct
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prompts.errors import RunError

__all__ = ["DEFAULT_WORKERS", "IDLE_EXIT_S", "ExtractionPool", "WorkerFailed", "extraction_pool", "main"]


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))  # what this process may run on, not what the machine has
    except (AttributeError, OSError):
        return os.cpu_count() or 1


DEFAULT_WORKERS = max(1, min(4, _usable_cpus()))
"""Worker processes at most: extraction is CPU-bound, more than one per CPU only adds contention."""
IDLE_EXIT_S = 300.0
"""A worker with nothing to do for this long exits; the next extraction starts a new one (~0.5 s)."""
RETIRE_RSS_BYTES = 768 * 1024 * 1024
"""A worker whose memory grew beyond this (after a huge page) is replaced rather than reused."""
RETIRE_AFTER_JOBS = 500

_FRAME = struct.Struct(">Q")
_MAX_RESPONSE = 256 * 1024 * 1024  # the text is capped at max_chars; anything near this is a broken worker
_IDLE_EXIT_CODE = 0
_ROOT = Path(__file__).resolve().parent.parent
# The worker needs `tools.web_extract` (and `prompts.templating` for PDF markers), not the packages' __init__
# modules, which import pydantic and the renderer: a quarter of a second and ~30 MB per worker. Stand-in
# package objects that only know where their files are let those submodules import on their own.
_BOOT = (
    "import sys, types\n"
    "for name in ('tools', 'prompts'):\n"
    "    package = types.ModuleType(name)\n"
    "    package.__path__ = [sys.argv[1] + '/' + name]\n"
    "    sys.modules[name] = package\n"
    "from tools.web_worker import main\n"
    "main()\n"
)


class WorkerFailed(RunError):
    """The worker process died or broke the protocol before answering (killed on deadline, crashed,
    out of memory); `str()` says how."""


# --- the parent's side ----------------------------------------------------------------------------------


class _Worker:
    """One worker process and the pipes to it. Used by one job thread at a time."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, str(_ROOT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            close_fds=True,
            start_new_session=True,
        )
        self.jobs = 0
        self.idle_since = time.monotonic()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def exchange(self, request: bytes) -> bytes:
        """Send one request and wait for its response (blocking; a kill from another thread ends the wait)."""
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None
        assert stdout is not None
        try:
            _write_all(stdin.fileno(), _FRAME.pack(len(request)) + request)
            (size,) = _FRAME.unpack(_read_exact(stdout.fileno(), _FRAME.size))
            if size > _MAX_RESPONSE:
                raise WorkerFailed(f"the worker announced a {size:,}-byte response")
            return _read_exact(stdout.fileno(), size)
        except (OSError, EOFError) as exc:  # BrokenPipeError, or EOF: the process is gone
            raise WorkerFailed(str(exc) or type(exc).__name__) from exc

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()

    def reap(self) -> int:
        """Wait for the process to end (after `kill` or a closed stdin) and close the pipes; its exit code."""
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        return code

    def close(self) -> None:
        """Ask an idle worker to exit (EOF on its stdin) and reap it."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        self.reap()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _read_exact(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    left = size
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise EOFError("the worker closed its output")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


@dataclass
class _Job:
    """One extraction: its request, and what the event loop and the job's thread share about it."""

    request: bytes
    result: concurrent.futures.Future[bytes] = field(default_factory=concurrent.futures.Future)
    cancelled: bool = False
    worker: _Worker | None = None


class ExtractionPool:
    """At most `size` worker processes; `await pool.run(request)` gets a response from one of them.

    Cancelling `run` (a deadline) kills the worker doing that job; a job still waiting for a worker is
    dropped. Thread-safe and usable from any event loop.
    """

    def __init__(self, size: int = DEFAULT_WORKERS) -> None:
        if size < 1:
            raise ValueError("an extraction pool needs at least one worker")
        self.size = size
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._busy = 0  # jobs holding a worker or starting one, and workers being prewarmed
        self._starting = 0  # workers being prewarmed
        self._live: set[_Worker] = set()  # every process not yet reaped

    async def run(self, request: bytes) -> bytes:
        """The worker's response to `request`; raises `WorkerFailed` if the worker died before answering."""
        job = _Job(request)
        threading.Thread(target=self._drive, args=(job,), name="qwq-web-extract", daemon=True).start()
        try:
            return await asyncio.wrap_future(job.result)
        except BaseException:
            self._cancel(job)
            raise

    def prewarm(self) -> None:
        """Start a worker now if none is idle or starting and there is room, so that its imports (about half a
        second) overlap a download or the model's next turn instead of delaying the next extraction."""
        with self._cond:
            if self._idle or self._starting or self._busy >= self.size:
                return
            self._busy += 1
            self._starting += 1
        threading.Thread(target=self._start_idle, name="qwq-web-extract-start", daemon=True).start()

    def pids(self) -> list[int]:
        """The worker processes not yet reaped (for tests and diagnostics)."""
        with self._cond:
            return sorted(w.pid for w in self._live)

    def close(self) -> None:
        """Stop the idle workers and kill the busy ones (their jobs fail); later jobs start new workers."""
        with self._cond:
            idle, self._idle = self._idle, []
            busy = [w for w in self._live if w not in idle]
        for worker in busy:
            worker.kill()  # their job threads reap them
        for worker in idle:
            self._retire(worker)

    # The job threads.

    def _spawn(self) -> _Worker:
        worker = _Worker()
        with self._cond:
            self._live.add(worker)
        return worker

    def _retire(self, worker: _Worker) -> None:
        worker.close()
        with self._cond:
            self._live.discard(worker)

    def _start_idle(self) -> None:
        try:
            worker: _Worker | None = self._spawn()
        except OSError:
            worker = None  # the job that needs a worker will fail, saying why
        with self._cond:
            self._busy -= 1
            self._starting -= 1
            if worker is not None:
                self._idle.append(worker)
            self._cond.notify_all()

    def _drive(self, job: _Job) -> None:
        if not job.result.set_running_or_notify_cancel():
            return
        try:
            response = self._attempt(job)
        except BaseException as exc:
            job.result.set_exception(exc)
        else:
            job.result.set_result(response)

    def _attempt(self, job: _Job) -> bytes:
        # A worker taken from the idle list may have exited on its idle timer just before the request
        # reached it: then, once, a fresh one.
        for attempt in range(2):
            worker = self._acquire(job)
            try:
                response = worker.exchange(job.request)
            except WorkerFailed:
                code = self._discard(worker, job)
                if job.cancelled:
                    self.prewarm()  # its replacement starts now, not when the next page is waiting
                    raise WorkerFailed("the worker was stopped at the deadline") from None
                if attempt == 0 and code == _IDLE_EXIT_CODE and worker.jobs > 0:
                    continue
                how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                raise WorkerFailed(f"the extraction process {how}") from None
            except BaseException:
                self._discard(worker, job)
                raise
            # The first byte says whether the worker should be replaced (it grew too big), the rest is JSON.
            self._release(worker, job, retire=response[:1] != b"K")
            return response[1:]
        raise WorkerFailed("no extraction process could be started")

    def _acquire(self, job: _Job) -> _Worker:
        with self._cond:
            self._cond.wait_for(lambda: job.cancelled or self._busy < self.size)
            if job.cancelled:
                raise WorkerFailed("the extraction was cancelled before it started")
            self._busy += 1
            worker, stale, now = None, [], time.monotonic()
            while self._idle and worker is None:
                candidate = self._idle.pop()
                fresh = now - candidate.idle_since < IDLE_EXIT_S - 10 and candidate.proc.poll() is None
                if fresh:
                    worker = candidate
                else:
                    stale.append(candidate)
        for old in stale:
            self._retire(old)
        if worker is None:
            try:
                worker = self._spawn()
            except BaseException:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()
                raise
        with self._cond:
            job.worker = worker
            cancelled = job.cancelled
        if cancelled:
            worker.kill()  # the loop gave up while the worker was being found; exchange() fails at once
        return worker

    def _release(self, worker: _Worker, job: _Job, retire: bool) -> None:
        worker.jobs += 1
        worker.idle_since = time.monotonic()
        if retire or worker.jobs >= RETIRE_AFTER_JOBS:
            self._retire(worker)
        with self._cond:
            job.worker = None
            self._busy -= 1
            if worker in self._live:
                self._idle.append(worker)
            self._cond.notify_all()

    def _discard(self, worker: _Worker, job: _Job) -> int:
        worker.kill()
        code = worker.reap()
        with self._cond:
            job.worker = None
            self._busy -= 1
            self._live.discard(worker)
            self._cond.notify_all()
        return code

    def _cancel(self, job: _Job) -> None:
        with self._cond:
            job.cancelled = True
            worker = job.worker
            self._cond.notify_all()
        if worker is not None:
            worker.kill()  # its thread sees EOF at once, reaps it and frees the slot


_pool: ExtractionPool | None = None
_pool_lock = threading.Lock()


def extraction_pool() -> ExtractionPool:
    """The process-wide pool `tools.web.fetch` uses, created on first use."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ExtractionPool()
        return _pool


# --- the worker's side ----------------------------------------------------------------------------------


def _watch_parent(parent: int) -> None:
    # A worker busy with a page when its parent dies would otherwise run on until the page is done.
    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def _handle(request: bytes) -> tuple[dict[str, Any], str]:
    """The response's header and text for one request."""
    from tools.web_extract import Unreadable, extract

    header, _, body = request.partition(b"\n")
    meta = json.loads(header)
    try:
        done = extract(body, meta["mime"], meta["charset"], meta["truncated"], meta["url"], meta["max_chars"])
    except Unreadable as exc:
        return {"unreadable": exc.reason, "details": exc.details}, ""
    except BaseException as exc:  # a library bug, MemoryError, a deep recursion that escaped the fallbacks
        return {"failed": f"{type(exc).__name__}: {exc}"[:500]}, ""
    # Only what the parent keeps crosses the pipe; it learns the whole length from `total`.
    info = {
        "kind": done.kind,
        "codec": done.codec,
        "title": done.title,
        "cut": done.cut,
        "total": len(done.text),
    }
    return info, done.text[: meta["max_chars"]]


def _preload() -> None:
    # Imported before the first request arrives, while the parent is still downloading the page.
    import importlib

    for name in ("lxml.html", "readability", "markdownify", "bs4", "charset_normalizer", "tools.web_extract"):
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def main() -> None:
    """The worker process: answer requests from stdin on stdout until EOF or `IDLE_EXIT_S` of idleness."""
    import select

    out = os.dup(1)
    os.dup2(2, 1)  # a library that prints must not write into the protocol
    sys.stdout = sys.stderr
    _watch_parent(os.getppid())
    _preload()
    while True:
        ready, _, _ = select.select([0], [], [], IDLE_EXIT_S)
        if not ready:
            sys.exit(_IDLE_EXIT_CODE)
        try:
            (size,) = _FRAME.unpack(_read_exact(0, _FRAME.size))
            request = _read_exact(0, size)
        except EOFError:
            return
        info, text = _handle(request)
        keep = b"R" if _rss_bytes() > RETIRE_RSS_BYTES else b"K"
        # The header is ASCII JSON (a lone surrogate in the title travels as an escape); the text is UTF-8
        # with lone surrogates passed through, for the parent to replace.
        payload = keep + json.dumps(info).encode("ascii") + b"\n" + text.encode("utf-8", "surrogatepass")
        _write_all(out, _FRAME.pack(len(payload)) + payload)
