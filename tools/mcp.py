"""Tools from MCP servers: start or reach them, list their tools as `Tool`s, call them, shut them down.

    async with MCPServers.from_json("mcp.json") as servers:
        agent = Agent(model=..., tools=[*servers.tools, ...])

Servers are reached with the official `mcp` SDK (2.x, imported on first use: it takes over a second to
import), over stdio (a subprocess) or streamable HTTP. The configuration is the `{"mcpServers": {...}}` JSON
that other MCP clients use, or `StdioServer` / `HttpServer` objects.

Each server connection lives in a task of its own: the SDK's transports are anyio task groups that must be
entered and left by one task, and a server that crashes must not cancel the caller's task. Calls may come from
any task. Everything a call can run into (an error result, a protocol error, a timeout, a server that died) is
returned as an error observation for the model; only failures to start are raised, since the developer must fix
those (`MCPServerError`).

A stdio server that has exited (crashed, killed, or stopped by one of its own tools) is started again when the
next call for it comes, once per call and at most `max_restarts` times per server, and that call's result says
so: whatever the server held in memory is gone. Whether it exited before a call or during it is told apart by
watching its output stream, so the model reads which happened. The sentences the model reads are templates
under `prompts/templates/tools/mcp/`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TextIO

from prompts.templating import render_tool_text
from tools.base import Tool
from tools.errors import MCPConfigError, MCPServerError, ToolDefinitionError
from tools.serialize import NO_OUTPUT
from tools.types import ToolResult

if TYPE_CHECKING:
    from mcp import Client
    from mcp_types import CallToolResult

__all__ = [
    "DEFAULT_CALL_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_RESTARTS",
    "HttpServer",
    "MCPConfigError",
    "MCPServerError",
    "MCPServers",
    "ServerConfig",
    "StdioServer",
    "load_config",
    "parse_config",
    "result_to_observation",
]

_log = logging.getLogger(__name__)

DEFAULT_CALL_TIMEOUT = 60.0
DEFAULT_CONNECT_TIMEOUT = 30.0
DEFAULT_MAX_RESTARTS = 3
"""Restarts per stdio server and `async with` block: a server that keeps dying is not restarted forever."""
_CLOSE_TIMEOUT = 10.0  # the SDK's stdio shutdown waits up to ~6 s (stdin close, SIGTERM, SIGKILL)
_MAX_LIST_PAGES = 100  # a paginator that never ends must not hang startup
_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_.:/-]")
_CONNECTION_CLOSED = -32000


@dataclass(frozen=True)
class StdioServer:
    """A server run as a subprocess speaking MCP over its stdin/stdout.

    `env` is added to a minimal inherited environment (PATH, HOME, ...), as the SDK does, so host secrets are
    not passed on unless listed. `stderr` receives the server's log output (default: this process's stderr).
    """

    command: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] | None = None
    cwd: str | None = None
    stderr: TextIO | None = field(default=None, compare=False)


@dataclass(frozen=True)
class HttpServer:
    """A server reached over MCP streamable HTTP at `url`, with extra request headers (e.g. Authorization)."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)


ServerConfig = StdioServer | HttpServer


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MCPConfigError(f"{what} must be a list of strings, got {value!r}")
    return tuple(value)


