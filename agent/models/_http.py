"""HTTP for `OpenAICompatModel`: replicas, retries with backoff, server-sent events, timeouts, error mapping.

* **Replicas.** A model may be served by several OpenAI-compatible servers. Each request goes to the replica
  with the fewest requests in flight; a replica that fails (connection error, 429, 5xx, a broken stream) is
  skipped for a cool-down period and the request is retried on another one.
* **Retries.** 429, 5xx and connection failures are retried with exponential backoff and jitter, honouring
  `Retry-After` up to `max_retry_after` seconds, until an event has arrived; after that, a failure is a
  `ModelStreamError` with `retryable=True`, which the loop answers by running the step again.
* **Timeouts.** `read_timeout`: no bytes at all (an SSE keep-alive comment counts). `idle_timeout`: no event
  carrying data, although keep-alive comments may still flow. `deadline`: one whole request. Each failure says
  which limit fired.
* **Errors the developer must fix** (bad URL, key, model name, request) raise at once, saying what to do.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import json
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from agent.models import errors

__all__ = [
    "API_KEY_ENVS",
    "HttpPolicy",
    "Replica",
    "Replicas",
    "RequestLog",
    "Transport",
    "describe_error",
    "error_detail",
    "excerpt",
]

RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
_SSE = {"Accept": "text/event-stream"}
API_KEY_ENVS = ("QWQ_AGENT_API_KEY", "OPENAI_API_KEY")

# httpx's transport errors often carry no message (`ReadError()`): say what they mean.
_ERROR_MEANINGS = {
    "ConnectError": "could not connect",
    "ConnectTimeout": "the connection was not accepted in time",
    "ReadError": "the connection broke while the response was being read",
    "WriteError": "the connection broke while the request was being sent",
    "ReadTimeout": "no bytes arrived within the read timeout",
    "WriteTimeout": "the request could not be sent within the timeout",
    "PoolTimeout": "no connection became free in time",
    "RemoteProtocolError": "the server closed the connection or broke the HTTP protocol mid-response",
    "LocalProtocolError": "the request broke the HTTP protocol",
    "ProxyError": "the proxy refused the request",
}


def describe_error(exc: BaseException) -> str:
    """`Name: message`, with a meaning in words where the exception carries no message."""
    name = type(exc).__name__
    message = str(exc).strip()
    meaning = _ERROR_MEANINGS.get(name)
    if message and meaning:
        return f"{name}: {meaning} ({message})"
    return f"{name}: {message or meaning or 'no detail given'}"


def excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def error_detail(text: str) -> str:
    """The server's own error message from an OpenAI-style error body, else an excerpt of the body."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError, RecursionError):
        return excerpt(text or "(empty body)")
    if isinstance(data, Mapping):
        err = data.get("error", data)
        if isinstance(err, Mapping):
            message = err.get("message") or err.get("detail")
            if message:
                return excerpt(str(message))
        elif isinstance(err, str):
            return excerpt(err)
        if "detail" in data:
            return excerpt(str(data["detail"]))
    return excerpt(text)


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


@dataclass(frozen=True)
class HttpPolicy:
    """Timeouts and the retry policy (seconds)."""

    connect_timeout: float = 10.0
    read_timeout: float = 120.0
    idle_timeout: float = 180.0
    deadline: float | None = 3600.0
    max_retries: int = 4
    backoff: float = 0.5
    max_backoff: float = 30.0
    max_retry_after: float = 30.0
    cooldown: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        base: float = min(self.max_backoff, self.backoff * 2.0**attempt)
        return base * (0.75 + random.random() / 2)


@dataclass
class Replica:
    """One server of a model: its API root, requests in flight, and until when it is skipped."""

    url: str
    in_flight: int = 0
    failures: int = 0
    skip_until: float = 0.0
    _parsed: dict[str, httpx.URL] = field(default_factory=dict, repr=False, compare=False)

    def endpoint(self, path: str) -> httpx.URL:
        """`url + path`, parsed once: httpx would otherwise parse the same URL again on every turn."""
        parsed = self._parsed.get(path)
        if parsed is None:
            parsed = self._parsed[path] = httpx.URL(self.url + path)
        return parsed


