"""`OpenAICompatModel`: QwQ-32B (or another model) behind OpenAI-compatible servers, over httpx.

Two modes:

* `completions` (default): the prompt is rendered here and raw text streams from `/v1/completions` (vLLM,
  SGLang, llama.cpp's server, llama-cpp-python's server): exact format control, constrained calls, thinking
  budgets. See `_completions`.
* `chat`: `/v1/chat/completions` for hosted APIs, with the streamed reasoning, content and tool-call deltas
  written back in QwQ's format so that one parser serves every backend. See `_chat`.

Several replicas of one model may be given (`base_urls`); requests go to the one with the fewest in flight,
and a failing one is skipped for a while. Retries, timeouts and error mapping: see `_http`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import ssl
import urllib.request
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import fields
from typing import Any, Literal

import httpx

from agent.models._chat import ChatDecoder, TurnCounts, chat_messages, chat_stream, tool_dict
from agent.models._completions import CompletionsSettings, CompletionsTurn, Constrain
from agent.models._http import API_KEY_ENVS, HttpPolicy, Replicas, RequestLog, Transport
from agent.models._pool import KeepAliveTransport
from agent.models._turns import ToolChoice, effective_thinking_budget
from agent.models.base import ModelChunk, ModelRequest
from agent.models.chat_formats import ChatFormat, ChatFormatChoice, opens_thinking, resolve_chat_format
from agent.models.errors import ModelConfigurationError, ModelStreamError
from agent.models.sampling import SamplingConfig

__all__ = ["Constrain", "OpenAICompatModel"]

Mode = Literal["completions", "chat"]
_SAMPLING_FIELDS = frozenset(f.name for f in fields(SamplingConfig))
_POLICY_FIELDS = frozenset(f.name for f in fields(HttpPolicy))


class OpenAICompatModel:
    """One model served by one or more OpenAI-compatible servers, as a `Model`.

    `base_url` is the API root (`http://host:port/v1`); `base_urls` lists several replicas of the same model.
    `model` is the server's model name; when None the first entry of `GET /models` is used. The API key comes
    from `api_key`, else the first set variable of `api_key_env` (default `QWQ_AGENT_API_KEY`, then
    `OPENAI_API_KEY`); local servers need none.

    Sampling: `sampling=SamplingConfig(...)` or its fields as keywords (`temperature=0.7`); `seed` as given.
    Timeouts and retries: `HttpPolicy`'s fields as keywords — `read_timeout` (no bytes at all),
    `idle_timeout` (no event, even while keep-alive comments arrive), `deadline` (one whole request),
    `connect_timeout`, `max_retries`, `backoff`, `max_backoff`, `max_retry_after` (the most a server's
    `Retry-After` is honoured), `cooldown` (how long a failed replica is skipped). `timeout` is accepted as
    the read timeout, for compatibility.

    Completions mode: `chat_format` "auto" renders QwQ-32B's format unless the server publishes another
    template (llama.cpp's `/props`), "qwq" always QwQ's, "template" the server's (or `chat_template`'s);
    `constrain` names the server's constraint parameter (None sends none); the thinking budget applies.
    Chat mode: `reasoning_inline` says the server returns the reasoning inside `content`, closed by
    `</think>` (QwQ behind vLLM without a reasoning parser). `extra_body` is merged into every request body.
    Token usage is what the server reports (`stream_options.include_usage`); servers that report none get
    the number of streamed pieces as the completion count.

    Context (for `agent.context`): `context_window()` is `n_ctx` when given, else what the server reports
    (llama.cpp's `/props`, vLLM's `max_model_len` in `/models`); `count_prompt_tokens()` renders the prompt
    and asks the server's `/tokenize` (llama.cpp, vLLM) or `/extras/tokenize` (llama-cpp-python) — None in
    chat mode or where neither exists, and the loop then estimates.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str | None = None,
        *,
        base_urls: Sequence[str] | None = None,
        mode: Mode = "completions",
        api_key: str | None = None,
        api_key_env: str | Sequence[str] = API_KEY_ENVS,
        max_tokens: int = 16384,
        n_ctx: int | None = None,
        thinking_budget: int | None = None,
        sampling: SamplingConfig | None = None,
        seed: int | None = None,
        chat_format: ChatFormatChoice = "auto",
        chat_template: str | None = None,
        constrain: Constrain | None = None,
        max_string_length: int | None = None,
        reasoning_inline: bool = False,
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Any,
    ) -> None:
        if mode not in ("completions", "chat"):
            raise ValueError(f"mode must be 'completions' or 'chat'; got {mode!r}")
        if constrain not in (None, "grammar", "json_schema", "guided_json", "structured_outputs"):
            raise ValueError(f"unknown constrain style {constrain!r}")
        if chat_format not in ("auto", "qwq", "template"):
            raise ValueError(f"chat_format must be 'auto', 'qwq' or 'template'; got {chat_format!r}")
        urls = list(base_urls) if base_urls else [base_url]
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(
                    f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1; got {url!r}"
                )
        if "timeout" in options:
            options["read_timeout"] = options.pop("timeout")
        unknown = sorted(set(options) - _SAMPLING_FIELDS - _POLICY_FIELDS)
        if unknown:
            raise TypeError(f"OpenAICompatModel got unexpected keyword arguments: {', '.join(unknown)}")
        self.sampling = (sampling or SamplingConfig()).with_(
            **{k: v for k, v in options.items() if k in _SAMPLING_FIELDS}
        )
        self.policy = HttpPolicy(**{k: v for k, v in options.items() if k in _POLICY_FIELDS})
        self.replicas = Replicas(urls, self.policy.cooldown)
        self.model = model
        self.mode: Mode = mode
        if api_key is None:
            names = [api_key_env] if isinstance(api_key_env, str) else list(api_key_env)
            api_key = next((os.environ[n] for n in names if os.environ.get(n)), None)
        self.api_key = api_key
        self.max_tokens = max_tokens
        self.n_ctx = n_ctx
        self.thinking_budget = thinking_budget
        self.seed = seed
        self.chat_format_choice: ChatFormatChoice = chat_format
        self.chat_template = chat_template
        self.constrain: Constrain | None = constrain
        self.max_string_length = max_string_length
        self.reasoning_inline = reasoning_inline
        self.extra_body = dict(extra_body or {})
        self.headers = dict(headers or {})
        self.transport = transport
        self.log = RequestLog()
        self._window: int | None = None
        self._window_asked = False
        self._tokenize_path: str | None = None  # the endpoint that answered; "" when none does
        self._format: ChatFormat | None = None
        self._format_lock = asyncio.Lock()
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        urls = [r.url for r in self.replicas.replicas]
        where = urls[0] if len(urls) == 1 else urls
        return f"OpenAICompatModel(base_url={where!r}, model={self.model!r}, mode={self.mode!r})"

    @property
    def base_url(self) -> str:
        """The first replica's API root."""
        return self.replicas.replicas[0].url

    @property
    def last_requests(self) -> list[dict[str, Any]]:
        """The request bodies of the last call (tests and debugging read them)."""
        return self.log.requests

    @property
    def retry_delays(self) -> list[float]:
        """Seconds waited before each retry of the last call: observable, so tests need not time anything."""
        return self.log.retry_delays

    # -- the Model protocol ----------------------------------------------------------------------------------
    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        self.log = RequestLog()
        async with self._transport() as transport:
            if self.model is None:
                self.model = await self._discover_model(transport)
                transport.model_name = self.model
            if self.mode == "chat":
                async with contextlib.aclosing(self._chat(transport, request)) as chunks:
                    async for chunk in chunks:
                        yield chunk
                return
            fmt = await self._chat_format(transport)
            prompt = fmt.render(request.messages, request.tools, keep_thinking=request.keep_thinking)
            turn = CompletionsTurn(
                transport,
                prompt,
                opens_thinking(prompt),
                request.tools,
                ToolChoice.of(request.tool_choice),
                CompletionsSettings(
                    sampling=self._sampling(),
                    extra_body=self.extra_body,
                    max_tokens=request.max_tokens or self.max_tokens,
                    thinking_budget=effective_thinking_budget(request.thinking_budget, self.thinking_budget),
                    constrain=self.constrain,
                    max_string_length=self.max_string_length,
                ),
            )
            # aclosing: a stream closed early must close its HTTP response now, not at garbage collection
            async with contextlib.aclosing(turn.run()) as chunks:
                async for chunk in chunks:
                    yield chunk

    async def list_models(self) -> list[str]:
        """The model names the server serves (`GET /models`)."""
        async with self._transport() as transport:
            response = await transport.send("GET", "/models", None)
            try:
                data = response.json()
                return [str(m["id"]) for m in data.get("data", [])]
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
                raise ModelStreamError(
                    f"GET {transport.base_url}/models did not return a model list: {exc}"
                ) from exc

    async def turn_opens_thinking(self) -> bool | None:
        """Completions mode: whether the prompt it renders leaves the model inside its reasoning (asks the
        server for its template once). Chat mode: None, since the server renders the prompt."""
        if self.mode == "chat":
            return None
        async with self._transport() as transport:
            fmt = await self._chat_format(transport)
        return fmt.opens_thinking()

    async def render_prompt(
        self, messages: Sequence[Any], tools: Sequence[Any] | None = None, **kw: Any
    ) -> str:
        """Exactly the prompt completions mode sends for `messages` and `tools` (asks the server once)."""
        async with self._transport() as transport:
            fmt = await self._chat_format(transport)
        return fmt.render(messages, list(tools or ()), keep_thinking=kw.get("keep_thinking", "none"))

    # -- CountsTokens: what agent.context asks before each request ------------------------------------------
    async def context_window(self) -> int | None:
        """`n_ctx` when given, else the server's context as it reports it (asked once), else None."""
        if self.n_ctx is not None:
            return self.n_ctx
        if not self._window_asked:
            self._window_asked = True
            async with self._transport() as transport:
                self._window = await self._server_window(transport)
        return self._window

    async def count_prompt_tokens(self, request: ModelRequest) -> int | None:
        """The prompt's tokens as the server counts them (completions mode), or None when it cannot."""
        if self.mode == "chat" or self._tokenize_path == "":
            return None
        async with self._transport() as transport:
            if self.model is None:
                self.model = await self._discover_model(transport)
                transport.model_name = self.model
            fmt = await self._chat_format(transport)
            prompt = fmt.render(request.messages, request.tools, keep_thinking=request.keep_thinking)
            return await self._tokenize(transport, prompt)

    async def _server_window(self, transport: Transport) -> int | None:
        root = transport.base_url.removesuffix("/v1")
        props = await _get_json(transport, f"{root}/props")  # llama.cpp's server
        if isinstance(props, dict):
            settings = props.get("default_generation_settings")
            size = settings.get("n_ctx") if isinstance(settings, dict) else props.get("n_ctx")
            if isinstance(size, int) and size > 0:
                return size
        listing = await _get_json(transport, f"{transport.base_url}/models")  # vLLM's max_model_len
        entries = listing.get("data") if isinstance(listing, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            if isinstance(entry, dict) and (self.model is None or entry.get("id") == self.model):
                size = entry.get("max_model_len")
                if isinstance(size, int) and size > 0:
                    return size
        return None

    async def _tokenize(self, transport: Transport, prompt: str) -> int | None:
        """POST the prompt to the first tokenize endpoint that answers; remember which one did."""
        root = transport.base_url.removesuffix("/v1")
        paths = [self._tokenize_path] if self._tokenize_path else ["/tokenize", "/extras/tokenize"]
        # One body for all of them: llama.cpp reads "content", vLLM "prompt", llama-cpp-python "input".
        body: dict[str, Any] = {"model": self.model, "content": prompt, "prompt": prompt, "input": prompt}
        body.update(add_special=False, add_special_tokens=False)
        for path in paths:
            try:
                response = await transport.client.post(f"{root}{path}", json=body)
                data = response.json() if response.status_code == 200 else None
            except httpx.HTTPError:
                return None  # the server is busy or away: estimate this time, ask again next time
            except (ValueError, RecursionError):
                data = None
            count = _token_count(data)
            if count is not None:
                self._tokenize_path = path
                return count
        self._tokenize_path = ""
        return None

    # -- pieces ----------------------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _transport(self, *, streaming: bool = True) -> AsyncIterator[Transport]:
        """The model's client and the replica one call sticks to, released when the call ends."""
        transport = Transport(self._client(), self.replicas, self.policy, self.log, self.model)
        try:
            yield transport
        finally:
            transport.close()

    def _client(self) -> httpx.AsyncClient:
        """One client per event loop, kept across calls: its connection pool and TLS context are reused.

        A client per call cost ~120 ms of CPU each (a TLS context and the CA bundle loaded every turn), which
        dominated the framework's overhead at 64 concurrent runs; the TLS context is also shared by every
        model of the process (`_tls_context`), so a batch that builds a model per task does not pay it either.
        Its transport is `KeepAliveTransport` unless the caller gave one or a proxy is configured
        (`_direct_transport`): httpcore's own pool spends time on every pooled connection per request, which at
        64 runs in flight was most of the client's CPU. httpx
        clients belong to the loop they were first used on, hence one per loop; `aclose()` closes the current
        loop's.
        """
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None or client.is_closed:
            headers = dict(self.headers)
            if self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            timeout = httpx.Timeout(self.policy.read_timeout, connect=self.policy.connect_timeout)
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
            client = httpx.AsyncClient(
                timeout=timeout,
                headers=headers,
                transport=self.transport or _direct_transport(),
                limits=limits,
                verify=_tls_context(),
            )
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the connections this model holds on the running event loop."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    def _sampling(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, **self.sampling.request_fields()}
        if self.seed is not None:
            body["seed"] = self.seed
        return body

    async def _discover_model(self, transport: Transport) -> str:
        response = await transport.send("GET", "/models", None)
        try:
            models = [str(m["id"]) for m in response.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            models = []
        if not models:
            raise ModelConfigurationError(
                f"{transport.base_url}/models lists no model; pass model=NAME (--model-name) explicitly"
            )
        return models[0]

    async def _chat_format(self, transport: Transport) -> ChatFormat:
        """The format completions mode renders: decided once, from the server's template when it has one.

        Concurrent first turns wait for one answer rather than each asking the server.
        """
        if self._format is not None:
            return self._format
        async with self._format_lock:
            if self._format is None:
                self._format = await self._decide_format(transport)
            return self._format

    async def _decide_format(self, transport: Transport) -> ChatFormat:
        template = self.chat_template
        if template is None and self.chat_format_choice != "qwq":
            template = await self._server_template(transport)
        try:
            return resolve_chat_format(self.chat_format_choice, template)
        except ValueError as exc:
            raise ModelConfigurationError(
                f"{exc}; the server at {transport.base_url} publishes no chat template (llama.cpp's /props does): "
                "pass chat_template=... or use chat_format='qwq'"
            ) from exc

    async def _server_template(self, transport: Transport) -> str | None:
        """llama.cpp's server describes itself at /props; others do not say (then: QwQ's format)."""
        root = transport.base_url.removesuffix("/v1")
        try:
            response = await transport.client.get(f"{root}/props")
            if response.status_code != 200:
                return None
            template = response.json().get("chat_template")
        except (httpx.HTTPError, ValueError, AttributeError, RecursionError):
            return None
        return template if isinstance(template, str) and template else None

    # -- chat mode -------------------------------------------------------------------------------------------
    async def _chat(self, transport: Transport, request: ModelRequest) -> AsyncGenerator[ModelChunk, None]:
        body: dict[str, Any] = {
            **self._sampling(),
            "messages": chat_messages(request.messages),
            "max_tokens": request.max_tokens or self.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = [tool_dict(t) for t in request.tools]
            choice = ToolChoice.of(request.tool_choice)
            body["tool_choice"] = (
                str(choice)
                if choice.only is None
                else {"type": "function", "function": {"name": choice.only}}
            )
        body.update(self.extra_body)
        counts = TurnCounts(requests=1)
        decoder = ChatDecoder(reasoning_inline=self.reasoning_inline)
        events = transport.events("/chat/completions", body)
        try:
            async for kind, value in chat_stream(events, counts):
                out = decoder.feed(kind, value)
                if out:
                    yield ModelChunk(text=out)
        finally:
            await events.aclose()
        tail = decoder.tail()
        if tail:
            yield ModelChunk(text=tail)
        yield counts.last_chunk(decoder.finish)


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """The process's one TLS context, as httpx would make it (certifi's CA bundle, `SSL_CERT_FILE` and
    `SSL_CERT_DIR` honoured): building it loads the bundle, about 0.1 s of CPU, and contexts are safe to share."""
    return httpx.create_ssl_context()


def _direct_transport() -> KeepAliveTransport | None:
    """The pool for direct connections, or None (httpx's default transport) when the environment names a proxy.

    httpx sets up proxies from `HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY` and `NO_PROXY` only for clients made
    without a transport of their own, so with a proxy configured the client keeps httpx's transport and
    behaves exactly as before.
    """
    if any(scheme in ("http", "https", "all") for scheme in urllib.request.getproxies()):
        return None
    return KeepAliveTransport(_tls_context())


async def _get_json(transport: Transport, url: str) -> Any:
    """The JSON a GET of `url` returns, or None (not there, not JSON, not reachable)."""
    try:
        response = await transport.client.get(url)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError, RecursionError):
        return None


def _token_count(data: Any) -> int | None:
    """The count in a tokenize answer: vLLM's `count`, else the length of `tokens`."""
    if not isinstance(data, dict):
        return None
    count, tokens = data.get("count"), data.get("tokens")
    if isinstance(count, int):
        return count
    return len(tokens) if isinstance(tokens, list) else None
