"""`tools.web.fetch` against hostile servers on 127.0.0.1: whatever comes back, a `FetchResult` or a
`FetchError`, with texts that encode as UTF-8; and a deadline that stops the work, not just the wait.

The server here writes raw HTTP responses (any status, header bytes, framing, body), so a test can send what
no well-behaved server would. As in test_web.py, a guard on the one function that opens sockets fails the
test if anything but a loopback address is dialled, and the resolver knows no names at all.
"""

from __future__ import annotations

import asyncio
import bz2
import codecs
import concurrent.futures
import contextlib
import encodings.aliases
import gzip
import http.server
import ipaddress
import os
import random
import socket
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tools import web
from tools.errors import FetchError
from tools.web import FetchResult, fetch
from tools.web_worker import extraction_pool

LOOPBACK = ("127.0.0.1",)
NOISE = random.Random(9).randbytes(256)  # the same "random" bytes on every run
REPO = str(Path(__file__).resolve().parents[2])


@dataclass(frozen=True)
class Page:
    status: int = 200
    headers: tuple[tuple[bytes, bytes], ...] = ()
    body: bytes = b""
    framing: str = "length"  # "length", "chunked" or "close" (the body ends when the connection does)


class RawHandler(http.server.BaseHTTPRequestHandler):
    """Serves `pages[path]` byte for byte: status line, headers as given, the body framed as asked."""

    protocol_version = "HTTP/1.1"
    pages: dict[str, Page] = {}  # noqa: RUF012 - filled by the tests before each fetch

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        page = self.pages.get(self.path.partition("?")[0], Page(404, body=b"no such page"))
        head = [b"HTTP/1.1 %d Hostile\r\n" % page.status]
        head += [name + b": " + value + b"\r\n" for name, value in page.headers]
        if page.framing == "length":
            head.append(b"Content-Length: %d\r\n" % len(page.body))
            payload = page.body
        elif page.framing == "chunked":
            head.append(b"Transfer-Encoding: chunked\r\n")
            payload = b"%x\r\n%s\r\n0\r\n\r\n" % (len(page.body), page.body) if page.body else b"0\r\n\r\n"
        else:
            payload = page.body
        head.append(b"Connection: close\r\n\r\n")
        self.close_connection = True
        # The client stops reading what it does not want.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(b"".join(head) + payload)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RawHandler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
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


async def no_names(host: str, port: int) -> list[str]:
    raise socket.gaierror(socket.EAI_NONAME, "this test resolves no names")


_served = iter(range(10**9))


def serve(page: Page) -> str:
    path = f"/p{next(_served)}"
    RawHandler.pages[path] = page
    return path


def assert_encodes(*texts: str) -> None:
    for text in texts:
        text.encode("utf-8")  # raises UnicodeEncodeError on a lone surrogate


async def fetch_hostile(url: str, **options: Any) -> FetchResult | FetchError:
    """The contract: a result or a FetchError, nothing else; every text in either encodes."""
    options.setdefault("timeout", 20)
    try:
        result = await fetch(url, allowed_hosts=LOOPBACK, resolver=no_names, **options)
    except FetchError as exc:
        error = exc
    else:
        assert isinstance(result, FetchResult)
        assert_encodes(result.text, result.title or "", result.describe(), result.charset or "")
        assert_encodes(web._page_text(result, 1, 8000).content)
        return result
    assert error.message
    assert_encodes(error.message, str(error))
    return error


# --- the classes of hostile input, one explicit case each --------------------------------------------------

NON_TEXT_CODECS = ["rot13", "hex", "zlib", "uu", "bz2", "base64", "quopri", "undefined", "utf-16", "utf_32"]


@pytest.mark.parametrize("label", NON_TEXT_CODECS)
@pytest.mark.parametrize("where", ["header", "meta", "xml"])
async def test_charsets_that_name_no_text_encoding_are_ignored(server: str, label: str, where: str) -> None:
    html = "<html><head>{meta}<title>Ok</title></head><body><p>Plain café text, 5 €.</p></body></html>"
    meta = f'<meta charset="{label}">' if where == "meta" else ""
    body = html.format(meta=meta).encode("cp1252")  # not UTF-8, so the declared charset is tried
    if where == "xml":
        body = f'<?xml version="1.0" encoding="{label}"?>'.encode() + body
    content_type = b"text/html" + (b"; charset=" + label.encode() if where == "header" else b"")
    result = await fetch_hostile(server + serve(Page(headers=((b"Content-Type", content_type),), body=body)))
    assert isinstance(result, FetchResult), result
    # Which Latin code page a guess settles on for so short a text varies; the label's codec is never used.
    assert "Plain caf" in result.text
    assert " text, 5 " in result.text
    assert result.charset not in NON_TEXT_CODECS


