"""`Toolbox`: the set of tools of one agent, which validates the model's calls and runs them safely.

`Toolbox.call` is the single entry point the loop uses. It never raises for anything the model can fix
(unknown tool, bad arguments, a tool that failed or timed out): those become `ToolResult(is_error=True)`
observations. It does propagate cancellation, so stopping an agent stops its tools.

Sync tools run in daemon threads of their own pool rather than `asyncio.to_thread`'s shared executor: a
thread cannot be killed, so a sync tool that overruns its timeout keeps running after the model was told it
timed out; a daemon thread neither occupies a slot other calls need (the pool grows instead) nor keeps
`asyncio.run` waiting at exit.
"""

from __future__ import annotations

import asyncio
import contextvars
import difflib
import inspect
import logging
import math
import queue
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import PurePath
from typing import Any, TypeVar

from tools.base import Tool
from tools.errors import ToolArgumentsError, ToolDefinitionError, ToolError, UnknownToolError
from tools.serialize import DEFAULT_MAX_RESULT_CHARS, replace_surrogates, to_text, truncate_middle
from tools.types import ToolCall, ToolResult

__all__ = ["DEFAULT_TIMEOUT", "Toolbox"]

DEFAULT_TIMEOUT = 60.0
"""Seconds a tool call may take unless the tool or the toolbox says otherwise."""


def _say(sentence: str, /, **variables: Any) -> str:
    """A sentence the model reads about a call, from prompts/templates/tools/toolbox/."""
    from prompts import render_tool_text

    return render_tool_text(f"toolbox/{sentence}", **variables)


_log = logging.getLogger(__name__)
T = TypeVar("T")


class _DaemonThreads:
    """Reusable daemon threads: an idle thread takes the next job, and a new one starts when none is idle.

    Starting a thread per call cost about a millisecond per step on a loaded machine (most of the loop's
    overhead). A thread stuck in an overrunning tool is simply never idle again until the tool returns, so
    it cannot hold up other calls; idle threads leave after `idle_timeout` seconds.
    """

    def __init__(self, idle_timeout: float = 30.0) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0
        self._idle_timeout = idle_timeout

    def submit(self, job: Callable[[], None], name: str) -> None:
        with self._lock:
            self._jobs.put(job)
            if self._idle > 0:
                self._idle -= 1  # that idle thread is now spoken for
                return
        threading.Thread(target=self._work, name=f"tool:{name}", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self._idle_timeout)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self._idle -= 1
                        return
                continue  # a job was handed to us as we timed out
            job()
            with self._lock:
                self._idle += 1


_THREADS = _DaemonThreads()


async def _in_daemon_thread(
    fn: Callable[..., T], name: str, /, *args: Any, **kwargs: Any
) -> tuple[T, None] | tuple[None, BaseException]:
    """Run `fn` in a daemon thread (with the caller's context variables); await (its result, None) or (None,
    what it raised).

    The exception travels as a value for the caller to raise: a future refuses StopIteration (`set_exception`
    raises TypeError in the loop's callback, and the call then waited for its timeout), and raised out of
    this coroutine it would become a RuntimeError.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[tuple[T, None] | tuple[None, BaseException]] = loop.create_future()
    context = contextvars.copy_context()

    def settle(outcome: tuple[T, None] | tuple[None, BaseException]) -> None:
        if not future.done():  # a timed-out or cancelled call is no longer waited for
            future.set_result(outcome)

    def run() -> None:
        outcome: tuple[T, None] | tuple[None, BaseException]
        try:
            outcome = (context.run(fn, *args, **kwargs), None)
        except BaseException as exc:  # delivered to the awaiting task, which decides what to do with it
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(settle, outcome)
        except RuntimeError:  # the loop closed while we ran: nobody is waiting any more
            _log.debug("tool %s finished after its event loop closed", name)

    _THREADS.submit(run, name)
    return await future


def _seconds(value: float) -> str:
    return f"{value:g}"


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ fails must not turn into a crash of the loop
        return "(message could not be rendered)"


def _describe_exception(exc: BaseException) -> str:
    """`Type: message` and the innermost frame: enough to act on, without the host's full traceback."""
    text = type(exc).__name__
    message = _message(exc)
    if message:
        text += f": {message}"
    frames = traceback.extract_tb(exc.__traceback__)
    if frames:
        last = frames[-1]
        text += f"\n  at {PurePath(last.filename).name}:{last.lineno} in {last.name}"
        if last.line:
            text += f": {last.line.strip()}"
    return text


