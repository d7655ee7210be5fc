"""`SandboxPool`: keeps N started sandboxes warm so that a run gets one without waiting for a container start.

A sandbox handed out is the caller's: it is never returned to the pool or given to another run (a run could
have left anything in it), and the caller closes it. The pool refills itself in the background.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import threading
import time
from typing import Any

from sandboxes._lifecycle import Lifecycle
from sandboxes.config import SandboxConfig
from sandboxes.docker_sandbox import DockerSandbox
from sandboxes.errors import SandboxError

__all__ = ["SandboxPool"]


class SandboxPool(Lifecycle):
    """N warm sandboxes; `acquire()` (or `await aacquire()`) takes one and starts its replacement.

    Nothing is started by the constructor: `start()` or entering the context does that. `close()` removes
    the idle sandboxes and any still starting; sandboxes already acquired are closed by their users.
    """

    def __init__(
        self,
        size: int = 2,
        config: SandboxConfig | None = None,
        *,
        image: str | None = None,
        client: Any = None,
    ) -> None:
        if size < 0:
            raise ValueError("size must be >= 0")
        self.size = size
        self.config = config or SandboxConfig()
        self.image = image
        self._client = client
        self._ready: collections.deque[DockerSandbox] = collections.deque()
        self._starting = 0
        self._cond = threading.Condition()
        self._closed = False
        self._started = False
        self._last_error: BaseException | None = None
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def ready(self) -> int:
        """How many warm sandboxes are waiting right now."""
        return len(self._ready)

    def start(self) -> SandboxPool:
        """Begin starting `size` sandboxes in background threads (returns at once)."""
        with self._cond:
            if self._closed:
                raise SandboxError("this pool was closed")
            self._started = True
            self._refill_locked()
        return self

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Block until the pool is full (or `timeout` passes); False if it is not full by then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while len(self._ready) < self.size and not self._closed:
                if self._starting == 0 and self._last_error is not None:
                    raise self._last_error
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return len(self._ready) >= self.size

    def acquire(self, timeout: float | None = None) -> DockerSandbox:
        """A started sandbox, immediately when one is warm; otherwise waits for one being started."""
        with self._cond:
            if self._closed:
                raise SandboxError("this pool was closed")
            if not self._started:
                self._started = True
            if self.size == 0:
                sandbox = None
            else:
                deadline = None if timeout is None else time.monotonic() + timeout
                self._last_error = None
                while not self._ready:
                    if self._starting == 0:
                        if self._last_error is not None:
                            raise self._last_error
                        self._refill_locked(at_least=1)
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        raise TimeoutError("no sandbox became ready in time")
                    self._cond.wait(remaining)
                    if self._closed:
                        raise SandboxError("this pool was closed")
                sandbox = self._ready.popleft()
                self._refill_locked()
        if sandbox is None:  # size 0: no pool, just a fresh sandbox
            sandbox = self._new().start()
        return sandbox

    async def aacquire(self) -> DockerSandbox:
        """`acquire` for async code: no thread hop when a warm sandbox is there, never blocks the loop.

        Bound the wait with `asyncio.timeout`; a sandbox that arrives after the caller gave up is closed.
        """
        with self._cond:
            if self._ready and not self._closed:
                sandbox = self._ready.popleft()
                self._refill_locked()
                return sandbox
        waiting = asyncio.ensure_future(asyncio.to_thread(self.acquire))
        try:
            return await asyncio.shield(waiting)
        except asyncio.CancelledError:
            waiting.add_done_callback(_close_unclaimed)
            raise

    def close(self) -> None:
        """Remove idle sandboxes and wait for those still starting (they are removed as they come up)."""
        with self._cond:
            self._closed = True
            idle = list(self._ready)
            self._ready.clear()
            self._cond.notify_all()
        if idle:
            with concurrent.futures.ThreadPoolExecutor(max(1, min(len(idle), 8))) as closer:
                list(closer.map(lambda sandbox: sandbox.close(), idle))
        with self._cond:
            deadline = time.monotonic() + self.config.start_timeout + 10
            while self._starting and time.monotonic() < deadline:
                self._cond.wait(0.5)
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False)

    async def astart(self) -> SandboxPool:
        """`start`, which returns at once: the sandboxes start in the pool's own threads."""
        return self.start()

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    # ------------------------------------------------------------------ internals

    def _new(self) -> DockerSandbox:
        return DockerSandbox(self.image, self.config, client=self._client)

    def _refill_locked(self, at_least: int = 0) -> None:
        """Start as many sandboxes as the pool lacks (caller holds the lock)."""
        if self._closed:
            return
        missing = max(self.size - len(self._ready) - self._starting, at_least - self._starting)
        if missing <= 0:
            return
        if self._executor is None:
            # Container starts are mostly waiting on the engine; a few in parallel fill a pool quickly.
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max(1, min(self.size, 4)), thread_name_prefix="qwq-sandbox-pool"
            )
        for _ in range(missing):
            self._starting += 1
            self._executor.submit(self._start_one)

    def _start_one(self) -> None:
        sandbox = self._new()
        try:
            sandbox.start()
        except BaseException as exc:
            with self._cond:
                self._starting -= 1
                self._last_error = exc
                self._cond.notify_all()
            return
        with self._cond:
            self._starting -= 1
            keep = not self._closed
            if keep:
                self._ready.append(sandbox)
            self._cond.notify_all()
        if not keep:
            sandbox.close()


def _close_unclaimed(future: asyncio.Future[DockerSandbox]) -> None:
    if not future.cancelled() and future.exception() is None:
        threading.Thread(target=future.result().close, daemon=True).start()
