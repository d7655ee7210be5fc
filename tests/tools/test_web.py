"""`tools.web.fetch` and the `web_fetch` tool against real HTTP(S) servers on 127.0.0.1 (and ::1 if present).

Tests allow loopback for themselves (`allowed_hosts` / `allow_private`). A guard wraps the one function that
opens sockets (`tools.web._open_tcp`) and fails the test if anything but a loopback address is dialled, so a
bug in the refusal logic can never send packets elsewhere; tests of refused addresses also assert that no
connection was attempted at all.
"""

from __future__ import annotations

import contextlib
import datetime
import gzip
import http.server
import ipaddress
import json
import socket
import ssl
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tools import Toolbox, ToolCall, web
from tools.web import FetchError, fetch, web_fetch_tool, web_tools

FIXTURES = Path(__file__).parent / "fixtures"
EXPECT = json.loads((FIXTURES / "expectations.json").read_text(encoding="utf-8"))
ONE_GB = 1 << 30
MB = 1 << 20


def _gzip_bomb() -> bytes:
    """A valid gzip stream of 1 GB of zeros, about 1 MB long, built from one repeated deflate segment."""
    zeros = bytes(MB)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    segment = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH) == segment  # a full flush resets the state
    tail = c.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(1024):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    return (
        header
        + segment * 1024
        + tail
        + crc.to_bytes(4, "little")
        + (ONE_GB % (1 << 32)).to_bytes(4, "little")
    )


