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


async def stream_from_thread(work: Work, *, name: str = "model-worker") -> AsyncIterator[ModelChunk]:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[object] = asyncio.Queue()
    stop = threading.Event()
    pending: list[str] = []
    guard = threading.Lock()
    scheduled = False

    def flush() -> None:  # on the event loop
        nonlocal scheduled
        with guard:
            text = "".join(pending)
            pending.clear()
            scheduled = False
        if text:
            queue.put_nowait(ModelChunk(text=text))

    def deliver(item: object) -> None:  # on the event loop: text still pending goes first
        flush()
        queue.put_nowait(item)

    def put(item: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody is listening any more
            loop.call_soon_threadsafe(deliver, item)

    def emit(text: str) -> None:
        nonlocal scheduled
        with guard:
            pending.append(text)
            if scheduled:
                return
            scheduled = True
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.call_later, FLUSH_INTERVAL, flush)

    def run() -> None:
        try:
            last = work(Sink(text=emit, chunk=put, stop=stop))
            if last is not None:
                put(last)
        except BaseException as exc:
            put(exc if isinstance(exc, ModelError) else ModelError(f"generation failed: {exc!r}"))
            if not isinstance(exc, Exception):
                raise
        finally:
            put(_END)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, ModelChunk)
            yield item
    finally:
        stop.set()