def _string_map(value: Any, what: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise MCPConfigError(f"{what} must be an object of string values, got {value!r}")
    return dict(value)


def parse_config(data: Mapping[str, Any]) -> dict[str, ServerConfig]:
    """Server configs from the common JSON form: `{"mcpServers": {"name": {...}}}`.

    An entry with `command` (and optional `args`, `env`, `cwd`) is a stdio server; one with `url` (and
    optional `headers`) a streamable HTTP server. Entries with `"disabled": true` are skipped. The `servers`
    key some editors use is accepted too. Raises `MCPConfigError` naming the entry at fault.
    """
    servers = data.get("mcpServers", data.get("servers"))
    if not isinstance(servers, dict):
        raise MCPConfigError('an MCP configuration needs an "mcpServers" object mapping names to servers')
    parsed: dict[str, ServerConfig] = {}
    for name, entry in servers.items():
        where = f"MCP server {name!r}"
        if not isinstance(entry, dict):
            raise MCPConfigError(f"{where}: expected an object, got {entry!r}")
        if entry.get("disabled") is True:
            continue
        kind = entry.get("type", entry.get("transport"))
        if kind in ("sse",):
            raise MCPConfigError(
                f"{where}: the deprecated SSE transport is not supported; use streamable HTTP"
            )
        if "command" in entry:
            if not isinstance(entry["command"], str) or not entry["command"]:
                raise MCPConfigError(f"{where}: command must be a non-empty string")
            cwd = entry.get("cwd")
            if cwd is not None and not isinstance(cwd, str):
                raise MCPConfigError(f"{where}: cwd must be a string")
            parsed[name] = StdioServer(
                command=entry["command"],
                args=_strings(entry.get("args", []), f"{where}: args"),
                env=_string_map(entry["env"], f"{where}: env") if "env" in entry else None,
                cwd=cwd,
            )
        elif "url" in entry:
            if not isinstance(entry["url"], str) or not entry["url"].startswith(("http://", "https://")):
                raise MCPConfigError(f"{where}: url must be an http(s) URL, got {entry['url']!r}")
            parsed[name] = HttpServer(
                url=entry["url"], headers=_string_map(entry.get("headers", {}), f"{where}: headers")
            )
        else:
            raise MCPConfigError(f'{where}: needs "command" (stdio) or "url" (streamable HTTP)')
    return parsed


def load_config(path: str | Path) -> dict[str, ServerConfig]:
    """Server configs from a JSON file in the `mcpServers` form (see `parse_config`)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise MCPConfigError(f"cannot read the MCP configuration {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise MCPConfigError(f"the MCP configuration {str(path)!r} must be a JSON object")
    return parse_config(data)


# --- turning results into observations ------------------------------------------------------------------


def _approx_bytes(b64: str) -> int:
    return len(b64) * 3 // 4


def _block_text(block: Any) -> str:
    kind = getattr(block, "type", None)
    if kind == "text":
        return str(block.text)
    if kind in ("image", "audio"):
        return render_tool_text(
            "mcp/media_block", kind=kind, mime=block.mime_type, size=_approx_bytes(block.data)
        )
    if kind == "resource_link":
        return render_tool_text(
            "mcp/resource_link_block",
            uri=block.uri,
            name=block.name,
            mime=block.mime_type,
            description=block.description,
        )
    if kind == "resource":
        resource = block.resource
        if hasattr(resource, "text"):
            return render_tool_text(
                "mcp/resource_text_block", uri=resource.uri, mime=resource.mime_type, text=resource.text
            )
        return render_tool_text(
            "mcp/resource_binary_block",
            uri=resource.uri,
            mime=resource.mime_type,
            size=_approx_bytes(resource.blob),
        )
    return render_tool_text("mcp/other_block", kind=kind or type(block).__name__)


def result_to_observation(result: CallToolResult) -> ToolResult:
    """An MCP tool result as the text the model reads: text as is, media and binary as short notes."""
    parts = [_block_text(block) for block in result.content]
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False, indent=2))
    text = "\n".join(parts) if parts else NO_OUTPUT
    return ToolResult(content=text, is_error=bool(result.is_error))


# --- connections ----------------------------------------------------------------------------------------


class _WatchedReadStream:
    """The transport's read stream, unchanged, except that it notes when the server's output ends.

    The SDK answers every call after that with the same "connection closed" error as a call during which
    the server died; the time the output ended tells the two apart. Implements the SDK's `ReadStream`
    protocol by delegation.
    """

    def __init__(self, inner: Any, on_end: Callable[[], None]) -> None:
        self._inner = inner
        self._on_end = on_end

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        import anyio

        try:
            return await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._on_end()
            raise

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _WatchedReadStream:
        return self

    async def __anext__(self) -> Any:
        import anyio

        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _WatchedReadStream:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


@contextlib.asynccontextmanager
async def _watched(transport: Any, on_end: Callable[[], None]) -> AsyncIterator[tuple[Any, Any]]:
    async with transport as (read_stream, write_stream):
        yield _WatchedReadStream(read_stream, on_end), write_stream


class _Connection:
    """One server's session, entered and left by a task of its own (see the module docstring)."""

    def __init__(self, name: str, config: ServerConfig) -> None:
        self.name = name
        self.config = config
        self.client: Client | None = None
        # Why calls can no longer reach the server: "failed" (with `error`), "shut_down" or "closed".
        self.dead: str | None = None
        self.error = ""
        self.output_ended: float | None = None  # time.monotonic() when the server's output ended
        self._ready: asyncio.Future[None] | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def restartable(self) -> bool:
        return isinstance(self.config, StdioServer)

    def gone_since(self, moment: float) -> bool:
        """Whether the server's output had ended by `moment` (so it exited before, not during, a call)."""
        return self.output_ended is not None and self.output_ended <= moment

    def _note_end(self) -> None:
        if self.output_ended is None:
            self.output_ended = time.monotonic()

    async def _transport(self, stack: AsyncExitStack) -> Any:
        if isinstance(self.config, StdioServer):
            import sys

            from mcp.client.stdio import StdioServerParameters, stdio_client

            params = StdioServerParameters(
                command=self.config.command,
                args=list(self.config.args),
                env=dict(self.config.env) if self.config.env is not None else None,
                cwd=self.config.cwd,
            )
            return _watched(stdio_client(params, errlog=self.config.stderr or sys.stderr), self._note_end)
        import httpx2
        from mcp.client.streamable_http import streamable_http_client

        # MCP servers may hold a response stream open, hence the long read timeout; calls have their own.
        http = httpx2.AsyncClient(headers=dict(self.config.headers), timeout=httpx2.Timeout(30.0, read=300.0))
        await stack.enter_async_context(http)
        return _watched(streamable_http_client(self.config.url, http_client=http), self._note_end)

    async def _run(self) -> None:
        from mcp import Client

        assert self._ready is not None
        try:
            async with AsyncExitStack() as stack:
                transport = await self._transport(stack)
                client = await stack.enter_async_context(Client(transport))
                self.client = client
                self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
            elif not isinstance(exc, asyncio.CancelledError):
                self.dead, self.error = "failed", repr(exc)
                _log.warning("MCP server %s: connection ended with %r", self.name, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.client = None
            self.dead = self.dead or "shut_down"

    async def start(self, limit_s: float) -> None:
        self._ready = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(), name=f"mcp-server-{self.name}")
        try:
            async with asyncio.timeout(limit_s):
                await asyncio.shield(self._ready)
        except TimeoutError:
            await self.close()
            raise MCPServerError(
                f"MCP server {self.name!r} did not finish starting within {limit_s:g} s ({self._where()})"
            ) from None
        except Exception as exc:
            await self.close()
            raise MCPServerError(
                f"MCP server {self.name!r} could not be started ({self._where()}): {exc!r}"
            ) from exc

    def _where(self) -> str:
        if isinstance(self.config, StdioServer):
            return "command: " + " ".join([self.config.command, *self.config.args])
        return f"url: {self.config.url}"

    async def close(self) -> None:
        self._stop.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await asyncio.shield(task)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except Exception:  # already logged by _run
            pass


# --- the public object ----------------------------------------------------------------------------------


def _tool_name(raw: str) -> str:
    name = _INVALID_NAME_CHARS.sub("_", raw)[:128] or "_"
    return name if re.match(r"[A-Za-z0-9_]", name) else "_" + name[:127]


class MCPServers:
    """A set of MCP servers and their tools, for the duration of an `async with` block.

    `servers` maps names to `StdioServer` / `HttpServer` (see also `from_json`). Entering starts or connects
    to all servers concurrently, lists their tools and builds `self.tools`; leaving shuts them down, stdio
    subprocesses included. Tool names are the servers' own names; when two servers offer the same name,
    those tools are named `server__tool` (`prefix="auto"`); `prefix="always"` prefixes every tool, and
    `prefix="never"` raises `ToolDefinitionError` on a collision. Each call is limited to `call_timeout`
    seconds. A server that fails to start raises `MCPServerError`, after the others have been shut down. A
    stdio server found exited when a call comes is started again for that call, up to `max_restarts` times.
    """

    def __init__(
        self,
        servers: Mapping[str, ServerConfig],
        *,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        prefix: Literal["auto", "always", "never"] = "auto",
        max_restarts: int = DEFAULT_MAX_RESTARTS,
    ) -> None:
        if not call_timeout > 0 or not connect_timeout > 0:
            raise ValueError("call_timeout and connect_timeout must be positive seconds")
        if max_restarts < 0:
            raise ValueError("max_restarts must not be negative")
        for name, config in servers.items():
            if not isinstance(config, StdioServer | HttpServer):
                raise MCPConfigError(
                    f"MCP server {name!r}: expected StdioServer or HttpServer, got {config!r}"
                )
        self.configs = dict(servers)
        self.call_timeout = call_timeout
        self.connect_timeout = connect_timeout
        self.prefix = prefix
        self.max_restarts = max_restarts
        self._connections: dict[str, _Connection] = {}
        self._restarts: dict[str, int] = {}
        self._restart_locks: dict[str, asyncio.Lock] = {}
        self._tools: list[Tool[..., Any]] = []

    @classmethod
    def from_json(cls, path: str | Path, **options: Any) -> MCPServers:
        """Servers from a JSON file in the common `{"mcpServers": {...}}` form."""
        return cls(load_config(path), **options)

    @property
    def tools(self) -> list[Tool[..., Any]]:
        """The tools of all servers (empty outside the `async with` block)."""
        return list(self._tools)

    async def __aenter__(self) -> MCPServers:
        self._connections = {name: _Connection(name, config) for name, config in self.configs.items()}
        self._restarts = dict.fromkeys(self._connections, 0)
        self._restart_locks = {name: asyncio.Lock() for name in self._connections}
        started = await asyncio.gather(
            *(c.start(self.connect_timeout) for c in self._connections.values()), return_exceptions=True
        )
        try:
            for outcome in started:
                if isinstance(outcome, BaseException):
                    raise outcome
            listings = await asyncio.gather(*(self._list(c) for c in self._connections.values()))
            self._tools = self._build_tools(dict(zip(self._connections, listings, strict=True)))
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Shut every server down (also what leaving the `async with` block does)."""
        connections, self._connections, self._tools = self._connections, {}, []
        await asyncio.gather(*(c.close() for c in connections.values()), return_exceptions=True)

    async def _list(self, connection: _Connection) -> list[Any]:
        assert connection.client is not None
        tools: list[Any] = []
        cursor: str | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                for _ in range(_MAX_LIST_PAGES):
                    page = await connection.client.list_tools(cursor=cursor)
                    tools.extend(page.tools)
                    cursor = page.next_cursor
                    if cursor is None:
                        break
        except Exception as exc:
            raise MCPServerError(f"MCP server {connection.name!r} could not list its tools: {exc!r}") from exc
        return tools

    def _build_tools(self, listings: dict[str, list[Any]]) -> list[Tool[..., Any]]:
        counts: dict[str, int] = {}
        for listed in listings.values():
            for remote in listed:
                counts[_tool_name(remote.name)] = counts.get(_tool_name(remote.name), 0) + 1
        built: list[Tool[..., Any]] = []
        taken: set[str] = set()
        for server, listed in listings.items():
            for remote in listed:
                base = _tool_name(remote.name)
                collides = counts[base] > 1
                if collides and self.prefix == "never":
                    raise ToolDefinitionError(
                        f"two MCP servers offer a tool named {remote.name!r}; use prefix='auto' or 'always'"
                    )
                name = _tool_name(f"{server}__{base}") if self.prefix == "always" or collides else base
                if name in taken:
                    raise ToolDefinitionError(
                        f"MCP tool name {name!r} occurs twice, even with server prefixes"
                    )
                taken.add(name)
                description = (
                    remote.description
                    or remote.title
                    or render_tool_text("mcp/default_description", tool=remote.name, server=server)
                )
                try:
                    built.append(
                        Tool.from_schema(
                            name,
                            description,
                            remote.input_schema or {"type": "object", "properties": {}},
                            self._caller(server, remote.name, name),
                            timeout=self.call_timeout
                            + 5,  # our own timeout answers first, with a better message
                        )
                    )
                except ToolDefinitionError as exc:
                    _log.warning("MCP server %s: tool %r skipped: %s", server, remote.name, exc)
        return built

    def _caller(self, server: str, remote: str, shown: str) -> Any:
        async def call(**arguments: Any) -> ToolResult:
            return await self.call(server, remote, arguments, shown_name=shown)

        return call

    async def call(
        self,
        server: str,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        shown_name: str | None = None,
    ) -> ToolResult:
        """Call `tool` on `server`; every outcome, failures included, is a `ToolResult` for the model."""
        from mcp import MCPError

        shown = shown_name or tool
        connection = self._connections.get(server)
        if connection is None:
            return _error("not_connected", tool=shown, server=server)
        started = time.monotonic()
        restarted = False
        if connection.restartable and (
            connection.gone_since(started) or connection.dead in ("closed", "failed")
        ):
            try:
                connection = await self._restart(server, connection)
            except _NoRestart as exc:
                return _error(
                    "exited_before_call", tool=shown, restart_error=exc.error, restarts_used=exc.used
                )
            restarted, started = True, time.monotonic()
        client = connection.client
        if client is None or connection.dead:
            if connection.gone_since(started):
                return _error("exited_before_call", tool=shown, restart_error="", restarts_used=0)
            return _error("unavailable", tool=shown, why=connection.dead or "", error=connection.error)
        try:
            async with asyncio.timeout(self.call_timeout):
                result = await client.call_tool(tool, dict(arguments or {}))
        except TimeoutError:
            return _error("timed_out", tool=shown, seconds=self.call_timeout)
        except MCPError as exc:
            if exc.code != _CONNECTION_CLOSED:
                return _error("server_error", tool=shown, message=exc.message)
            connection.dead = "closed"
            if connection.gone_since(started):  # the SDK refused to send: the output had already ended
                return _error("exited_before_call", tool=shown, restart_error="", restarts_used=0)
            restartable = connection.restartable and self._restarts[server] < self.max_restarts
            return _error("stopped_during_call", tool=shown, restartable=restartable)
        except Exception as exc:  # transport errors, malformed results
            return _error("call_failed", tool=shown, error=f"{type(exc).__name__}: {exc}")
        observation = result_to_observation(result)
        if restarted:
            note = render_tool_text("mcp/restarted")
            return observation.model_copy(update={"content": f"{note}\n{observation.content}"})
        return observation

    async def _restart(self, server: str, gone: _Connection) -> _Connection:
        """A fresh connection to a stdio server whose process exited; `_NoRestart` if there is none.
        Concurrent calls that find the same dead server share one restart."""
        async with self._restart_locks[server]:
            current = self._connections.get(server)
            if current is not gone and current is not None:
                return current  # another call restarted it meanwhile
            used = self._restarts[server]
            if used >= self.max_restarts:
                raise _NoRestart("", used)
            self._restarts[server] = used + 1
            await gone.close()
            fresh = _Connection(server, gone.config)
            try:
                await fresh.start(self.connect_timeout)
            except MCPServerError as exc:
                _log.warning("MCP server %s: restart failed: %s", server, exc)
                raise _NoRestart(str(exc), used) from exc
            if self._connections.get(server) is not gone:  # aclose() ran meanwhile: this one must not linger
                await fresh.close()
                raise _NoRestart("the MCP servers were shut down", used)
            self._connections[server] = fresh
            _log.warning(
                "MCP server %s had exited; started it again (%d of %d)", server, used + 1, self.max_restarts
            )
            return fresh


class _NoRestart(Exception):
    def __init__(self, error: str, used: int) -> None:
        super().__init__(error)
        self.error = error
        self.used = used


def _error(name: str, **variables: Any) -> ToolResult:
    """An error observation whose text is the template `tools/mcp/<name>.j2`."""
    return ToolResult(content=render_tool_text(f"mcp/{name}", **variables), is_error=True)
