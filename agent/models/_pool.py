"""`KeepAliveTransport`: the httpx transport under `OpenAICompatModel`, a connection pool that costs O(1) per request.

httpx's default transport hands requests to httpcore's `AsyncConnectionPool`, which re-examines every pooled
connection twice per request (when it is sent and when its response is closed): it polls each idle socket
(`has_expired`, a `poll()` plus `getpeername()` each), rebuilds a list of all connections once per idle one
(quadratic in the pool's size), and can hand one idle connection to several waiting requests, all but one of
which then fail with `ConnectionNotAvailable` and go round again. With 64 agents each holding a connection
to a 100 ms server, that bookkeeping was three quarters of the client's CPU (profiled: 5.8 of 11.2 s), and
the batch ran slower than against a server that answers instantly, where few connections are ever open at once.

This pool keeps, per origin, a stack of idle HTTP/1.1 connections: a request takes the most recently used one
(checking that one alone for expiry or a server-side close) or opens a new connection; a response's end puts
its connection back. No request ever looks at another request's connection, so the cost does not grow with
the number of runs in flight. Connections come from httpcore (`AsyncHTTPConnection`), so the HTTP/1.1 wire
protocol, TLS (the shared `ssl.SSLContext`), connect timeouts and keep-alive expiry are httpcore's as before;
httpcore's errors are raised as httpx's, as httpx's own transport raises them. Proxies from the environment
are still httpx's (the client mounts its own proxy transports beside this one). HTTP/2 is not offered: the
servers this talks to (vLLM, SGLang, llama.cpp) speak HTTP/1.1, and httpx does not enable HTTP/2 by default.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import Any

import httpcore
import httpx

from agent.models._sockets import SocketBackend

__all__ = ["KeepAliveTransport"]

# httpcore's transport errors and httpx's namesakes, most specific first (an httpcore.ReadTimeout is also a
# TimeoutException: it must become httpx.ReadTimeout, which the retry policy and error messages name).
_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.ProtocolError, httpx.ProtocolError),
)


@contextlib.contextmanager
def _as_httpx_errors() -> Iterator[None]:
    """httpcore's exceptions as httpx's, so callers catch `httpx.TransportError` whatever the transport."""
    try:
        yield
    except httpcore.ConnectionNotAvailable:
        raise  # the pool's own signal, handled where a connection is taken
    except Exception as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 connections kept alive per origin, taken and returned in O(1); for one event loop.

    `max_idle`: idle connections kept per origin (more are closed as they come back; None keeps every one,
    which is at most as many as requests were ever in flight at once). `keepalive_expiry`: seconds an idle
    connection is kept (httpx's default, 5 s). There is no cap on connections in use: the caller bounds
    its requests in flight (a batch's concurrency), as httpx's `max_connections=None` did.
    """

    def __init__(
        self,
        ssl_context: ssl.SSLContext | None = None,
        *,
        max_idle: int | None = None,
        keepalive_expiry: float | None = 5.0,
    ) -> None:
        self.ssl_context = ssl_context
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        # keyed by (scheme, host, port): httpcore's Origin compares equal but is not hashable
        self._idle: dict[tuple[bytes, bytes, int], list[httpcore.AsyncHTTPConnection]] = {}
        self._open: set[httpcore.AsyncHTTPConnection] = set()
        self._closed = False
        self._sockets = SocketBackend()

    @property
    def connections(self) -> int:
        """Connections open now, idle or in use (tests read it)."""
        return len(self._open)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport was closed")
        if not isinstance(request.stream, httpx.AsyncByteStream):
            raise TypeError("KeepAliveTransport needs an async request body")
        core = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        origin = core.url.origin
        while True:
            connection, reused = await self._take(origin)
            try:
                with _as_httpx_errors():
                    response = await connection.handle_async_request(core)
            except httpcore.ConnectionNotAvailable:
                await self._drop(connection)
                if reused:
                    continue  # closed between the check and the request: take another one
                raise httpx.ConnectError("a new connection was not available") from None
            except BaseException:
                await self._give_back(origin, connection)
                raise
            if not isinstance(response.stream, AsyncIterable):
                await self._drop(connection)
                raise TypeError("httpcore returned a synchronous body")
            return httpx.Response(
                status_code=response.status,
                headers=response.headers,
                stream=_Body(response.stream, origin, connection, self),
                extensions=response.extensions,
            )

    async def _take(self, origin: httpcore.Origin) -> tuple[httpcore.AsyncHTTPConnection, bool]:
        """The most recently returned idle connection to `origin` that is still good, else a new one."""
        stack = self._idle.get(_key(origin))
        while stack:
            connection = stack.pop()
            if connection.is_idle() and not connection.has_expired():
                return connection, True
            await self._drop(connection)  # the keep-alive time passed, or the server closed it
        connection = httpcore.AsyncHTTPConnection(
            origin,
            ssl_context=self.ssl_context,
            keepalive_expiry=self.keepalive_expiry,
            network_backend=self._sockets if origin.scheme == b"http" else None,
        )
        self._open.add(connection)
        return connection, False

    async def _give_back(self, origin: httpcore.Origin, connection: httpcore.AsyncHTTPConnection) -> None:
        """A response is over: its connection waits for the next request, or is closed if it cannot serve one."""
        # is_closed: a connection whose connect failed also says it is idle
        if self._closed or not connection.is_idle() or connection.is_closed():
            await self._drop(connection)
            return
        stack = self._idle.setdefault(_key(origin), [])
        if self.max_idle is not None and len(stack) >= self.max_idle:
            await self._drop(connection)
            return
        stack.append(connection)
        # The oldest idle connection is the first to outlive its keep-alive time (requests take the newest):
        # closing it here keeps sockets the server has already given up on from piling up.
        while len(stack) > 1 and stack[0].has_expired():
            await self._drop(stack.pop(0))

    async def _drop(self, connection: httpcore.AsyncHTTPConnection) -> None:
        self._open.discard(connection)
        with contextlib.suppress(Exception):
            await connection.aclose()

    async def aclose(self) -> None:
        """Close every connection, idle or in use; the transport takes no more requests."""
        self._closed = True
        self._idle.clear()
        connections, self._open = list(self._open), set()
        for connection in connections:
            with contextlib.suppress(Exception):
                await connection.aclose()


def _key(origin: httpcore.Origin) -> tuple[bytes, bytes, int]:
    return origin.scheme, origin.host, origin.port


class _Body(httpx.AsyncByteStream):
    """A response body that returns its connection to the pool when closed."""

    def __init__(
        self,
        stream: Any,
        origin: httpcore.Origin,
        connection: httpcore.AsyncHTTPConnection,
        pool: KeepAliveTransport,
    ) -> None:
        self._stream = stream
        self._origin = origin
        self._connection = connection
        self._pool: KeepAliveTransport | None = pool

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return  # closed already
        try:
            with _as_httpx_errors():
                await self._stream.aclose()
        finally:
            await pool._give_back(self._origin, self._connection)