async def test_deep_json_stays_raw_text(server: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    result = await fetch_hostile(
        server + serve(Page(headers=((b"Content-Type", b"application/json"),), body=deep))
    )
    assert isinstance(result, FetchResult), result
    assert result.kind == "json"
    assert result.text == deep.decode()


@pytest.mark.parametrize(
    ("body", "content_type", "kept"),
    [
        (
            b'{"a":"\\ud800","b":"x\\udfffy","c":"\\ud83d\\ude00"}',
            b"application/json",
            ["x\ufffdy", "\U0001f600"],
        ),
        (b"<html><body><p>one &#xd800; two &#55296; three</p></body></html>", b"text/html", ["one", "three"]),
        (
            b"<html><head><title>t&#xdc80;t</title></head><body><p>body</p></body></html>",
            b"text/html",
            ["body"],
        ),
    ],
    ids=["json", "html-entities", "html-title"],
)
async def test_lone_surrogates_never_come_back(
    server: str, body: bytes, content_type: bytes, kept: list[str]
) -> None:
    result = await fetch_hostile(server + serve(Page(headers=((b"Content-Type", content_type),), body=body)))
    assert isinstance(result, FetchResult), result
    for text in kept:
        assert text in result.text
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in result.text + (result.title or ""))


async def test_the_tool_result_has_no_lone_surrogates(server: str) -> None:
    from tools import Toolbox, ToolCall

    path = serve(Page(headers=((b"Content-Type", b"application/json"),), body=b'["\\udc80 tail"]'))
    box = Toolbox(web.web_tools(allowed_hosts=LOOPBACK))
    result = await box.call(ToolCall(name="web_fetch", arguments={"url": server + path}))
    assert not result.is_error
    assert "\ufffd tail" in result.content
    assert_encodes(result.content)


@pytest.mark.parametrize("path", ["/\udc80", "/?q=\ud800x", "/\ud83d\ude00"])
async def test_urls_with_lone_surrogates_are_refused_with_a_sentence_that_encodes(
    server: str, path: str
) -> None:
    with pytest.raises(FetchError, match="is not a valid URL") as caught:
        await fetch(server + path, allowed_hosts=LOOPBACK)
    assert_encodes(caught.value.message)


@pytest.mark.parametrize("host", ["9" * 5000, "1." + "9" * 5000, "0x" + "f" * 5000, "0" + "7" * 5000])
async def test_hosts_that_are_huge_numbers_are_names_that_do_not_resolve(
    host: str, dialled: list[str]
) -> None:
    with pytest.raises(FetchError, match="Could not resolve"):
        await fetch(f"http://{host}/", resolver=no_names)
    assert dialled == []


@pytest.mark.parametrize("tag", ["div", "b", "table", "ul", "span", "font"])
async def test_html_nested_deeper_than_the_parsers_go_keeps_its_text(server: str, tag: str) -> None:
    depth = 100_000
    body = (
        b"<html><head><title>Deep</title></head><body><p>Intro.</p>"
        + f"<{tag}>".encode() * depth
        + b"the deep text"
        + f"</{tag}>".encode() * depth
        + b"</body></html>"
    )
    result = await fetch_hostile(server + serve(Page(headers=((b"Content-Type", b"text/html"),), body=body)))
    assert isinstance(result, FetchResult), result
    assert "the deep text" in result.text
    assert "Intro." in result.text