class Toolbox:
    """The tools an agent may call, by unique name; validates and runs the model's calls.

    `tools` may mix `Tool` objects and plain typed functions (wrapped with `Tool.from_function`). A tool's own
    `timeout` wins over `default_timeout`; `None` means no limit. `max_result_chars` caps each result's text
    (`None`: no cap). Duplicate names raise `ToolDefinitionError`.
    """

    def __init__(
        self,
        tools: Iterable[Tool[..., Any] | Callable[..., Any]] = (),
        *,
        default_timeout: float | None = DEFAULT_TIMEOUT,
        max_result_chars: int | None = DEFAULT_MAX_RESULT_CHARS,
    ) -> None:
        if default_timeout is not None and not default_timeout > 0:
            raise ToolDefinitionError(
                f"default_timeout must be positive seconds or None, got {default_timeout!r}"
            )
        if max_result_chars is not None:
            truncate_middle(
                "", max_result_chars
            )  # raises ValueError now rather than on the first long result
        self._tools: dict[str, Tool[..., Any]] = {}
        for item in tools:
            t = item if isinstance(item, Tool) else Tool.from_function(item)
            if t.name in self._tools:
                raise ToolDefinitionError(f"two tools are named {t.name!r}; tool names must be unique")
            self._tools[t.name] = t
        self.default_timeout = default_timeout
        self.max_result_chars = max_result_chars

    # --- listing --------------------------------------------------------------------------------------------

    @property
    def tools(self) -> tuple[Tool[..., Any], ...]:
        """The tools, in the order given."""
        return tuple(self._tools.values())

    @property
    def names(self) -> tuple[str, ...]:
        """The tool names, in the order given."""
        return tuple(self._tools)

    def get(self, name: str) -> Tool[..., Any] | None:
        """The tool called `name`, or None."""
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __iter__(self) -> Iterator[Tool[..., Any]]:
        return iter(self._tools.values())

    def __repr__(self) -> str:
        return f"Toolbox({list(self._tools)!r})"

    def to_openai(self) -> list[dict[str, Any]]:
        """The OpenAI tool objects of all tools, in order (what the chat template lists in the system
        turn)."""
        return [t.to_openai() for t in self._tools.values()]

    # --- validation and dispatch ----------------------------------------------------------------------------

    def _lookup(self, name: str) -> Tool[..., Any]:
        found = self._tools.get(name)
        if found is not None:
            return found
        names = list(self._tools)
        folded = {n.lower(): n for n in names}
        suggestion = folded.get(name.lower()) if isinstance(name, str) else None
        if suggestion is None and isinstance(name, str):
            close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
            suggestion = close[0] if close else None
        message = _say("unknown_tool", name=name, suggestion=suggestion, available=names)
        raise UnknownToolError(message, tool_name=str(name), available=names, suggestion=suggestion)

    def validate(self, name: str, arguments: Any) -> dict[str, Any]:
        """Check a call without running it: the converted arguments, or `ToolArgumentsError` (of which
        `UnknownToolError` is a subclass) with a `.message` for the model."""
        return self._lookup(name).validate(arguments)

    def timeout_for(self, name: str) -> float | None:
        """The time limit that applies to calls of tool `name` (None: no limit)."""
        found = self._lookup(name)
        return found.timeout if found.timeout is not None else self.default_timeout

    def _text(self, text: str) -> str:
        """A result's text as the model reads it: capped, and without lone surrogates (a tool's output or
        exception message may carry them; they would break the transcript and the next model request)."""
        if self.max_result_chars is not None:
            text = truncate_middle(text, self.max_result_chars)
        return replace_surrogates(text)

    async def call(self, tool_call: ToolCall) -> ToolResult:
        """Validate and run one call; every outcome the model must hear about is a `ToolResult`.

        Unknown tool, bad arguments, an exception in the tool (type, message, innermost frame), a `ToolError`
        (its message only) and a timeout become `is_error=True` results. `asyncio.CancelledError` propagates.
        The result is serialised with `tools.serialize.to_text`; a tool may also return a `ToolResult` itself.
        Every result's text is free of lone surrogates, whatever the tool returned or raised.
        """
        try:
            found = self._lookup(tool_call.name)
            arguments = found.validate(tool_call.arguments)
        except ToolArgumentsError as exc:
            return ToolResult(content=self._text(exc.message), is_error=True)
        except Exception as exc:  # a custom pydantic validator may raise anything; the loop must go on
            return ToolResult(content=self._text(_describe_exception(exc)), is_error=True)
        limit = found.timeout if found.timeout is not None else self.default_timeout
        scope = asyncio.timeout(None if limit is None or math.isinf(limit) else limit)
        try:
            async with scope:
                value, error = await _invoke(found, arguments)
                if error is not None:
                    raise error  # raised here, not in `_invoke`: a StopIteration leaving a coroutine is a RuntimeError
        except TimeoutError as exc:
            if scope.expired():
                assert limit is not None
                return _timed_out(found, limit)
            return ToolResult(content=self._text(_describe_exception(exc)), is_error=True)
        except ToolError as exc:
            return ToolResult(content=self._text(_message(exc) or type(exc).__name__), is_error=True)
        except (Exception, SystemExit) as exc:  # a tool must not end the host program by calling sys.exit()
            _log.debug("tool %s raised", found.name, exc_info=True)
            return ToolResult(content=self._text(_describe_exception(exc)), is_error=True)
        if isinstance(value, ToolResult):
            return ToolResult(content=self._text(value.content), is_error=value.is_error)
        try:
            return ToolResult(content=replace_surrogates(to_text(value, self.max_result_chars)))
        except Exception as exc:  # e.g. a dict that contains itself
            return ToolResult(content=self._text(_say("unserialisable", error=exc)), is_error=True)

    async def call_all(self, tool_calls: Sequence[ToolCall]) -> list[ToolResult]:
        """Run several calls concurrently; results in the order of the calls."""
        return list(await asyncio.gather(*(self.call(c) for c in tool_calls)))


async def _invoke(found: Tool[..., Any], arguments: Any) -> tuple[Any, BaseException | None]:
    """Run a validated call: an async tool on the loop, a sync one in a daemon thread (a timeout can leave it).

    A sync tool's exception is handed back, not raised, so that the caller raises it in its own frame.
    """
    if found.is_async:
        value = await found.call_validated(arguments)
    else:
        value, error = await _in_daemon_thread(found.call_validated, found.name, arguments)
        if error is not None:
            return None, error
    # A sync function may hand back an awaitable (a lambda around an async client call).
    if inspect.isawaitable(value):
        value = await value
    return value, None


def _timed_out(found: Tool[..., Any], limit: float) -> ToolResult:
    if not found.is_async:
        _log.warning(
            "tool %s timed out after %s s; its thread runs on until the function returns",
            found.name,
            _seconds(limit),
        )
    return ToolResult(content=_say("timed_out", name=found.name, seconds=_seconds(limit)), is_error=True)