def _pdf(text: str) -> bytes:
    """A minimal one-page PDF showing `text` (offsets computed, so any reader accepts it)."""
    stream = f"BT /F1 24 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    bomb: bytes = b""
    hits: dict[str, int] = {}  # noqa: RUF012 - shared counter, read by tests

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str | None, **headers: str) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # routes, one per behaviour under test
        path, _, query = self.path.partition("?")
        Handler.hits[path] = Handler.hits.get(path, 0) + 1
        # The client stops reading huge and endless bodies: that is the point of them.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._route(path, query)

    def _route(self, path: str, query: str) -> None:
        if path.startswith("/fixtures/"):
            name = path.removeprefix("/fixtures/")
            charset = "" if name in ("legacy_cp1252.html", "news_shift_jis.html") else "; charset=utf-8"
            self._send(200, (FIXTURES / name).read_bytes(), "text/html" + charset)
        elif path == "/redirect":
            self._send(302, b"", "text/plain", Location=query.removeprefix("to="))
        elif path.startswith("/hop/"):
            n = int(path.removeprefix("/hop/"))
            if n == 0:
                self._send(200, b"arrived", "text/plain")
            else:
                self._send(301, b"", "text/plain", Location=f"/hop/{n - 1}")
        elif path in ("/huge", "/video"):  # 1 GB announced and produced on the fly, never stored
            self.send_response(200)
            self.send_header("Content-Type", "text/plain" if path == "/huge" else "video/mp4")
            self.send_header("Content-Length", str(ONE_GB))
            self.end_headers()
            line = b"all work and no play makes a dull page\n" * 1600
            sent = 0
            while sent < ONE_GB:
                self.wfile.write(line)
                sent += len(line)
        elif path == "/endless":  # chunked, no length, never ends
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            chunk = b"<p>more and more</p>\n" * 3000
            while True:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        elif path == "/trickle":  # a byte every 0.1 s forever: only a total deadline stops it
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            while True:
                self.wfile.write(b"1\r\nx\r\n")
                self.wfile.flush()
                time.sleep(0.1)
        elif path == "/bomb":
            self._send(200, Handler.bomb, "text/plain", Content_Encoding="gzip")
        elif path == "/double-gzip":
            self._send(200, gzip.compress(gzip.compress(b"hi")), "text/plain", Content_Encoding="gzip, gzip")
        elif path == "/gzip-page":
            body = gzip.compress((FIXTURES / "docs_page.html").read_bytes())
            self._send(200, body, "text/html; charset=utf-8", Content_Encoding="gzip")
        elif path == "/deflate-raw":
            c = zlib.compressobj(6, zlib.DEFLATED, -15)
            self._send(
                200, c.compress(b"raw deflate body") + c.flush(), "text/plain", Content_Encoding="deflate"
            )
        elif path == "/brotli":
            self._send(200, b"\x0b\x02\x80hi\x03", "text/plain", Content_Encoding="br")
        elif path == "/wrong-charset":  # says utf-8, is windows-1252
            body = "<html><head><title>Prix</title></head><body><p>Crème brûlée: 6,20 €</p></body></html>"
            self._send(200, body.encode("cp1252"), "text/html; charset=utf-8")
        elif path == "/latin1-label-on-utf8":  # says latin-1, is UTF-8
            self._send(200, "naïve café – ok".encode(), "text/plain; charset=iso-8859-1")
        elif path == "/meta-vs-header":  # header wins over a wrong meta, when the header decodes
            body = '<html><head><meta charset="utf-8"><title>t</title></head><body><p>Ærø Ø</p></body></html>'
            self._send(200, body.encode("cp1252"), "text/html; charset=windows-1252")
        elif path == "/utf16-bom":
            self._send(200, "\ufeffUTF-16 text, π≈3.14".encode("utf-16-le"), "text/plain")
        elif path == "/cut-utf8":  # multi-byte characters straddling the byte cap
            self._send(200, ("é" * 5000).encode(), "text/plain; charset=utf-8")
        elif path == "/json":
            self._send(200, b'{"name":"caf\xc3\xa9","items":[1,2,{"deep":true}]}', "application/json")
        elif path == "/text":
            self._send(200, b"plain text\nsecond line\n", "text/plain; charset=utf-8")
        elif path == "/untyped-html":
            self._send(
                200,
                b"<!DOCTYPE html><html><head><title>No type</title></head><body><p>Hello</p></body></html>",
                None,
            )
        elif path == "/png":
            self._send(200, b"\x89PNG\r\n\x1a\n" + bytes(2000), "image/png")
        elif path == "/zip":
            self._send(200, b"PK\x03\x04" + bytes(300), "application/octet-stream")
        elif path == "/pdf":
            self._send(200, _pdf("Quarterly flood report"), "application/pdf")
        elif path == "/404":
            self._send(
                404,
                b"<html><head><title>Not found</title></head><body><h1>Page not found</h1><p>No page at this address.</p></body></html>",
                "text/html; charset=utf-8",
            )
        elif path == "/500":
            self._send(500, b"Internal Server Error: database unavailable", "text/plain")
        elif path == "/echo-host":
            self._send(200, f"host={self.headers.get('Host')}".encode(), "text/plain")
        else:
            self._send(404, b"no such route", "text/plain")


class _V6Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6


def _serve(server: http.server.ThreadingHTTPServer) -> None:
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    Handler.bomb = _gzip_bomb()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    _serve(httpd)
    yield f"127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def server6() -> Iterator[str]:
    try:
        httpd = _V6Server(("::1", 0), Handler)
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    _serve(httpd)
    yield f"[::1]:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def dialled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address a fetch tries to connect to; anything but loopback fails the test before connecting."""
    seen: list[str] = []
    real = web._open_tcp

    async def guarded(backend: Any, ip: str, *args: Any) -> Any:
        seen.append(ip)
        assert ipaddress.ip_address(ip).is_loopback, f"a test tried to connect to {ip}"
        return await real(backend, ip, *args)

    monkeypatch.setattr(web, "_open_tcp", guarded)
    return seen


RESOLVED = {
    "myapp.test": ["127.0.0.1"],
    "v6app.test": ["::1"],
    "intranet.test": ["10.0.0.1"],
    "metadata.test": ["169.254.169.254"],
    "rebind.test": ["93.184.216.34", "127.0.0.1"],  # one public, one private answer: refused as a whole
    "mapped.test": ["::ffff:127.0.0.1"],
    "scoped.test": ["fe80::1%eth0"],
    "ula.test": ["2606:4700::1111", "fd00::1"],
}