@pytest.mark.parametrize(
    "body",
    [
        b"%PDF-1.4\n" + bytes(range(256)) * 20,
        b"%PDF-1.7\n1 0 obj\n" + b"[" * 100_000 + b"\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF",
        b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 1 0 R >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF",
        b"%PDF-",
    ],
    ids=["noise", "deep-array", "self-referencing", "empty"],
)
async def test_pdfs_that_are_not_pdfs(server: str, body: bytes) -> None:
    pytest.importorskip("pypdf")
    result = await fetch_hostile(
        server + serve(Page(headers=((b"Content-Type", b"application/pdf"),), body=body))
    )
    if isinstance(result, FetchError):
        assert "PDF" in result.message


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        (b"gzip", gzip.compress(b"hello world")[:-6]),  # cut inside the trailer
        (b"gzip", b"\x1f\x8b\x08\x00" + bytes(40)),
        (b"gzip", gzip.compress(b"hello") + b"trailing garbage after the stream"),
        (b"deflate", b"\x78\x9c" + NOISE[:64]),
        (b"deflate", zlib.compress(b"ok")[:-1]),
        (b"br", NOISE[:32]),
        (b"gzip, br", gzip.compress(b"x")),
        (b"bzip2", bz2.compress(b"x")),
        (b"\xff\xfe", b"x"),
    ],
)
async def test_broken_compression(server: str, encoding: bytes, body: bytes) -> None:
    headers = ((b"Content-Type", b"text/plain"), (b"Content-Encoding", encoding))
    await fetch_hostile(server + serve(Page(headers=headers, body=body)))


# --- the fuzz test: all of it, combined at random ----------------------------------------------------------

ALL_CODEC_LABELS = sorted(
    set(encodings.aliases.aliases)
    | set(encodings.aliases.aliases.values())
    | {"undefined", "unicode_escape", "raw_unicode_escape", "idna", "punycode", "utf-7", "utf-16", "utf-32"}
    | {
        "rot13",
        "hex",
        "zlib",
        "uu",
        "bz2",
        "base64",
        "quopri",
        "mbcs",
        "oem",
        "charmap",
        "palmos",
        "x-user-defined",
    }
)


def _text_codecs() -> list[str]:
    names = set()
    for label in ALL_CODEC_LABELS:
        try:
            info = codecs.lookup(label)
        except LookupError:
            continue
        if info._is_text_encoding and info.name not in ("undefined",):
            names.add(info.name)
    return sorted(names)


TEXT_CODEC_NAMES = _text_codecs()
CONTENT_TYPES = [
    b"text/html",
    b"application/xhtml+xml",
    b"application/json",
    b"application/ld+json",
    b"text/plain",
    b"text/xml",
    b"text/javascript",
    b"application/pdf",
    b"application/octet-stream",
    b"image/png",
    b"video/mp4",
    b"",
    b"TEXT/HTML",
    b"text/html;",
    b"text/html; charset",
    b'text/html; charset="',
    b"multipart/x-mixed-replace; boundary=x",
    b"\xff\xfe/\x80",
]


