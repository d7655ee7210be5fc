"""KeepAliveTransport against a real HTTP/1.1 server on 127.0.0.1: reuse, stale connections, errors, closing.

The server is a few lines of asyncio that records which client port each request came from, so a test can
tell a reused connection from a new one without timing anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from agent.models import OpenAICompatModel
from agent.models._pool import KeepAliveTransport


@dataclass
class Server:
    url: str
    peers: list[int] = field(default_factory=list)  # the client port of each request, in arrival order
    close_after: set[int] = field(default_factory=set)  # request numbers after which the server hangs up
    delay: float = 0.0
    gate: asyncio.Event | None = None  # when set, responses wait for it (requests pile up in flight)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # set on each request's arrival

    async def wait_for(self, count: int) -> None:
        """Until `count` requests have arrived."""
        while len(self.peers) < count:
            self.arrived.clear()
            await self.arrived.wait()


@contextlib.asynccontextmanager
async def serve(tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(url="")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[1]
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                await reader.readexactly(length)
                server.peers.append(peer)
                server.arrived.set()
                number = len(server.peers)
                if server.gate is not None:
                    await server.gate.wait()
                await asyncio.sleep(server.delay)
                body = f"request {number}".encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                if number in server.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    port = listener.sockets[0].getsockname()[1]
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    async with listener:
        yield server


async def test_connections_are_reused_across_rounds_of_concurrent_requests() -> None:
    async with serve() as server:
        transport = KeepAliveTransport()
        async with httpx.AsyncClient(transport=transport) as client:
            server.gate = asyncio.Event()
            first = [asyncio.create_task(client.get(server.url)) for _ in range(12)]
            await server.wait_for(12)  # all 12 in flight at once: 12 connections
            server.gate.set()
            assert all(r.status_code == 200 for r in await asyncio.gather(*first))
            assert transport.connections == 12
            await asyncio.gather(*(client.get(server.url) for _ in range(12)))
            assert transport.connections == 12
        assert len(set(server.peers)) == 12  # the second round opened no connection
        assert transport.connections == 0  # closing the client closed them all


async def test_requests_one_after_another_use_one_connection() -> None:
    async with serve() as server:
        transport = KeepAliveTransport()
        async with httpx.AsyncClient(transport=transport) as client:
            for number in range(1, 6):
                response = await client.post(server.url, json={"n": number})
                assert response.text == f"request {number}"
        assert len(set(server.peers)) == 1


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    async with serve() as server:
        server.close_after = {1}
        transport = KeepAliveTransport()
        async with httpx.AsyncClient(transport=transport) as client:
            assert (await client.get(server.url)).text == "request 1"
            await asyncio.sleep(0.05)  # the server's close reaches the idle socket
            assert (await client.get(server.url)).text == "request 2"
        assert server.peers[0] != server.peers[1]


async def test_idle_connections_beyond_max_idle_are_closed() -> None:
    async with serve() as server:
        transport = KeepAliveTransport(max_idle=2)
        async with httpx.AsyncClient(transport=transport) as client:
            server.gate = asyncio.Event()
            pending = [asyncio.create_task(client.get(server.url)) for _ in range(5)]
            await server.wait_for(5)
            server.gate.set()
            await asyncio.gather(*pending)
            assert transport.connections == 2


async def test_connections_past_their_keepalive_expiry_are_not_used() -> None:
    async with serve() as server:
        transport = KeepAliveTransport(keepalive_expiry=0.05)
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get(server.url)
            await asyncio.sleep(0.1)
            await client.get(server.url)
        assert server.peers[0] != server.peers[1]


async def test_transport_errors_are_httpx_errors(unused_port: int) -> None:
    async with httpx.AsyncClient(transport=KeepAliveTransport()) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{unused_port}/")
    async with serve() as server:
        server.delay = 1.0
        transport = KeepAliveTransport()
        async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, read=0.05)) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.get(server.url)
            assert transport.connections == 0  # a connection left mid-response is not kept


async def test_a_cancelled_request_does_not_leave_its_connection_in_the_pool() -> None:
    async with serve() as server:
        server.gate = asyncio.Event()
        transport = KeepAliveTransport()
        async with httpx.AsyncClient(transport=transport) as client:
            request = asyncio.create_task(client.get(server.url))
            await server.wait_for(1)
            request.cancel()
            with pytest.raises(asyncio.CancelledError):
                await request
            assert transport.connections == 0
            server.gate.set()
            assert (await client.get(server.url)).text == "request 2"


async def test_the_model_uses_the_pool_unless_a_proxy_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    model = OpenAICompatModel("http://127.0.0.1:9/v1", model="m")
    assert isinstance(model._client()._transport, KeepAliveTransport)
    await model.aclose()
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    proxied = OpenAICompatModel("http://127.0.0.1:9/v1", model="m")
    assert not isinstance(proxied._client()._transport, KeepAliveTransport)  # httpx sets the proxy up
    await proxied.aclose()


async def test_a_large_request_body_is_sent_whole() -> None:
    """Bigger than the socket's send buffer: the write waits for the socket instead of sending it at once."""
    async with serve() as server:
        async with httpx.AsyncClient(transport=KeepAliveTransport()) as client:
            response = await client.post(server.url, content=b"x" * 8_000_000)
            assert response.text == "request 1"
            assert (await client.post(server.url, json={"small": True})).text == "request 2"
        assert len(set(server.peers)) == 1


def self_signed(folder: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a certificate for 127.0.0.1, and a client context that trusts it."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = f"{folder}/cert.pem", f"{folder}/key.pem"
    with open(cert_file, "wb") as out:
        out.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_file, "wb") as out:
        out.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    return server, ssl.create_default_context(cafile=cert_file)


async def test_tls_connections_are_verified_and_kept_alive(tmp_path: Path) -> None:
    server_tls, client_tls = self_signed(str(tmp_path))
    async with serve(tls=server_tls) as server:
        transport = KeepAliveTransport(client_tls)
        async with httpx.AsyncClient(transport=transport) as client:
            for number in (1, 2):
                assert (await client.get(server.url)).text == f"request {number}"
        assert len(set(server.peers)) == 1
        async with httpx.AsyncClient(transport=KeepAliveTransport(ssl.create_default_context())) as client:
            with pytest.raises(httpx.ConnectError, match=r"(?i)certificate"):
                await client.get(server.url)  # a certificate nobody vouches for is refused