async def resolver(host: str, port: int) -> list[str]:
    if host not in RESOLVED:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return RESOLVED[host]


LOOPBACK = ("127.0.0.1",)


# --- real-world pages -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECT))
async def test_real_world_pages_become_markdown_of_their_main_content(server: str, name: str) -> None:
    result = await fetch(f"http://{server}/fixtures/{name}", allowed_hosts=LOOPBACK)
    expect = EXPECT[name]
    assert result.status == 200
    assert result.kind == "html"
    assert result.ok
    flat = " ".join(result.text.split())
    for phrase in expect["must"]:
        assert " ".join(phrase.split()) in flat, phrase
    for phrase in expect["must_not"]:
        assert phrase not in flat, phrase
    assert result.title is not None
    assert expect["title"].split(" ")[0] in result.title
    lines = result.text.splitlines()
    structure = expect["structure"]
    if "heading" in structure:
        assert any(line.startswith("#") and structure["heading"] in line for line in lines)
    if "list_item" in structure:
        assert any(
            line.lstrip().startswith(("- ", "1. ", "2. ", "3. ")) and structure["list_item"] in line
            for line in lines
        )
    if "table_cell" in structure:
        assert any(line.startswith("|") and structure["table_cell"] in line for line in lines)
    if "code_block" in structure:
        fenced = result.text.split("```")[1::2]
        assert any(structure["code_block"] in block for block in fenced)


async def test_links_are_made_absolute_against_the_final_url(server: str) -> None:
    result = await fetch(f"http://{server}/fixtures/news_article.html", allowed_hosts=LOOPBACK)
    assert f"[old docks](http://{server}/uk/old-docks)" in result.text


async def test_legacy_charsets_without_header_are_decoded(server: str) -> None:
    cp = await fetch(f"http://{server}/fixtures/legacy_cp1252.html", allowed_hosts=LOOPBACK)
    assert cp.charset == "cp1252"
    assert "€7.50" in cp.text
    assert "crêpes" in cp.text
    sj = await fetch(f"http://{server}/fixtures/news_shift_jis.html", allowed_hosts=LOOPBACK)
    assert sj.charset in ("cp932", "shift_jis")
    assert "潮位計" in sj.text


async def test_a_wrong_charset_header_does_not_garble_the_text(server: str) -> None:
    wrong = await fetch(f"http://{server}/wrong-charset", allowed_hosts=LOOPBACK)
    assert "Crème brûlée: 6,20 €" in wrong.text
    latin1 = await fetch(f"http://{server}/latin1-label-on-utf8", allowed_hosts=LOOPBACK)
    assert latin1.text == "naïve café – ok"
    header_wins = await fetch(f"http://{server}/meta-vs-header", allowed_hosts=LOOPBACK)
    assert "Ærø Ø" in header_wins.text


async def test_byte_order_mark_and_cut_multibyte_text(server: str) -> None:
    bom = await fetch(f"http://{server}/utf16-bom", allowed_hosts=LOOPBACK)
    assert bom.text == "UTF-16 text, π≈3.14"
    cut = await fetch(f"http://{server}/cut-utf8", allowed_hosts=LOOPBACK, max_bytes=1001)
    assert cut.truncated_bytes
    assert cut.charset == "utf-8"
    assert cut.text == "é" * 500


async def test_json_is_pretty_printed_and_text_passes_through(server: str) -> None:
    j = await fetch(f"http://{server}/json", allowed_hosts=LOOPBACK)
    assert j.kind == "json"
    assert j.text == json.dumps(
        {"name": "café", "items": [1, 2, {"deep": True}]}, indent=2, ensure_ascii=False
    )
    t = await fetch(f"http://{server}/text", allowed_hosts=LOOPBACK)
    assert t.kind == "text"
    assert t.text == "plain text\nsecond line\n"
    u = await fetch(f"http://{server}/untyped-html", allowed_hosts=LOOPBACK)
    assert u.kind == "html"
    assert u.content_type == ""
    assert "Hello" in u.text