LOCATIONS = st.one_of(
    st.sampled_from(
        [
            b"/p0",
            b"http://[::1",
            b"javascript:alert(1)",
            b"//example.org/x",
            b"http://169.254.169.254/",
            b"http://0x7f.1:1/",
            b"http:///",
            b"file:///etc/passwd",
            b"http://a" + b"a" * 5000 + b".test/",
            b"http://\xff\xfe/",
            b"\x00",
        ]
    ),
    st.binary(max_size=40),
)


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    kind = draw(
        st.sampled_from(
            ["bytes", "encoded", "deep_json", "surrogate_json", "deep_html", "entities", "fake_pdf", "mixed"]
        )
    )
    if kind == "bytes":
        return draw(st.binary(max_size=4000))
    if kind == "encoded":
        codec = draw(st.sampled_from(TEXT_CODEC_NAMES))
        text = draw(st.text(max_size=500))
        try:
            return text.encode(codec, "replace")
        except UnicodeError:  # idna, punycode: not every error handler, not every text
            return text.encode("utf-8", "surrogatepass")
    if kind == "deep_json":
        depth = draw(st.sampled_from([10, 1_000, 5_000, 200_000]))
        opener = draw(st.sampled_from([b"[", b'{"a":', b'[{"b":']))
        return opener * depth + draw(st.sampled_from([b"", b"1", b"]" * depth]))
    if kind == "surrogate_json":
        units = draw(st.lists(st.integers(0xD800, 0xDFFF), min_size=1, max_size=6))
        text = "".join(f"\\u{u:04x}" for u in units)
        return f'{{"k": "{text}", "l": ["{text}x"]}}'.encode()
    if kind == "deep_html":
        tag = draw(
            st.sampled_from(["div", "b", "table", "tr", "td", "ul", "li", "span", "svg", "math", "p", "a"])
        )
        depth = draw(st.sampled_from([100, 300, 3_000, 60_000]))
        close = draw(st.booleans())
        return (
            b"<html><body>"
            + f"<{tag}>".encode() * depth
            + b"deep"
            + (f"</{tag}>".encode() * depth if close else b"")
        )
    if kind == "entities":
        refs = draw(
            st.lists(
                st.one_of(
                    st.integers(0, 0x10FFFF + 10).map(lambda n: f"&#{n};"),
                    st.integers(0xD800, 0xDFFF).map(lambda n: f"&#x{n:x};"),
                    st.sampled_from(["&amp;", "&nosuch;", "&#;", "&#x;", "&", "&#99999999999999999999;"]),
                ),
                max_size=20,
            )
        )
        return (
            "<html><head><title>" + "".join(refs[:3]) + "</title></head><body><p>" + "".join(refs)
        ).encode()
    if kind == "fake_pdf":
        return b"%PDF-1." + draw(st.binary(max_size=2000))
    parts = draw(
        st.lists(
            st.sampled_from([b"<", b">", b"<!--", b"<script>", b"</", b"&#", b"\x00", b"\xff"]), max_size=50
        )
    )
    return b"".join(parts)


@st.composite
def pages(draw: st.DrawFn) -> tuple[Page, int]:
    body = draw(bodies())
    headers: list[tuple[bytes, bytes]] = []
    content_type = draw(st.sampled_from(CONTENT_TYPES))
    label = draw(st.one_of(st.sampled_from(ALL_CODEC_LABELS), st.text(max_size=12)))
    where = draw(st.sampled_from(["none", "header", "meta", "xml", "both"]))
    if where in ("header", "both"):
        content_type += b"; charset=" + label.encode("utf-8", "replace")
    if where in ("meta", "both"):
        body = f'<meta charset="{label}">'.encode("utf-8", "replace") + body
    if where == "xml":
        body = f'<?xml version="1.0" encoding="{label}"?>'.encode("utf-8", "replace") + body
    if content_type or draw(st.booleans()):
        headers.append((b"Content-Type", content_type))
    compression = draw(
        st.sampled_from(["none", "gzip", "deflate", "raw-deflate", "broken-gzip", "br", "odd"])
    )
    if compression == "gzip":
        headers.append((b"Content-Encoding", b"gzip"))
        body = gzip.compress(body)
    elif compression == "deflate":
        headers.append((b"Content-Encoding", b"deflate"))
        body = zlib.compress(body)
    elif compression == "raw-deflate":
        headers.append((b"Content-Encoding", b"deflate"))
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        body = c.compress(body) + c.flush()
    elif compression == "broken-gzip":
        headers.append((b"Content-Encoding", draw(st.sampled_from([b"gzip", b"x-gzip", b"deflate"]))))
        packed = gzip.compress(body)
        cut = draw(st.integers(0, len(packed)))
        body = packed[:cut] + draw(st.binary(max_size=16))
    elif compression == "br":
        headers.append((b"Content-Encoding", b"br"))
    elif compression == "odd":
        headers.append((b"Content-Encoding", draw(st.binary(min_size=1, max_size=8))))
    status = draw(st.sampled_from([200, 200, 200, 203, 206, 299, 404, 410, 500, 503]))
    if draw(st.integers(0, 7)) == 0:  # a redirect somewhere odd (only loopback can ever be dialled)
        status = draw(st.sampled_from([301, 302, 303, 307, 308]))
        headers.append((b"Location", draw(LOCATIONS)))
    if draw(st.integers(0, 7)) == 0:  # header bytes no server should send
        headers.append((draw(st.binary(min_size=1, max_size=6)), draw(st.binary(max_size=12))))
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    max_bytes = draw(st.sampled_from([5_000_000, 1_000, 7]))
    return Page(status, tuple(headers), body, framing), max_bytes


