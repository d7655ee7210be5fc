"""Web fetch for agents: `fetch` (safe, bounded, readable) and the `web_fetch` tool built on it.

Safety. The model chooses the URL, so a fetch must not become a way into the user's network or the cloud
metadata service. Only http and https are fetched. Each hop's hostname is resolved here (off the event loop)
and every address it resolves to is judged by `tools.web_addresses.refusal_reason`; the connection then goes
to one of those checked addresses, never through a second lookup that a DNS-rebinding server could answer
differently. That pinning happens in the httpcore network backend, below TLS, so TLS still sends the real
hostname (SNI) and verifies the certificate against it, and the Host header is the URL's. Redirects are
followed by hand, each hop checked the same way, up to `max_redirects`. Proxy variables from the environment
are ignored (a proxy would do its own lookup). Loopback and private addresses are allowed only with
`allow_private=True` or for hosts listed in `allowed_hosts`.

Bounds. One deadline covers the whole fetch (lookups, redirects, body, extraction). The body is streamed and
decompressed here with an output limit per step, so neither a huge or endless body nor a compression bomb
holds more than `max_bytes` in memory. The text handed back is capped at `max_chars`.

Readability. HTML becomes Markdown of the main content, JSON is indented, text passes through, PDFs become
text (with the optional pypdf), other binary types are refused with a sentence saying what the URL holds (see
`tools.web_extract`). That work runs in a worker process that the deadline kills (`tools.web_worker`), so a
page that takes minutes to convert costs no CPU past the deadline. Blocking calls (DNS lookups, loading the
CA bundle) run in a small executor of this module's own, never in the event loop's default one.

Contract. `fetch` returns a `FetchResult` or raises `FetchError`, whatever the server sends; the texts it
hands back never hold lone surrogates. The sentences the model reads (errors, the result's header, the tool's
description) are templates under `prompts/templates/tools/web/`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import importlib.util
import ipaddress
import json
import socket
import ssl
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpcore
import httpx

from prompts.templating import render_tool_text
from tools.base import Tool
from tools.errors import FetchError
from tools.serialize import replace_surrogates
from tools.types import ToolResult
from tools.web_addresses import IPAddress, parse_ip_literal, refusal_reason
from tools.web_extract import Kind

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_CHARS",
    "DEFAULT_MAX_REDIRECTS",
    "DEFAULT_PAGE_CHARS",
    "DEFAULT_TIMEOUT",
    "FetchError",
    "FetchResult",
    "Resolver",
    "fetch",
    "web_fetch_tool",
    "web_tools",
]

DEFAULT_MAX_BYTES = 5_000_000
"""Body bytes read (after decompression) before the rest is cut: a big article is ~1 MB of HTML."""
DEFAULT_MAX_CHARS = 400_000
"""Characters of readable text kept: ~100k tokens, more than QwQ should ever page through for one URL."""
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_REDIRECTS = 5
DEFAULT_PAGE_CHARS = 8_000
"""Characters per `web_fetch` page: ~2k tokens, well under the toolbox's 20k-character result cap."""

INSTALL_HINT = "pip install readability-lxml markdownify (dependencies of qwq-agent)"
USER_AGENT = "qwq-agent-web-fetch/0.1 (+https://pypi.org/project/qwq-agent/)"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 65_536

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""Resolves (hostname, port) to IP address strings; `fetch` checks whatever it returns."""


def _error(name: str, fetched: str, /, **variables: Any) -> FetchError:
    """A FetchError about fetching `fetched`, whose message is the template `tools/web/<name>.j2`."""
    return FetchError(render_tool_text(f"web/{name}", **variables), url=fetched)


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


@dataclass(frozen=True)
class FetchResult:
    """What a fetch brought back, as readable text plus the facts the model needs to trust it."""

    url: str
    """The URL asked for."""
    final_url: str
    """The URL the text came from, after redirects."""
    status: int
    reason: str
    content_type: str
    """The media type without parameters, e.g. "text/html" ("" if the server sent none)."""
    kind: Kind
    """How the body was read: html (main content as Markdown), json (indented), text, pdf."""
    charset: str | None
    title: str | None
    text: str
    bytes_read: int
    """Body bytes after decompression (at most `max_bytes`)."""
    truncated_bytes: bool
    """The body was longer than `max_bytes` and was cut; the text covers only its beginning."""
    truncated_chars: bool
    """The readable text was longer than `max_chars` and was cut."""
    total_chars: int
    """Length of the readable text before the `max_chars` cut (a lower bound if `truncated_chars`: a huge
    page is cut before it is converted)."""
    redirects: tuple[str, ...] = ()
    """The URLs redirected to, in order (the last is `final_url`)."""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the server answered with a success status (2xx)."""
        return 200 <= self.status < 300

    def describe(self) -> str:
        """A few lines for the model: where the text came from, what it is and what was cut."""
        return render_tool_text(
            "web/result_header",
            url=self.url,
            final_url=self.final_url,
            redirected=bool(self.redirects),
            status=self.status,
            reason=self.reason,
            content_type=self.content_type,
            charset=self.charset if self.kind != "pdf" else None,
            bytes_read=self.bytes_read,
            title=self.title,
            truncated_bytes=self.truncated_bytes,
            truncated_chars=self.truncated_chars,
            kept_chars=len(self.text),
        ).rstrip("\n")