async def test_pdf_becomes_text(server: str) -> None:
    pytest.importorskip("pypdf")
    result = await fetch(f"http://{server}/pdf", allowed_hosts=LOOPBACK)
    assert result.kind == "pdf"
    assert "Quarterly flood report" in result.text


@pytest.mark.parametrize(("path", "words"), [("/png", "image/png"), ("/zip", "application/octet-stream")])
async def test_binary_is_refused_with_a_sentence(server: str, path: str, words: str) -> None:
    with pytest.raises(FetchError, match=words) as caught:
        await fetch(f"http://{server}{path}", allowed_hosts=LOOPBACK)
    assert "not text" in str(caught.value)


async def test_declared_binary_is_refused_before_its_body_is_read(server: str) -> None:
    with pytest.raises(FetchError, match=r"video/mp4 \(1,073,741,824 bytes\), not text"):
        await fetch(f"http://{server}/video", allowed_hosts=LOOPBACK, timeout=10)


async def test_error_statuses_come_back_as_results(server: str) -> None:
    missing = await fetch(f"http://{server}/404", allowed_hosts=LOOPBACK)
    assert missing.status == 404
    assert not missing.ok
    assert "Page not found" in missing.text
    broken = await fetch(f"http://{server}/500", allowed_hosts=LOOPBACK)
    assert broken.status == 500
    assert "database unavailable" in broken.text
    assert "Status: 500 Internal Server Error" in broken.describe()


# --- refusals -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "2130706433",
        "0x7f000001",
        "0177.0.0.1",
        "127.1",
        "0x7f.1",
        "localhost",
        "LOCALHOST.",
        "app.localhost",
        "[::1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
    ],
)
async def test_loopback_in_every_spelling_is_refused_by_default(
    server: str, host: str, dialled: list[str]
) -> None:
    port = server.rsplit(":", 1)[1]
    with pytest.raises(FetchError, match="Refused to fetch") as caught:
        await fetch(f"http://{host}:{port}/text")
    assert "loopback" in str(caught.value)
    assert dialled == []


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://0xa9fea9fe/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.0.1:8080/admin",
        "http://100.64.0.1/",
        "http://[fd00::1]/",
        "http://[fe80::1%25eth0]/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://224.0.0.1/",
        "http://intranet.test/",
        "http://metadata.test/",
        "http://rebind.test/",
        "http://mapped.test/",
        "http://scoped.test/",
        "http://ula.test/",
    ],
)
async def test_private_and_special_addresses_are_refused_before_connecting(
    url: str, dialled: list[str]
) -> None:
    with pytest.raises(FetchError, match="Refused to fetch"):
        await fetch(url, resolver=resolver)
    assert dialled == []


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://example.org/x",
        "gopher://127.0.0.1:70/",
        "javascript:alert(1)",
        "http:///nohost",
    ],
)
async def test_only_http_and_https_urls(url: str, dialled: list[str]) -> None:
    with pytest.raises(FetchError):
        await fetch(url)
    assert dialled == []


async def test_unresolvable_names_fail_with_a_sentence() -> None:
    with pytest.raises(FetchError, match="Could not resolve"):
        await fetch("http://no-such-host.test/", resolver=resolver)


async def test_redirect_to_a_private_address_is_refused(server: str, dialled: list[str]) -> None:
    for target in [
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.1/",
        "http://012.1/",
        "http://0xa9fea9fe/",
        "http://intranet.test/",
    ]:
        dialled.clear()
        with pytest.raises(FetchError, match="Refused to fetch") as caught:
            await fetch(f"http://{server}/redirect?to={target}", allowed_hosts=LOOPBACK, resolver=resolver)
        assert dialled == ["127.0.0.1"], "only the allowed first hop was dialled"
        assert "Refused" in str(caught.value)