class Replicas:
    """The servers of one model; `acquire` chooses the healthy one with the fewest turns in flight."""

    def __init__(self, urls: Sequence[str], cooldown: float) -> None:
        if not urls:
            raise ValueError("give at least one base URL")
        self.replicas = [Replica(url.rstrip("/")) for url in urls]
        self.cooldown = cooldown

    def acquire(self, avoid: Replica | None = None) -> Replica:
        """The healthy replica with the fewest turns in flight, now counted as one more."""
        now = time.monotonic()
        healthy = [r for r in self.replicas if r.skip_until <= now and r is not avoid]
        if not healthy:  # all failed lately: the one that recovers first, even the one just tried
            healthy = sorted(self.replicas, key=lambda r: r.skip_until)[:1]
        chosen = min(healthy, key=lambda r: (r.in_flight, self.replicas.index(r)))
        chosen.in_flight += 1
        return chosen

    @staticmethod
    def release(replica: Replica) -> None:
        replica.in_flight -= 1

    def failed(self, replica: Replica) -> None:
        replica.failures += 1
        replica.skip_until = time.monotonic() + self.cooldown

    def succeeded(self, replica: Replica) -> None:
        replica.failures = 0
        replica.skip_until = 0.0


@dataclass
class RequestLog:
    """What the last call did, observable so tests need not time anything: bodies sent, retry delays."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    retry_delays: list[float] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)


@dataclass(eq=False)
class Transport:
    """HTTP for one call of the model (one turn): a client, the replica it sticks to, the retry policy.

    A turn sticks to one replica (its continuation requests then hit that server's prefix cache) until the
    replica fails; then the next healthy one takes over.
    """

    client: httpx.AsyncClient
    replicas: Replicas
    policy: HttpPolicy
    log: RequestLog
    model_name: str | None
    replica: Replica = field(init=False)

    def __post_init__(self) -> None:
        self.replica = self.replicas.acquire()

    def close(self) -> None:
        """The turn is over: its replica has one turn less in flight."""
        self.replicas.release(self.replica)

    def _switch(self) -> None:
        """Move to another replica (the current one just failed)."""
        old = self.replica
        self.replica = self.replicas.acquire(avoid=old)
        self.replicas.release(old)

    @property
    def base_url(self) -> str:
        return self.replica.url

    # -- non-streaming ---------------------------------------------------------------------------------------
    async def send(self, method: str, path: str, body: dict[str, Any] | None) -> httpx.Response:
        """A non-streaming request with the retry policy."""
        attempt = 0
        while True:
            url = self.replica.url + path
            try:
                response = await self.client.request(method, url, json=body)
            except httpx.TransportError as exc:
                attempt = await self._retry_or_raise(attempt, None, exc)
                continue
            if response.status_code >= 400:
                if response.status_code in RETRY_STATUSES:
                    attempt = await self._retry_or_raise(attempt, response, None)
                    continue
                raise self.http_error(method, path, response.status_code, response.text)
            self.replicas.succeeded(self.replica)
            return response

    # -- streaming -------------------------------------------------------------------------------------------
    async def events(self, path: str, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """Parsed `data:` payloads of one streamed request, with retries until the first event arrives."""
        attempt = 0
        self.log.requests.append(body)
        while True:
            got_event = False
            url = self.replica.url + path
            self.log.urls.append(url)
            try:
                async with contextlib.aclosing(self._stream(url, path, body)) as stream:
                    async for event in stream:
                        got_event = True
                        yield event
                self.replicas.succeeded(self.replica)
                return
            except _Retry as retry:
                attempt = await self._retry_or_raise(attempt, retry.response, retry.cause)
            except (httpx.TransportError, _Idle, _Deadline) as exc:
                what = self._describe_stall(exc)
                if got_event:
                    self.replicas.failed(self.replica)
                    raise errors.ModelStreamError(
                        f"the stream from POST {url} broke off: {what}", retryable=True
                    ) from exc
                attempt = await self._retry_or_raise(attempt, None, exc)

    def _describe_stall(self, exc: BaseException) -> str:
        if isinstance(exc, _Idle):
            return f"no event for {self.policy.idle_timeout:g} s (idle_timeout) although the connection stayed open"
        if isinstance(exc, _Deadline):
            return f"the request took longer than {self.policy.deadline:g} s (deadline)"
        return describe_error(exc)

    async def _stream(
        self, url: str, path: str, body: dict[str, Any]
    ) -> AsyncGenerator[dict[str, Any], None]:
        endpoint = self.replica.endpoint(path)
        async with self.client.stream("POST", endpoint, json=body, headers=_SSE) as response:
            if response.status_code >= 400:
                await response.aread()
                if response.status_code in RETRY_STATUSES:
                    raise _Retry(response, None)
                raise self.http_error("POST", path, response.status_code, response.text)
            done = False
            chunks = response.aiter_text().__aiter__()
            lines = _Lines()
            clock = _Clock(self.policy)
            while (line := await lines.next(chunks, clock)) is not None:
                if not line or line.startswith((":", "event:", "id:", "retry:")):
                    continue  # keep-alive comments and SSE fields: not progress
                clock.progress()
                event = _parse_event(line, url)
                if event is None:  # [DONE]
                    done = True
                    await _drain(chunks)
                    break
                # A usage event may still follow the finish reason: read on to the end.
                if any(c.get("finish_reason") for c in event.get("choices") or () if isinstance(c, dict)):
                    done = True
                yield event
            if not done:
                raise errors.ModelStreamError(
                    f"the stream from POST {url} ended before its end marker (cut off by the server "
                    "or the network)",
                    retryable=True,
                )

    # -- failures --------------------------------------------------------------------------------------------
    async def _retry_or_raise(
        self, attempt: int, response: httpx.Response | None, exc: BaseException | None
    ) -> int:
        what = f"HTTP {response.status_code}" if response is not None else describe_error(exc or Exception())
        self.replicas.failed(self.replica)
        if attempt >= self.policy.max_retries:
            detail = ""
            if response is not None and (response.is_stream_consumed or not response.is_closed):
                detail = excerpt(response.text)
            where = self.replica.url if len(self.replicas.replicas) == 1 else "every replica"
            raise errors.ModelUnavailableError(
                f"{where} failed {attempt + 1} times (last: {what}{'; ' + detail if detail else ''}); "
                "is the server up and not overloaded?"
            ) from exc
        retry_after = _retry_after(response.headers.get("retry-after")) if response is not None else None
        delay = self.policy.delay(attempt, retry_after)
        self.log.retry_delays.append(delay)
        await asyncio.sleep(delay)
        self._switch()
        return attempt + 1

    def http_error(self, method: str, path: str, status: int, text: str) -> errors.ModelError:
        detail = error_detail(text)
        where = f"{method} {self.replica.url}{path}"
        if status in (401, 403):
            return errors.ModelAuthenticationError(
                f"{where} refused the credentials (HTTP {status}: {detail}); set the API key with api_key=... "
                f"or one of the environment variables {', '.join(API_KEY_ENVS)}"
            )
        if status == 404:
            return errors.ModelConfigurationError(
                f"{where} does not exist (HTTP 404: {detail}); base_url must be the API root ending in /v1, "
                f"and the model name ({self.model_name!r}) one the server serves"
            )
        lowered = detail.lower()
        if "context" in lowered and ("length" in lowered or "exceed" in lowered or "window" in lowered):
            return errors.ContextLengthError(
                f"{where}: the prompt does not fit the context ({detail})", status=status, detail=detail
            )
        return errors.ModelRequestError(
            f"{where} rejected the request (HTTP {status}: {detail})", status=status, detail=detail
        )


class _Retry(Exception):
    """A response the policy retries (429, 5xx) before any event arrived."""

    def __init__(self, response: httpx.Response | None, cause: BaseException | None) -> None:
        super().__init__("retry")
        self.response = response
        self.cause = cause


class _Idle(Exception):
    """No event within `idle_timeout`."""


class _Deadline(Exception):
    """The whole request took longer than `deadline`."""


class _Lines:
    """The lines of a server-sent event stream, read chunk by chunk from the response's text.

    A line ends at CR LF, LF or CR, as the SSE format says, and nowhere else: httpx's `aiter_lines` also splits
    at U+2028, U+0085 and other characters `str.splitlines` takes for line ends, which servers that write
    JSON without escaping non-ASCII (llama.cpp, vLLM) may send inside a token's text, cutting an event in
    two. Waiting is bounded per chunk read, not per line: a chunk usually holds several lines (an event and
    its blank line at least), and each bounded wait costs a timer.
    """

    def __init__(self) -> None:
        self._lines: collections.deque[str] = collections.deque()
        self._rest = ""
        self._after_cr = False
        self._ended = False

    def feed(self, text: str) -> None:
        if self._after_cr and text.startswith("\n"):
            text = text[1:]  # the LF of a CR LF split over two chunks
        self._after_cr = text.endswith("\r")
        parts = _LINE_END.split(self._rest + text)
        self._rest = parts.pop()
        self._lines.extend(parts)

    async def next(self, chunks: AsyncIterator[str], clock: _Clock) -> str | None:
        """The next line, reading more of the body as needed; None at its end."""
        while not self._lines:
            if self._ended:
                return None
            # Each wait is bounded on its own, never across a `yield` of the caller: a timeout scope that
            # spanned the consumer's code would cancel the consumer instead of this read.
            try:
                async with asyncio.timeout(clock.wait()):
                    text = await anext(chunks)
            except StopAsyncIteration:
                self._ended = True
                if self._rest:  # a last line without its line end
                    self._lines.append(self._rest)
                    self._rest = ""
                continue
            except TimeoutError as exc:
                raise clock.expired() from exc
            self.feed(text)
        return self._lines.popleft()


_LINE_END = re.compile(r"\r\n|\r|\n")


class _Clock:
    """The idle timeout and the deadline of one streamed request."""

    def __init__(self, policy: HttpPolicy) -> None:
        self.policy = policy
        self.started = time.monotonic()
        self.last = self.started

    def progress(self) -> None:
        self.last = time.monotonic()

    def wait(self) -> float:
        now = time.monotonic()
        limit = self.last + self.policy.idle_timeout - now
        if self.policy.deadline is not None:
            limit = min(limit, self.started + self.policy.deadline - now)
        return max(limit, 0.0)

    def expired(self) -> Exception:
        deadline = self.policy.deadline
        if deadline is not None and time.monotonic() >= self.started + deadline - 0.001:
            return _Deadline()
        return _Idle()


def _parse_event(line: str, url: str) -> dict[str, Any] | None:
    """One `data:` line as an event dict; None for `[DONE]`; `ModelStreamError` for anything else."""
    if not line.startswith("data:"):
        raise errors.ModelStreamError(
            f"POST {url} answered with something other than server-sent events: {excerpt(line)}"
        )
    data = line[5:].strip()
    if data == "[DONE]":
        return None
    try:
        event = json.loads(data)
    except (ValueError, RecursionError) as exc:  # ValueError: also integers past Python's digit limit
        raise errors.ModelStreamError(f"POST {url} sent a malformed event: {excerpt(data)}") from exc
    if not isinstance(event, dict):
        raise errors.ModelStreamError(f"POST {url} sent a malformed event: {excerpt(data)}")
    if "error" in event:
        raise errors.ModelRequestError(
            f"POST {url} failed mid-stream: {error_detail(json.dumps(event))}",
            detail=json.dumps(event["error"]),
        )
    return event


async def _drain(chunks: AsyncIterator[str], limit: float = 1.0) -> None:
    """Read what follows `[DONE]` (the chunked body's end) so that the connection goes back to the pool.

    A response left unread is closed with its connection, and the next request pays a new TCP (or TLS)
    handshake: at high concurrency against a fast server that was most of the client's CPU. A server that
    keeps the stream open after `[DONE]` gets `limit` seconds, then the connection is closed as before.
    """
    with contextlib.suppress(TimeoutError, StopAsyncIteration, httpx.TransportError):
        async with asyncio.timeout(limit):
            async for _ in chunks:
                pass