# --- addresses ------------------------------------------------------------------------------------------


_blocking: concurrent.futures.ThreadPoolExecutor | None = None
_blocking_lock = threading.Lock()


def _blocking_executor() -> concurrent.futures.ThreadPoolExecutor:
    """Threads for this module's blocking calls. Not the loop's default executor: a lookup that hangs (a slow
    resolver) must not hold a thread that the sandbox's shutdown or the user's own code is waiting for."""
    global _blocking
    with _blocking_lock:
        if _blocking is None:
            _blocking = concurrent.futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="qwq-web-io")
        return _blocking


async def _system_resolver(host: str, port: int) -> Sequence[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.run_in_executor(
        _blocking_executor(), lambda: socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    )
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _host_key(host: str) -> str:
    """One spelling per host for comparisons: lower case, no brackets or trailing dot, IPs canonical."""
    h = host.strip().lower().removeprefix("[").removesuffix("]").removesuffix(".")
    ip = parse_ip_literal(h)
    return str(ip) if ip is not None else h


def _connectable(ip: IPAddress) -> IPAddress:
    """The address to open a socket to: an IPv4-mapped IPv6 address is dialled as the IPv4 address it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


async def _checked_addresses(
    url: str, host: str, port: int, *, allow_private: bool, allowed: frozenset[str], resolver: Resolver
) -> list[IPAddress]:
    """Every address `host` stands for, or FetchError if it cannot be resolved or any address is refused."""
    key = _host_key(host)
    literal = parse_ip_literal(key)
    addresses: list[IPAddress]
    if literal is not None:
        addresses = [literal]
    elif key == "localhost" or key.endswith(".localhost"):
        # RFC 6761: these names are this machine whatever DNS says; never ask a resolver about them.
        addresses = [ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv6Address("::1")]
    else:
        try:
            found = await resolver(key, port)
        except (OSError, UnicodeError) as exc:
            raise _error("unresolvable", url, host=host, url=url, error=exc) from exc
        addresses = []
        for text in found:
            try:
                addresses.append(ipaddress.ip_address(text))  # IPv6 zone indexes ("%eth0") are kept
            except ValueError:
                continue
        if not addresses:
            raise _error("no_address", url, host=host, url=url)
    if not (allow_private or key in allowed):
        for ip in addresses:
            reason = refusal_reason(ip)
            if reason is not None:
                shown = None if literal is not None else ip
                raise _error("refused", url, url=url, host=host, ip=shown, reason=reason)
    return list(dict.fromkeys(_connectable(ip) for ip in addresses))


# --- connecting only to checked addresses ---------------------------------------------------------------


async def _open_tcp(
    backend: httpcore.AsyncNetworkBackend,
    ip: str,
    port: int,
    timeout: float | None,  # noqa: ASYNC109 - httpcore's signature
    local_address: str | None,
    socket_options: Iterable[Any] | None,
) -> httpcore.AsyncNetworkStream:
    """The single place a web fetch opens a socket (tests wrap it to prove nothing leaves loopback)."""
    return await backend.connect_tcp(
        ip, port, timeout=timeout, local_address=local_address, socket_options=socket_options
    )


class _PinnedBackend(httpcore.AsyncNetworkBackend):
    """A network backend that dials only addresses `fetch` has checked for the host being connected to.

    httpcore asks it for a connection to the URL's host; it answers with a socket to a pinned address of that
    host, so TLS (started later on this stream) still uses the real hostname. A host with no pin fails closed.
    """

    def __init__(self) -> None:
        self.pins: dict[str, list[IPAddress]] = {}
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = self.pins.get(_host_key(host))
        if not addresses:
            raise httpcore.ConnectError(f"no checked address for {host}")
        last: Exception | None = None
        for ip in addresses:
            try:
                return await _open_tcp(self._inner, str(ip), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout, OSError) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's signature
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


_default_ssl: ssl.SSLContext | None = None


async def _default_ssl_context() -> ssl.SSLContext:
    """The verifying TLS context, built once: loading the CA bundle takes ~0.1 s, too long for every fetch
    and too long to block the event loop, so the first build runs in a thread. Contexts are safe to share."""
    global _default_ssl
    if _default_ssl is None:
        _default_ssl = await asyncio.get_running_loop().run_in_executor(
            _blocking_executor(), lambda: httpx.create_ssl_context(trust_env=False)
        )
    return _default_ssl


def _transport(backend: _PinnedBackend, ssl_context: ssl.SSLContext) -> httpx.AsyncHTTPTransport:
    transport = httpx.AsyncHTTPTransport(verify=ssl_context, trust_env=False, retries=0)
    # httpx has no public way to pass a network backend; the pool it builds is replaced by the same pool over
    # ours. An httpx release that renames `_pool` makes this fail loudly, not fall back to unpinned lookups.
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError(
            "this httpx version builds its transport differently; tools.web needs httpx 0.27-0.28"
        )
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=ssl_context,
        max_connections=10,
        max_keepalive_connections=5,
        http1=True,
        http2=False,
        retries=0,
        network_backend=backend,
    )
    return transport


# --- reading the body -----------------------------------------------------------------------------------


class _Inflater:
    """Incremental gzip/deflate decoding whose output per step is bounded (a bomb never expands in full)."""

    def __init__(self, encoding: str) -> None:
        self._deflate = encoding == "deflate"
        self._d = zlib.decompressobj(
            zlib.MAX_WBITS | 16 if encoding in ("gzip", "x-gzip") else zlib.MAX_WBITS
        )
        self._started = False

    def decompress(self, data: bytes, limit: int) -> tuple[bytes, bytes]:
        """Up to `limit` bytes of output, and the input not consumed yet."""
        try:
            out = self._d.decompress(data, limit)
        except zlib.error:
            if not (self._deflate and not self._started):
                raise
            # "deflate" is often sent as raw deflate without the zlib header.
            self._d = zlib.decompressobj(-zlib.MAX_WBITS)
            out = self._d.decompress(data, limit)
        self._started = True
        return out, self._d.unconsumed_tail


async def _read_body(response: httpx.Response, url: str, max_bytes: int) -> tuple[bytes, bool]:
    """The body, decompressed, at most `max_bytes` of it; and whether it was cut."""
    encoding = response.headers.get("content-encoding", "").strip().lower()
    inflater: _Inflater | None = None
    if encoding in ("gzip", "x-gzip", "deflate"):
        inflater = _Inflater(encoding)
    elif encoding not in ("", "identity"):
        raise _error("unknown_encoding", url, url=url, encoding=encoding)
    body = bytearray()
    raw = 0
    async for chunk in response.aiter_raw(_CHUNK):
        raw += len(chunk)
        if inflater is None:
            room = max_bytes - len(body)
            body += chunk[:room]
            if len(chunk) > room:
                return bytes(body), True
            continue
        data = chunk
        while data:
            room = max_bytes - len(body)
            try:
                out, rest = inflater.decompress(data, room + 1)
            except zlib.error as exc:
                raise _error("corrupt_compression", url, url=url, error=exc) from exc
            body += out[:room]
            if len(out) > room:
                return bytes(body), True
            if not out and len(rest) == len(data):  # nothing consumed (data after the stream's end)
                break
            data = rest
        if raw > max_bytes:  # compressed data alone beyond the cap: stop, whatever it expands to
            return bytes(body), True
    return bytes(body), False


def _declared_binary(mime: str) -> bool:
    from tools.web_extract import sniff_kind

    return sniff_kind(mime, b"") == "binary" and mime != ""


def _media_type(header: str) -> tuple[str, str | None]:
    mime, _, params = header.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip("\"'") or None
    return mime.strip().lower(), charset


@dataclass(frozen=True)
class _Text:
    kind: Kind
    text: str
    """At most max_chars of the text, lone surrogates replaced."""
    total: int
    codec: str | None
    title: str | None
    cut: bool


async def _extract(
    data: bytes, mime: str, charset: str | None, truncated: bool, url: str, max_chars: int
) -> _Text:
    """The body as text, from a worker process (killed if the deadline cancels this); FetchError otherwise."""
    from tools.web_worker import WorkerFailed, extraction_pool

    meta = {"mime": mime, "charset": charset, "truncated": truncated, "url": url, "max_chars": max_chars}
    request = json.dumps(meta).encode("ascii") + b"\n" + data
    try:
        header, _, text = (await extraction_pool().run(request)).partition(b"\n")
        reply = json.loads(header)
    except (WorkerFailed, OSError) as exc:  # OSError: no worker process could be started
        raise _error("extraction_failed", url, url=url, error=_why(exc)) from exc
    except ValueError as exc:  # a worker that does not speak the protocol (never seen)
        raise _error("extraction_failed", url, url=url, error=f"unreadable reply: {exc}") from exc
    if "unreadable" in reply:
        details = dict(reply["details"])
        if reply["unreadable"] == "html_needs_library":
            details["install_hint"] = INSTALL_HINT
        raise _error(f"unreadable_{reply['unreadable']}", url, url=url, **details)
    if "failed" in reply:
        raise _error("extraction_failed", url, url=url, error=reply["failed"])
    title = replace_surrogates(reply["title"]) if reply["title"] else None
    return _Text(
        kind=reply["kind"],
        text=replace_surrogates(text.decode("utf-8", "surrogatepass")),
        total=reply["total"],
        codec=reply["codec"],
        title=title,
        cut=reply["cut"],
    )


# --- fetch ----------------------------------------------------------------------------------------------


def _join(base: httpx.URL, location: str) -> str:
    """Resolve a Location header against the current URL, without httpx's validation of the result."""
    from urllib.parse import urljoin

    return urljoin(str(base), location.strip())


def _parse_url(url: str) -> httpx.URL:
    """Check the scheme and rewrite odd IPv4 spellings to the address they mean (which httpx rejects)."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise _error("invalid_url", url, url=url, error=exc) from exc
    if parts.scheme.lower() not in ("http", "https"):
        raise _error("unsupported_scheme", url, url=url)
    if not host:
        raise _error("no_host", url, url=url)
    ip = parse_ip_literal(host)
    if isinstance(ip, ipaddress.IPv4Address) and host != str(ip):
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = (userinfo + "@" if userinfo else "") + str(ip) + (f":{port}" if port is not None else "")
        text = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    try:
        return httpx.URL(text)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:  # UnicodeError for lone surrogates
        raise _error("invalid_url", url, url=url, error=exc) from exc


async def fetch(
    url: str,
    *,
    allow_private: bool = False,
    allowed_hosts: Iterable[str] = (),
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_chars: int = DEFAULT_MAX_CHARS,
    timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - the documented contract; enforced inside
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    resolver: Resolver | None = None,
    headers: dict[str, str] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> FetchResult:
    """GET `url` safely and return its readable text; raise `FetchError` if refused or failed.

    `allowed_hosts` lists hosts (names or IP literals) that may be on loopback or private networks;
    `allow_private=True` allows all. `timeout` bounds the whole fetch, redirects and extraction included.
    `resolver` replaces the system resolver (tests, or a DNS-over-HTTPS client); its answers are checked all
    the same. `ssl_context` replaces the default certificate verification (e.g. a company CA); TLS always
    checks the certificate against the URL's hostname, never the pinned address. Any HTTP status is returned
    as a result; see `FetchResult.ok`.
    """
    if max_bytes <= 0 or max_chars <= 0 or timeout <= 0 or max_redirects < 0:
        raise ValueError("max_bytes, max_chars and timeout must be positive and max_redirects not negative")
    started = time.monotonic()
    extracting: list[int] = []  # the body's size once its extraction has started
    try:
        async with asyncio.timeout(timeout):
            return await _fetch(
                url,
                allow_private=allow_private,
                allowed=frozenset(_host_key(h) for h in allowed_hosts),
                max_bytes=max_bytes,
                max_chars=max_chars,
                timeout=timeout,
                max_redirects=max_redirects,
                resolver=resolver or _system_resolver,
                headers=headers or {},
                ssl_context=ssl_context,
                started=started,
                extracting=extracting,
            )
    except TimeoutError:
        if extracting:  # the download was done: retrying the same URL would only fail the same way
            raise _error("extraction_timed_out", url, url=url, seconds=timeout, size=extracting[0]) from None
        raise _error("timed_out", url, url=url, seconds=timeout) from None


async def _fetch(
    url: str,
    *,
    allow_private: bool,
    allowed: frozenset[str],
    max_bytes: int,
    max_chars: int,
    timeout: float,  # noqa: ASYNC109 - per-operation httpx timeouts; the deadline is the caller's
    max_redirects: int,
    resolver: Resolver,
    headers: dict[str, str],
    ssl_context: ssl.SSLContext | None,
    started: float,
    extracting: list[int],
) -> FetchResult:
    backend = _PinnedBackend()
    request_headers = {
        "User-Agent": USER_AGENT,
        "Accept": "text/html,application/xhtml+xml,application/json,text/plain;q=0.9,"
        "application/pdf;q=0.8,*/*;q=0.5",
        "Accept-Encoding": "gzip, deflate",
        **headers,
    }
    current = _parse_url(url)
    redirects: list[str] = []
    # Requests go straight to the transport: httpx's client parses every Location header itself, and rejects
    # odd IPv4 spellings there before this code could read them as the addresses they mean.
    limits = httpx.Timeout(timeout).as_dict()
    async with _transport(backend, ssl_context or await _default_ssl_context()) as transport:
        while True:
            host = current.raw_host.decode("ascii")
            port = current.port or (443 if current.scheme == "https" else 80)
            backend.pins[_host_key(host)] = await _checked_addresses(
                str(current) if redirects else url,
                host,
                port,
                allow_private=allow_private,
                allowed=allowed,
                resolver=resolver,
            )
            try:
                request = httpx.Request(
                    "GET", current, headers=request_headers, extensions={"timeout": limits}
                )
                response = await transport.handle_async_request(request)
            except httpx.TimeoutException as exc:
                raise _error("no_answer", url, url=current, error=type(exc).__name__) from exc
            except httpx.HTTPError as exc:
                raise _error("connect_failed", url, url=current, error=_why(exc)) from exc
            try:
                location = response.headers.get("location")
                if response.status_code in _REDIRECTS and location:
                    if len(redirects) >= max_redirects:
                        raise _error(
                            "too_many_redirects", url, url=url, limit=max_redirects, stopped_at=current
                        )
                    try:
                        current = _parse_url(_join(current, location))
                    except (FetchError, httpx.InvalidURL, ValueError) as exc:
                        raise _error("bad_redirect", url, url=current, location=location, error=exc) from exc
                    redirects.append(str(current))
                    continue
                mime, charset = _media_type(response.headers.get("content-type", ""))
                if _declared_binary(mime):  # refused before its body is downloaded
                    length = response.headers.get("content-length", "").strip()
                    size = int(length) if length.isascii() and length.isdigit() and len(length) < 19 else None
                    raise _error("unreadable_binary", url, url=current, mime=mime, size=size, truncated=False)
                from tools.web_worker import extraction_pool

                extraction_pool().prewarm()  # a worker starts while the body downloads
                try:
                    body, cut = await _read_body(response, str(current), max_bytes)
                except httpx.TimeoutException as exc:
                    raise _error("stopped_sending", url, url=current, error=type(exc).__name__) from exc
                except httpx.HTTPError as exc:
                    raise _error("read_failed", url, url=current, error=_why(exc)) from exc
            finally:
                await response.aclose()
            extracting.append(len(body))
            extracted = await _extract(body, mime, charset, cut, str(current), max_chars)
            return FetchResult(
                url=url,
                final_url=str(current),
                status=response.status_code,
                reason=response.reason_phrase,
                content_type=mime,
                kind=extracted.kind,
                charset=extracted.codec,
                title=extracted.title,
                text=extracted.text,
                bytes_read=len(body),
                truncated_bytes=cut,
                truncated_chars=extracted.cut or extracted.total > max_chars,
                total_chars=extracted.total,
                redirects=tuple(redirects),
                elapsed_s=time.monotonic() - started,
            )


# --- the tool -------------------------------------------------------------------------------------------


@dataclass
class _Cache:
    """Recent fetches by URL, so asking for page 2 does not download the page again."""

    size: int = 8
    ttl_s: float = 300.0
    entries: OrderedDict[str, tuple[float, FetchResult]] = field(default_factory=OrderedDict)

    def get(self, url: str) -> FetchResult | None:
        hit = self.entries.get(url)
        if hit is None or time.monotonic() - hit[0] > self.ttl_s:
            return None
        self.entries.move_to_end(url)
        return hit[1]

    def put(self, url: str, result: FetchResult) -> None:
        self.entries[url] = (time.monotonic(), result)
        self.entries.move_to_end(url)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


def _page_text(result: FetchResult, page: int, page_chars: int) -> ToolResult:
    pages = max(1, -(-len(result.text) // page_chars))
    head = result.describe()
    if page > pages:
        missing = render_tool_text("web/no_such_page", page=page, pages=pages)
        return ToolResult(content=f"{head}\n{missing}", is_error=True)
    start = (page - 1) * page_chars
    window = result.text[start : start + page_chars]
    if pages > 1:
        head += "\n" + render_tool_text(
            "web/page_position",
            page=page,
            pages=pages,
            start=start,
            end=start + len(window),
            total=len(result.text),
            url=result.url,
            next_page=page + 1 if page < pages else None,
        )
    if not result.ok:
        head += "\n" + render_tool_text("web/error_status", status=result.status)
    body = window if window.strip() else render_tool_text("web/no_text")
    return ToolResult(content=f"{head}\n\n{body}", is_error=not result.ok)


def web_fetch_tool(
    *,
    allow_private: bool = False,
    allowed_hosts: Iterable[str] = (),
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout: float = DEFAULT_TIMEOUT,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    page_chars: int = DEFAULT_PAGE_CHARS,
    resolver: Resolver | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> Tool[..., Any]:
    """The `web_fetch` tool: `url` and an optional `page`; refusals and failures become error observations.

    Raises ImportError (saying what to install) if the HTML extraction libraries are missing, so a missing
    extra is found when the agent is built, not by the model on its first page.
    """
    missing = [
        name
        for name in ("readability", "markdownify", "bs4", "lxml")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise ImportError(f"web_fetch needs {', '.join(missing)}: {INSTALL_HINT}")
    hosts = tuple(allowed_hosts)
    cache = _Cache()

    async def web_fetch(url: str, page: int = 1) -> ToolResult:
        result = cache.get(url) if page > 1 else None
        if result is None:
            try:
                result = await fetch(
                    url,
                    allow_private=allow_private,
                    allowed_hosts=hosts,
                    max_bytes=max_bytes,
                    timeout=timeout,
                    max_redirects=max_redirects,
                    resolver=resolver,
                    ssl_context=ssl_context,
                )
            except FetchError as exc:
                return ToolResult(content=exc.message, is_error=True)
            cache.put(url, result)
        return _page_text(result, page, page_chars)

    parameters = {
        "type": "object",
        "properties": {
            "url": {"type": "string", "description": render_tool_text("web/param_url")},
            "page": {
                "type": "integer",
                "minimum": 1,
                "default": 1,
                "description": render_tool_text("web/param_page", page_chars=page_chars),
            },
        },
        "required": ["url"],
    }
    description = render_tool_text("web/description")
    # The toolbox's timeout should not cut a fetch before its own deadline says what happened.
    return Tool.from_schema("web_fetch", description, parameters, web_fetch, timeout=timeout + 15)


def web_tools(
    *, allow_private: bool = False, allowed_hosts: Iterable[str] = (), **options: Any
) -> list[Tool[..., Any]]:
    """The web tool family, ready for `Agent(tools=...)`: currently `[web_fetch]`."""
    return [web_fetch_tool(allow_private=allow_private, allowed_hosts=allowed_hosts, **options)]