async def test_redirect_to_loopback_under_another_name_is_refused(server: str, dialled: list[str]) -> None:
    port = server.rsplit(":", 1)[1]
    with pytest.raises(FetchError, match="localhost"):
        await fetch(f"http://{server}/redirect?to=http://localhost:{port}/text", allowed_hosts=LOOPBACK)
    assert dialled == ["127.0.0.1"]


async def test_redirect_to_a_non_http_scheme_is_refused(server: str) -> None:
    with pytest.raises(FetchError, match="cannot be fetched"):
        await fetch(f"http://{server}/redirect?to=file:///etc/passwd", allowed_hosts=LOOPBACK)


async def test_redirects_are_followed_and_capped(server: str) -> None:
    ok = await fetch(f"http://{server}/hop/3", allowed_hosts=LOOPBACK)
    assert ok.text == "arrived"
    assert len(ok.redirects) == 3
    assert ok.final_url.endswith("/hop/0")
    assert "redirected from" in ok.describe()
    with pytest.raises(FetchError, match="redirected more than 2 times"):
        await fetch(f"http://{server}/hop/3", allowed_hosts=LOOPBACK, max_redirects=2)


# --- what may be allowed, and where the connection goes -----------------------------------------------------


@pytest.mark.parametrize("host", ["2130706433", "0x7f000001", "0177.0.0.1", "127.1"])
async def test_odd_literals_connect_to_the_address_they_mean(
    server: str, host: str, dialled: list[str]
) -> None:
    port = server.rsplit(":", 1)[1]
    result = await fetch(f"http://{host}:{port}/echo-host", allowed_hosts=LOOPBACK)
    assert dialled == ["127.0.0.1"]
    assert result.text == f"host=127.0.0.1:{port}"


async def test_a_name_is_pinned_to_its_checked_address_and_keeps_its_host_header(
    server: str, dialled: list[str]
) -> None:
    port = server.rsplit(":", 1)[1]
    result = await fetch(
        f"http://myapp.test:{port}/echo-host", allowed_hosts=["myapp.test"], resolver=resolver
    )
    assert result.text == f"host=myapp.test:{port}"
    assert dialled == ["127.0.0.1"]


