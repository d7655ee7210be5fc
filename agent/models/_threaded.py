"""Run a blocking token loop in a worker thread and stream its text to the event loop in small batches.

llama.cpp releases the GIL while it decodes, so generation in a thread leaves the event loop free. Text is
delivered every 20 ms rather than per token: each wake-up of the event loop competes with the generating
thread for the GIL and, on a busy machine, for a core; per-token delivery cost 5-15% of speed on the tiny
model. 20 ms of latency are invisible in a stream. Closing the stream (or cancelling its task) sets the stop
event, which the worker checks at every token.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from agent.models.base import ModelChunk
from agent.models.errors import ModelError

__all__ = ["FLUSH_INTERVAL", "Sink", "stream_from_thread"]

FLUSH_INTERVAL = 0.02  # seconds between deliveries of streamed text to the event loop
_END = object()


@dataclass(frozen=True)
class Sink:
    """What the worker sends through: `text` (batched), `chunk` (at once, after pending text), `stop`."""

    text: Callable[[str], None]
    chunk: Callable[[ModelChunk], None]
    stop: threading.Event


Work = Callable[[Sink], ModelChunk | None]
"""The blocking part; returns the last chunk (usage, finish reason) or None when it was stopped."""


class _Bridge:
    """The worker's side (`emit`, `put`, called from the thread) and the loop's side (`queue`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.pending: list[str] = []
        self.guard = threading.Lock()
        self.scheduled = False

    def flush(self) -> None:  # on the event loop
        with self.guard:
            text = "".join(self.pending)
            self.pending.clear()
            self.scheduled = False
        if text:
            self.queue.put_nowait(ModelChunk(text=text))

    def deliver(self, item: object) -> None:  # on the event loop: text still pending goes first
        self.flush()
        self.queue.put_nowait(item)

    def put(self, item: object) -> None:  # from the worker: at once
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
            self.loop.call_soon_threadsafe(self.deliver, item)

    def emit(self, text: str) -> None:  # from the worker: batched
        with self.guard:
            self.pending.append(text)
            if self.scheduled:
                return
            self.scheduled = True
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.call_later, FLUSH_INTERVAL, self.flush)


async def stream_from_thread(work: Work, *, name: str = "model-worker") -> AsyncIterator[ModelChunk]:
    bridge = _Bridge(asyncio.get_running_loop())
    stop = threading.Event()

    def run() -> None:
        try:
            last = work(Sink(text=bridge.emit, chunk=bridge.put, stop=stop))
            if last is not None:
                bridge.put(last)
        except BaseException as exc:
            bridge.put(exc if isinstance(exc, ModelError) else ModelError(f"generation failed: {exc!r}"))
            if not isinstance(exc, Exception):
                raise
        finally:
            bridge.put(_END)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        while True:
            item = await bridge.queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, ModelChunk)
            yield item
    finally:
        stop.set()
