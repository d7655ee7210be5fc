"""Plain-TCP sockets for httpcore's connections, on asyncio directly (`SocketBackend`).

httpcore's default network backend goes through anyio: every read and write opens a cancel scope with a
timer and passes a checkpoint through the event loop, even when the bytes are already there. Turns of a
model stream are many small reads (the response head, then events as they come), so at 64 runs in flight
that bookkeeping was a tenth of the client's CPU. Here a read or write first tries the non-blocking socket
call itself and only waits (bounded by httpcore's read, write or connect timeout) when it would block.

Only `http://` origins use it; TLS connections keep httpcore's own backend (`KeepAliveTransport` chooses).
Errors are httpcore's (`ReadTimeout`, `ConnectError`...), which the transport turns into httpx's.
"""

# ruff: noqa: ASYNC109 - the `timeout` parameters are httpcore's interface, not ours to change
from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore

__all__ = ["SocketBackend"]

_SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


class _SocketStream(httpcore.AsyncNetworkStream):
    """One connected non-blocking TCP socket."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._loop = asyncio.get_running_loop()

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            return self._sock.recv(max_bytes)  # bytes already received: no wait, no timer
        except BlockingIOError:
            pass
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc
        try:
            async with asyncio.timeout(timeout):
                return await self._loop.sock_recv(self._sock, max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout("no bytes arrived within the read timeout") from exc
        except OSError as exc:
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        try:
            sent = self._sock.send(buffer)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc
        if sent == len(buffer):
            return
        try:
            async with asyncio.timeout(timeout):
                await self._loop.sock_sendall(self._sock, memoryview(buffer)[sent:])
        except TimeoutError as exc:
            raise httpcore.WriteTimeout("the request could not be sent within the write timeout") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        self._sock.close()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError(
            "SocketBackend serves plain TCP only; TLS goes through httpcore's backend"
        )

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":  # what httpcore asks of an idle connection: has the server closed it?
            return self._readable()
        if info == "socket":
            return self._sock
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        return None  # "ssl_object" and anything else: not a TLS stream

    def _readable(self) -> bool:
        if self._sock.fileno() < 0:
            return True
        try:
            self._sock.recv(1, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        except OSError:
            return True
        return True  # bytes, or b"" (the server closed): either way the connection cannot take a request


class SocketBackend(httpcore.AsyncNetworkBackend):
    """Connects plain TCP sockets on the running asyncio loop (TCP_NODELAY set, as anyio does)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                return _SocketStream(await _connect_first(addresses, local_address, socket_options or ()))
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout("the connection was not accepted in time") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("SocketBackend serves TCP only")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def _connect_first(
    addresses: list[Any], local_address: str | None, options: Iterable[_SocketOption]
) -> socket.socket:
    """A socket connected to the first address that accepts (the last address's error otherwise)."""
    loop = asyncio.get_running_loop()
    error: OSError = OSError("the host name resolved to no address")
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in options:
                sock.setsockopt(*option)
            if local_address is not None:
                sock.bind((local_address, 0))
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise error