async def test_allowed_hosts_allows_only_the_listed_host(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    with pytest.raises(FetchError, match="Refused"):
        await fetch(f"http://myapp.test:{port}/text", allowed_hosts=["other.test"], resolver=resolver)
    result = await fetch(f"http://myapp.test:{port}/text", allow_private=True, resolver=resolver)
    assert result.ok


async def test_ipv4_mapped_address_is_dialled_as_ipv4_when_allowed(server: str, dialled: list[str]) -> None:
    port = server.rsplit(":", 1)[1]
    result = await fetch(f"http://[::ffff:127.0.0.1]:{port}/text", allow_private=True)
    assert result.ok
    assert dialled == ["127.0.0.1"]


async def test_ipv6_loopback(server6: str, dialled: list[str]) -> None:
    with pytest.raises(FetchError, match="loopback"):
        await fetch(f"http://{server6}/text")
    assert dialled == []
    result = await fetch(f"http://{server6}/text", allowed_hosts=["::1"])
    assert result.ok
    assert dialled == ["::1"]
    port = server6.rsplit(":", 1)[1]
    named = await fetch(
        f"http://v6app.test:{port}/echo-host", allowed_hosts=["v6app.test"], resolver=resolver
    )
    assert named.text == f"host=v6app.test:{port}"


# --- bounds -------------------------------------------------------------------------------------------------


async def test_a_1_gb_body_is_cut_at_the_byte_cap(server: str) -> None:
    result = await fetch(f"http://{server}/huge", allowed_hosts=LOOPBACK, max_bytes=2 * MB)
    assert result.truncated_bytes
    assert result.bytes_read == 2 * MB
    assert "only its beginning was read" in result.describe()


async def test_an_endless_chunked_body_is_cut(server: str) -> None:
    result = await fetch(f"http://{server}/endless", allowed_hosts=LOOPBACK, max_bytes=MB)
    assert result.truncated_bytes
    assert result.bytes_read == MB
    assert "more and more" in result.text


async def test_a_trickling_server_meets_the_deadline(server: str) -> None:
    with pytest.raises(FetchError, match=r"longer than 1\.5 s"):
        await fetch(f"http://{server}/trickle", allowed_hosts=LOOPBACK, timeout=1.5)


async def test_a_gzip_bomb_is_cut_after_decompression(server: str) -> None:
    result = await fetch(f"http://{server}/bomb", allowed_hosts=LOOPBACK, max_bytes=4 * MB)
    assert result.truncated_bytes
    assert result.bytes_read == 4 * MB


async def test_compressed_pages_are_decoded(server: str) -> None:
    page = await fetch(f"http://{server}/gzip-page", allowed_hosts=LOOPBACK)
    assert "## The retry policy" in page.text
    raw = await fetch(f"http://{server}/deflate-raw", allowed_hosts=LOOPBACK)
    assert raw.text == "raw deflate body"


@pytest.mark.parametrize("path", ["/double-gzip", "/brotli"])
async def test_unsupported_encodings_are_refused(server: str, path: str) -> None:
    with pytest.raises(FetchError, match="cannot decode"):
        await fetch(f"http://{server}{path}", allowed_hosts=LOOPBACK)


async def test_text_is_capped_in_characters(server: str) -> None:
    result = await fetch(f"http://{server}/fixtures/docs_page.html", allowed_hosts=LOOPBACK, max_chars=300)
    assert result.truncated_chars
    assert len(result.text) == 300
    assert result.total_chars > 300
    assert "longer than the 300 characters kept" in result.describe()


async def test_connection_refused_is_a_fetch_error(dialled: list[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(FetchError, match="Could not fetch"):
            await fetch(f"http://127.0.0.1:{port}/", allowed_hosts=LOOPBACK)


# --- the web_fetch tool: paging and observations -------------------------------------------------------


def box(**options: Any) -> Toolbox:
    return Toolbox(web_tools(allowed_hosts=["127.0.0.1"], **options))


async def call(toolbox: Toolbox, **arguments: Any) -> Any:
    return await toolbox.call(ToolCall(name="web_fetch", arguments=arguments))


def test_the_tool_schema() -> None:
    [tool] = web_tools()
    assert tool.name == "web_fetch"
    assert tool.parameters["required"] == ["url"]
    assert set(tool.parameters["properties"]) == {"url", "page"}
    assert "pages" in tool.description


async def test_a_page_says_where_it_came_from(server: str) -> None:
    result = await call(box(), url=f"http://{server}/fixtures/docs_page.html")
    assert not result.is_error
    head, _, body = result.content.partition("\n\n")
    assert head.splitlines()[:3] == [
        f"URL: http://{server}/fixtures/docs_page.html",
        "Status: 200 OK · text/html; utf-8 · 9,753 bytes",
        "Title: Retrying requests",
    ]
    assert body.startswith("# Retrying requests")


async def test_long_texts_are_paged_and_pages_come_from_the_cache(server: str) -> None:
    toolbox = box(page_chars=500)
    url = f"http://{server}/fixtures/news_article.html"
    before = Handler.hits.get("/fixtures/news_article.html", 0)
    first = await call(toolbox, url=url)
    assert "Page 1 of " in first.content
    assert f'url="{url}" and page=2' in first.content
    pages = int(first.content.split("Page 1 of ")[1].split(" ")[0])
    texts = [first.content.split("\n\n", 1)[1]]
    for page in range(2, pages + 1):
        result = await call(toolbox, url=url, page=page)
        assert f"Page {page} of {pages}" in result.content
        texts.append(result.content.split("\n\n", 1)[1])
    assert "page=" not in result.content.split("\n\n", 1)[0].split(f"Page {pages} of {pages}")[1]
    assert Handler.hits["/fixtures/news_article.html"] == before + 1  # later pages did not refetch
    whole = (await fetch(url, allowed_hosts=["127.0.0.1"])).text
    assert "".join(texts) == whole
    beyond = await call(toolbox, url=url, page=pages + 1)
    assert beyond.is_error
    assert f"There is no page {pages + 1}" in beyond.content


async def test_refusals_and_failures_are_error_observations(server: str) -> None:
    refused = await call(Toolbox(web_tools()), url=f"http://{server}/text")
    assert refused.is_error
    assert refused.content.startswith("Refused to fetch")
    assert "loopback" in refused.content
    binary = await call(box(), url=f"http://{server}/png")
    assert binary.is_error
    assert "image/png" in binary.content
    bad = await call(box(), url="ftp://example.org/")
    assert bad.is_error
    assert "Only http and https" in bad.content
    invalid = await call(box(), url=f"http://{server}/text", page=0)
    assert invalid.is_error
    assert "page" in invalid.content


async def test_http_errors_show_the_status_and_the_error_page(server: str) -> None:
    result = await call(box(), url=f"http://{server}/404")
    assert result.is_error
    assert "Status: 404 Not Found" in result.content
    assert "Page not found" in result.content
    assert "The server answered 404" in result.content


async def test_cut_bodies_are_reported(server: str) -> None:
    result = await call(box(max_bytes=100_000), url=f"http://{server}/huge")
    assert "Cut: the body was longer than 100,000 bytes" in result.content


def test_factory_options() -> None:
    tool = web_fetch_tool(timeout=5, page_chars=1000)
    assert tool.timeout is not None
    assert tool.timeout > 5
    assert "1,000 characters" in tool.parameters["properties"]["page"]["description"]


# --- TLS: the connection is pinned, the certificate is still checked against the hostname ------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, ssl.SSLContext, list[str]]]:
    """An HTTPS server on 127.0.0.1 with a certificate for `myapp.test` only, from a CA made here."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qwq-agent test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "myapp.test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("myapp.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = Path(folder / "leaf.pem"), Path(folder / "leaf.key")
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_names: list[str] = []
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert_file, key_file)
    server_ctx.sni_callback = lambda _sock, name, _ctx: server_names.append(str(name))  # type: ignore[assignment,func-returns-value]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.socket = server_ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    client_ctx = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    yield str(httpd.server_address[1]), client_ctx, server_names
    httpd.shutdown()
    httpd.server_close()


async def test_tls_uses_the_hostname_for_sni_and_verification(
    tls_server: tuple[str, ssl.SSLContext, list[str]], dialled: list[str]
) -> None:
    port, context, server_names = tls_server
    result = await fetch(
        f"https://myapp.test:{port}/echo-host",
        allowed_hosts=["myapp.test"],
        resolver=resolver,
        ssl_context=context,
    )
    assert result.text == f"host=myapp.test:{port}"
    assert dialled == ["127.0.0.1"]
    assert server_names[-1] == "myapp.test"


async def test_tls_to_the_pinned_ip_does_not_pass_for_the_name(
    tls_server: tuple[str, ssl.SSLContext, list[str]],
) -> None:
    port, context, _ = tls_server
    with pytest.raises(FetchError, match="Could not fetch"):
        await fetch(f"https://127.0.0.1:{port}/text", allowed_hosts=["127.0.0.1"], ssl_context=context)


async def test_tls_with_default_trust_rejects_the_test_ca(
    tls_server: tuple[str, ssl.SSLContext, list[str]],
) -> None:
    port, _, _ = tls_server
    with pytest.raises(FetchError, match=r"(?i)certificate"):
        await fetch(f"https://myapp.test:{port}/text", allowed_hosts=["myapp.test"], resolver=resolver)


def test_the_tool_refuses_to_start_without_the_extraction_libraries(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "readability" else real(name, *a)
    )
    with pytest.raises(ImportError, match=r"readability: pip install readability-lxml markdownify"):
        web_tools()


def test_fetch_error_lives_in_tools_errors_and_keeps_its_old_import_path() -> None:
    import tools.errors

    assert web.FetchError is tools.errors.FetchError
    assert FetchError("caf\udce9", url="u").message == "caf\ufffd"  # sentences always encode