@pytest.mark.slow
@settings(
    max_examples=int(os.environ.get("QWQ_WEB_FUZZ_EXAMPLES", "200")),
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.function_scoped_fixture,
        HealthCheck.data_too_large,
    ],
)
@given(case=pages())
@example(
    case=(Page(headers=((b"Content-Type", b"text/html; charset=rot13"),), body=b"<p>\xe9</p>"), 5_000_000)
)
@example(case=(Page(headers=((b"Content-Type", b"text/plain; charset=zlib"),), body=b"\xe9t\xe9"), 5_000_000))
@example(
    case=(Page(headers=((b"Content-Type", b"text/html"),), body=b'<meta charset="uu"><p>\xe9</p>'), 5_000_000)
)
@example(case=(Page(headers=((b"Content-Type", b"application/json"),), body=b"[" * 100_000), 5_000_000))
def test_hostile_pages_give_a_result_or_a_fetch_error(server: str, case: tuple[Page, int]) -> None:
    page, max_bytes = case
    asyncio.run(fetch_hostile(server + serve(page), max_bytes=max_bytes))


URL_PARTS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["9" * 5000, "[::1", "[v1.x]", "%00", "\udc80", "..", "xn--", "a" * 300, "0x" + "f" * 40]
    ),
)


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    url=st.one_of(
        st.text(max_size=120),
        st.builds(
            "{}://{}{}{}".format,
            st.sampled_from(["http", "https", "HTTP", "ftp", "", "http:"]),
            st.one_of(URL_PARTS, st.builds("{}@{}".format, URL_PARTS, URL_PARTS)),
            st.sampled_from(["", ":80", ":0", ":99999", ":-1", ":x", ":" + "9" * 30]),
            URL_PARTS,
        ),
    )
)
def test_any_url_the_model_writes_gives_a_fetch_error(url: str) -> None:
    """Whatever the model writes as a URL, `fetch` answers with a sentence. Nothing is ever dialled here."""
    import unittest.mock

    import httpcore

    async def never(*args: Any) -> Any:
        raise httpcore.ConnectError("this test connects nowhere")

    async def attempt() -> None:
        with pytest.raises(FetchError) as caught:
            await fetch(url, resolver=no_names, timeout=10)
        assert_encodes(caught.value.message)

    with unittest.mock.patch.object(web, "_open_tcp", never):
        asyncio.run(attempt())


# --- the deadline ends the work ----------------------------------------------------------------------------


def table_page(rows: int = 25_000) -> bytes:
    """4.9 MB, over half a minute of extraction on these machines: far longer than any deadline below."""
    cells = "".join(
        f"<tr><td>{i}</td><td>station {i % 97}</td><td>{i * 7 % 1000}.{i % 10} m</td>"
        f"<td>reading {i} taken at the north pier gauge, checked by the harbour office</td><td>ok</td>"
        f"<td><a href='/r/{i}'>record {i}</a></td></tr>"
        for i in range(rows)
    )
    return f"<html><body><h1>Readings</h1><table>{cells}</table></body></html>".encode()


def _cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process, or None if it is gone (or only a zombie nobody reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == b"Z" else int(fields[11]) + int(fields[12])


def _extract_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "qwq-web-extract"]


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
async def test_the_deadline_kills_the_extraction_and_a_small_fetch_then_succeeds(server: str) -> None:
    pool = extraction_pool()
    table = serve(Page(headers=((b"Content-Type", b"text/html; charset=utf-8"),), body=table_page()))
    small = serve(
        Page(headers=((b"Content-Type", b"text/html"),), body=b"<html><body><p>small page</p></body></html>")
    )
    await fetch(server + small, allowed_hosts=LOOPBACK)  # a warm worker, as in a running agent

    seen: set[int] = set()

    async def watch() -> None:  # the workers that held the big pages
        while True:
            seen.update(pool.pids())
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    huge = [fetch(server + table, allowed_hosts=LOOPBACK, timeout=2) for _ in range(4)]
    outcomes = await asyncio.gather(*huge, return_exceptions=True)
    watcher.cancel()
    assert all(isinstance(o, FetchError) and "longer than 2 s" in o.message for o in outcomes), outcomes
    assert all("turning it into text" in o.message for o in outcomes if isinstance(o, FetchError))

    result = await fetch(server + small, allowed_hosts=LOOPBACK, timeout=20)
    assert "small page" in result.text

    # Every worker that held a big page is gone (killed and reaped); the threads that drove them have ended;
    # what is left of the pool sleeps.
    busy = [pid for pid in seen - set(pool.pids())]
    for _ in range(100):
        if all(_cpu_ticks(pid) is None for pid in busy) and not _extract_threads():
            break
        await asyncio.sleep(0.05)
    assert [pid for pid in busy if _cpu_ticks(pid) is not None] == []
    assert _extract_threads() == []
    assert busy  # the workers that held the big pages were replaced, not left to finish
    for _ in range(20):  # the replacements start (a moment of imports), then sleep
        before = {pid: _cpu_ticks(pid) for pid in pool.pids()}
        await asyncio.sleep(0.5)
        after = {pid: _cpu_ticks(pid) for pid in before}
        if all(after[pid] is None or after[pid] - before[pid] <= 1 for pid in before):  # type: ignore[operator]
            break
    else:
        raise AssertionError(f"the pool's workers keep using CPU: {before} -> {after}")


async def test_the_event_loops_default_executor_is_never_used(server: str) -> None:
    class Forbidden(concurrent.futures.ThreadPoolExecutor):
        def submit(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("tools.web used the event loop's default executor")

    loop = asyncio.get_running_loop()
    loop.set_default_executor(Forbidden(max_workers=1))
    web._default_ssl = None  # built again, in tools.web's own threads
    path = serve(Page(headers=((b"Content-Type", b"text/html"),), body=b"<p>fine</p>"))
    result = await fetch(server + path, allowed_hosts=LOOPBACK)
    assert "fine" in result.text
    assert await web._system_resolver("127.0.0.1", 80) == ["127.0.0.1"]


async def test_a_worker_that_dies_is_a_fetch_error_and_is_replaced(server: str) -> None:
    import signal

    pool = extraction_pool()
    path = serve(Page(headers=((b"Content-Type", b"text/html"),), body=table_page(20_000)))
    task = asyncio.create_task(fetch(server + path, allowed_hosts=LOOPBACK, timeout=60))
    working: list[int] = []
    while not working and not task.done():  # a worker burning CPU: the one extracting the page
        before = {pid: _cpu_ticks(pid) or 0 for pid in pool.pids()}
        await asyncio.sleep(0.2)
        working = [pid for pid, ticks in before.items() if (_cpu_ticks(pid) or 0) > ticks + 5]
    for pid in working:
        os.kill(pid, signal.SIGKILL)  # as the kernel's OOM killer would
    with pytest.raises(FetchError, match="could not be turned into text") as caught:
        await task
    assert "killed by signal 9" in caught.value.message
    ok = serve(Page(headers=((b"Content-Type", b"text/plain"),), body=b"after"))
    assert (await fetch(server + ok, allowed_hosts=LOOPBACK)).text == "after"


_CHILD = """
import asyncio, sys
from tools.web import fetch
from tools.web_worker import extraction_pool

async def main():
    task = asyncio.ensure_future(fetch(sys.argv[1], allowed_hosts=["127.0.0.1"], timeout=120))
    while not extraction_pool().pids():
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # the worker is extracting the big page now
    print(*extraction_pool().pids(), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc")
async def test_workers_do_not_outlive_a_killed_agent(server: str) -> None:
    """SIGKILL the process that fetches while its worker is busy with a page: the worker exits too."""
    import signal
    import subprocess
    import sys

    path = serve(Page(headers=((b"Content-Type", b"text/html"),), body=table_page()))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    agent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CHILD, server + path, stdout=subprocess.PIPE, env=env
    )
    assert agent.stdout is not None
    line = await asyncio.wait_for(agent.stdout.readline(), 120)
    workers = [int(pid) for pid in line.split()]
    assert workers
    assert all(_cpu_ticks(pid) is not None for pid in workers)
    agent.send_signal(signal.SIGKILL)
    await agent.wait()
    for _ in range(200):  # the workers' watchdog looks once a second; allow for a loaded machine
        if all(_cpu_ticks(pid) is None for pid in workers):
            break
        await asyncio.sleep(0.05)
    assert [pid for pid in workers if _cpu_ticks(pid) is not None] == []
