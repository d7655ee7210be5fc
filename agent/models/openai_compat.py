"""`OpenAICompatModel`: QwQ-32B behind any OpenAI-compatible server (httpx, async, streaming SSE), and the
`ModelError` family every backend raises.

Two modes:

* `completions` (default): the framework renders the QwQ prompt itself (`prompts.render`) and streams raw text
  from `/v1/completions` (vLLM, SGLang, llama.cpp server, llama-cpp-python's server): exact format control.
  With `constrain` set, tool calls are constrained as in-process: the free stream is watched, and when the
  answer (after `</think>`) opens `<tool_call>` the connection is closed and a continuation request with the
  server's grammar or JSON-schema parameter writes the call; then free text resumes. A thinking budget caps
  the first request's `max_tokens` and, if the reasoning did not close, continues with the closing sentence.
  Continuations resend prompt + text so far, which prefix-caching servers serve from their KV cache.
* `chat`: `/v1/chat/completions` for hosted APIs. Reasoning (`reasoning_content` or `reasoning`), content and
  streamed `tool_calls` deltas are re-serialised into QwQ text (`...</think>\\n\\n` + content +
  `<tool_call>` blocks), so the same parser reads every backend.

Errors the developer must fix (bad URL, key, model name, request) raise at once with what to do; 429, 5xx and
connection failures are retried with exponential backoff (honouring `Retry-After`) until text has started to
flow; a stream that is cut off or is not SSE raises `ModelStreamError`.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import os
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from agent.models._turns import GRAMMAR_CALL_CLOSE as CALL_CLOSE
from agent.models.base import ModelChunk, ModelRequest, Usage
from agent.models.errors import (
    ContextLengthError,
    ModelAuthenticationError,
    ModelConfigurationError,
    ModelError,
    ModelRequestError,
    ModelStreamError,
    ModelUnavailableError,
)
from agent.models.grammar import tool_call_gbnf, tool_call_schema

__all__ = ["OpenAICompatModel"]

THINK_OPEN = "<think>\n"
THINK_CLOSE = "</think>"
CALL_OPEN = "<tool_call>"
RESPONSE_OPEN = "<tool_response>"
RETRY_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504, 529})
API_KEY_ENVS = ("QWQ_AGENT_API_KEY", "OPENAI_API_KEY")

Mode = Literal["completions", "chat"]
# How a server takes a constraint: llama.cpp / llama-cpp-python `grammar` (GBNF), llama.cpp `json_schema`,
# vLLM `guided_json`, or vLLM >= 0.10 `structured_outputs`.
Constrain = Literal["grammar", "json_schema", "guided_json", "structured_outputs"]


# -- the backend -----------------------------------------------------------------------------------------------
@dataclass
class _Turn:
    """Accumulated state of one turn across continuation requests (completions mode)."""

    prompt: str
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    requests: int = 0
    extra: dict[str, object] = field(default_factory=dict)


class OpenAICompatModel:
    """An OpenAI-compatible server as a `Model`.

    `base_url` is the API root (`http://host:port/v1`). `model` is the server's model name; when None the first
    entry of `GET /models` is used. The API key comes from `api_key`, else the first set variable of
    `api_key_env` (default `QWQ_AGENT_API_KEY`, then `OPENAI_API_KEY`); local servers need none.
    `constrain` (completions mode) names the server's constraint parameter; None sends no constraint.
    `reasoning_inline` (chat mode): the server returns the reasoning inside `content`, closed by `</think>`
    (QwQ behind vLLM without a reasoning parser); otherwise it comes in `reasoning_content`/`reasoning`.
    `extra_body` is merged into every request body (server-specific options). The thinking budget applies
    in completions mode only; chat APIs that cap reasoning take their own parameter through `extra_body`.
    Token usage is what the server reports (`stream_options.include_usage`); servers that report none
    (llama-cpp-python's) get the number of streamed pieces as the completion count.
    """

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000/v1",
        model: str | None = None,
        *,
        mode: Mode = "completions",
        api_key: str | None = None,
        api_key_env: str | Sequence[str] = API_KEY_ENVS,
        max_tokens: int = 16384,
        thinking_budget: int | None = None,
        temperature: float = 0.6,
        top_p: float = 0.95,
        top_k: int | None = 40,
        min_p: float | None = 0.0,
        presence_penalty: float = 0.0,
        seed: int | None = None,
        constrain: Constrain | None = None,
        max_string_length: int | None = None,
        reasoning_inline: bool = False,
        timeout: float = 600.0,
        connect_timeout: float = 10.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if mode not in ("completions", "chat"):
            raise ValueError(f"mode must be 'completions' or 'chat'; got {mode!r}")
        if constrain not in (None, "grammar", "json_schema", "guided_json", "structured_outputs"):
            raise ValueError(f"unknown constrain style {constrain!r}")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"base_url must be an http(s) URL such as http://127.0.0.1:8000/v1; got {base_url!r}"
            )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.mode: Mode = mode
        if api_key is None:
            names = [api_key_env] if isinstance(api_key_env, str) else list(api_key_env)
            api_key = next((os.environ[n] for n in names if os.environ.get(n)), None)
        self.api_key = api_key
        self.max_tokens = max_tokens
        self.thinking_budget = thinking_budget
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        self.min_p = min_p
        self.presence_penalty = presence_penalty
        self.seed = seed
        self.constrain: Constrain | None = constrain
        self.max_string_length = max_string_length
        self.reasoning_inline = reasoning_inline
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.extra_body = dict(extra_body or {})
        self.headers = dict(headers or {})
        self.transport = transport
        self.last_requests: list[dict[str, Any]] = []
        # Seconds waited before each retry of the last call: observable, so tests need not time anything.
        self.retry_delays: list[float] = []

    def __repr__(self) -> str:
        return f"OpenAICompatModel(base_url={self.base_url!r}, model={self.model!r}, mode={self.mode!r})"

    # -- the Model protocol ----------------------------------------------------------------------------------
    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        headers = {"Accept": "text/event-stream", **self.headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        async with httpx.AsyncClient(
            timeout=self.timeout, headers=headers, transport=self.transport
        ) as client:
            if self.model is None:
                self.model = await self._discover_model(client)
            self.last_requests = []
            self.retry_delays = []
            if self.mode == "chat":
                async for chunk in self._chat(client, request):
                    yield chunk
            else:
                async for chunk in self._completions(client, request):
                    yield chunk

    async def list_models(self) -> list[str]:
        """The model names the server serves (`GET /models`)."""
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        async with httpx.AsyncClient(
            timeout=self.timeout, headers=headers, transport=self.transport
        ) as client:
            response = await self._send(client, "GET", "/models", None)
            try:
                data = response.json()
                return [str(m["id"]) for m in data.get("data", [])]
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ModelStreamError(
                    f"GET {self.base_url}/models did not return a model list: {exc}"
                ) from exc

    async def _discover_model(self, client: httpx.AsyncClient) -> str:
        response = await self._send(client, "GET", "/models", None)
        try:
            models = [str(m["id"]) for m in response.json().get("data", [])]
        except (ValueError, KeyError, TypeError, AttributeError):
            models = []
        if not models:
            raise ModelConfigurationError(
                f"{self.base_url}/models lists no model; pass model=NAME (--model-name) explicitly"
            )
        return models[0]

    # -- completions mode ------------------------------------------------------------------------------------
    def _sampling(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "temperature": self.temperature, "top_p": self.top_p}
        if self.top_k is not None:
            body["top_k"] = self.top_k
        if self.min_p is not None:
            body["min_p"] = self.min_p
        if self.presence_penalty:
            body["presence_penalty"] = self.presence_penalty
        if self.seed is not None:
            body["seed"] = self.seed
        return body

    def _constraint(self, tools: Sequence[Any], only: str | None) -> tuple[dict[str, Any], str]:
        """Body fields constraining one call, and the text the prompt must end with before it."""
        style = self.constrain
        if style == "grammar":
            grammar = tool_call_gbnf(tools, only=only, max_string_length=self.max_string_length)
            return {"grammar": grammar}, ""
        chosen = [t for t in tools if only is None or getattr(t, "name", None) == only]
        schema = tool_call_schema(chosen)
        if style == "json_schema":
            return {"json_schema": schema}, "\n"
        if style == "guided_json":
            return {"guided_json": schema}, "\n"
        return {"structured_outputs": {"json": schema}}, "\n"

    async def _completions(
        self, client: httpx.AsyncClient, request: ModelRequest
    ) -> AsyncIterator[ModelChunk]:
        import prompts

        prompt = prompts.render(request.messages, list(request.tools), keep_thinking=request.keep_thinking)
        turn = _Turn(prompt=prompt)
        max_tokens = request.max_tokens or self.max_tokens
        budget = request.thinking_budget if request.thinking_budget is not None else self.thinking_budget
        choice = request.tool_choice if request.tools else "none"
        forced = choice not in ("auto", "none")
        constrained = self.constrain is not None and bool(request.tools) and choice != "none"
        only = choice if forced and choice != "required" else None
        opened = prompt.endswith(THINK_OPEN)
        answer_start: int | None = None if opened else 0  # where the visible answer begins in turn.text
        finish = "length"
        while True:
            left = max_tokens - turn.completion_tokens
            if left <= 0:
                break
            cap = left
            if answer_start is None and budget is not None:
                cap = min(left, budget - turn.completion_tokens)
                if cap <= 0:
                    closing = self._closing(turn.text)
                    turn.text += closing
                    answer_start = len(turn.text)
                    yield ModelChunk(text=closing)
                    if forced:
                        yield ModelChunk(text=self._open_call(turn))
                        if constrained:
                            call = await self._constrained_call(client, prompt, turn, request.tools, only)
                            turn.text += call
                            yield ModelChunk(text=call)
                    continue
            body = {**self._sampling(), "prompt": prompt + turn.text, "max_tokens": cap, "stream": True}
            body["stop"] = [RESPONSE_OPEN, "<|im_end|>", "<|endoftext|>"]
            body.update(self.extra_body)
            # Watch the stream and close it where the answer opens a call (to constrain that call) or, for a
            # forced tool_choice, where the reasoning closes (to open the call ourselves).
            cut: str | None = None
            seg_finish: str | None = None
            base = len(turn.text)
            full = turn.text
            async for kind, value in self._sse_text(client, "/completions", body, turn):
                if kind == "finish":
                    seg_finish = value
                    continue
                piece_start = len(full)
                full += value
                stop_at = -1
                if answer_start is None:
                    at = full.find(THINK_CLOSE, max(base - len(THINK_CLOSE), 0))
                    if at >= 0:
                        answer_start = at + len(THINK_CLOSE)
                        if forced:
                            stop_at, cut = answer_start, "think"
                if stop_at < 0 and answer_start is not None and constrained:
                    at = full.find(CALL_OPEN, max(answer_start, base - len(CALL_OPEN) + 1))
                    if at >= 0:
                        stop_at, cut = at + len(CALL_OPEN), "call"
                if stop_at >= 0:
                    full = full[:stop_at]
                    if len(full) > piece_start:
                        yield ModelChunk(text=full[piece_start:])
                    break
                yield ModelChunk(text=value)
            turn.text = full
            if cut == "think":
                yield ModelChunk(text=self._open_call(turn))
                cut = "call" if constrained else None
                if cut is None:
                    continue
            if cut == "call":
                call = await self._constrained_call(client, prompt, turn, request.tools, only)
                turn.text += call
                yield ModelChunk(text=call)
                continue
            if (
                seg_finish == "length"
                and answer_start is None
                and budget is not None
                and budget <= turn.completion_tokens < max_tokens
            ):
                continue  # the budget ran out inside the reasoning: the next round closes it
            finish = "length" if seg_finish == "length" else "stop"
            if seg_finish == "stop" and self._stopped_at_response(turn):
                finish = "tool_response"
            break
        yield ModelChunk(
            usage=Usage(
                prompt_tokens=turn.prompt_tokens,
                completion_tokens=turn.completion_tokens,
                cached_tokens=turn.cached_tokens,
            ),
            finish_reason=finish,
            extra={"requests": turn.requests},
        )

    @staticmethod
    def _open_call(turn: _Turn) -> str:
        opening = ("" if turn.text.endswith("\n\n") else "\n\n") + CALL_OPEN
        turn.text += opening
        return opening

    @staticmethod
    def _stopped_at_response(turn: _Turn) -> bool:
        # Servers drop the matched stop string; vLLM names it in `stop_reason`, others do not say.
        return turn.extra.get("stop_reason") == RESPONSE_OPEN

    def _closing(self, text: str) -> str:
        import prompts

        sentence = prompts.render_note("thinking_budget").strip()
        lead = "" if text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        return f"{lead}{sentence}\n{THINK_CLOSE}\n\n"

    async def _constrained_call(
        self, client: httpx.AsyncClient, prompt: str, turn: _Turn, tools: Sequence[Any], only: str | None
    ) -> str:
        fields, lead = self._constraint(tools, only)
        body = {
            **self._sampling(),
            "prompt": prompt + turn.text + lead,
            "max_tokens": max(1, self.max_tokens - turn.completion_tokens),
            "stream": True,
            **fields,
        }
        body.update(self.extra_body)
        text = ""
        async for kind, value in self._sse_text(client, "/completions", body, turn):
            if kind == "text":
                text += value
        if lead:  # a schema constraint writes only the JSON; the frame is ours
            text = lead + text.strip() + CALL_CLOSE
        return text

    # -- chat mode -------------------------------------------------------------------------------------------
    def _chat_messages(self, request: ModelRequest) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, message in enumerate(request.messages):
            data = message.model_dump() if hasattr(message, "model_dump") else dict(message)
            role = data.get("role")
            if role == "assistant":
                item: dict[str, Any] = {"role": "assistant", "content": data.get("content") or ""}
                calls = data.get("tool_calls") or []
                if calls:
                    item["tool_calls"] = [
                        {
                            "id": c.get("id") or f"call_{i}_{j}",
                            "type": "function",
                            "function": {
                                "name": c["name"],
                                "arguments": json.dumps(c.get("arguments") or {}, ensure_ascii=False),
                            },
                        }
                        for j, c in enumerate(calls)
                    ]
                out.append(item)
            elif role == "tool":
                item = {"role": "tool", "content": data.get("content", "")}
                call_id = data.get("tool_call_id") or self._call_id_for(
                    out, len([m for m in out if m["role"] == "tool"])
                )
                item["tool_call_id"] = call_id
                if data.get("name"):
                    item["name"] = data["name"]
                out.append(item)
            else:
                out.append({"role": role, "content": data.get("content", "")})
        return out

    @staticmethod
    def _call_id_for(out: list[dict[str, Any]], _index: int) -> str:
        # Results follow the order of the calls: pair this result with the first call not yet answered.
        answered: set[object] = set()
        pending: list[str] = []
        for m in out:
            if m["role"] == "assistant":
                pending = [c["id"] for c in m.get("tool_calls", [])]
                answered = set()
            elif m["role"] == "tool":
                answered.add(m.get("tool_call_id"))
        for call_id in pending:
            if call_id not in answered:
                return call_id
        return f"call_{len(out)}"

    async def _chat(self, client: httpx.AsyncClient, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        body: dict[str, Any] = {
            **self._sampling(),
            "messages": self._chat_messages(request),
            "max_tokens": request.max_tokens or self.max_tokens,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.tools:
            body["tools"] = [_tool_dict(t) for t in request.tools]
            choice = request.tool_choice
            body["tool_choice"] = (
                choice
                if choice in ("auto", "none", "required")
                else {"type": "function", "function": {"name": choice}}
            )
        body.update(self.extra_body)
        turn = _Turn(prompt="")
        closed = False
        started_inline = False
        calls: dict[int, dict[str, str]] = {}
        finish = "stop"

        def close_reasoning() -> str:
            nonlocal closed
            if closed:
                return ""
            closed = True
            return ("" if turn.text.endswith("\n") or not turn.text else "\n") + THINK_CLOSE + "\n\n"

        def serialise(index: int) -> str:
            call = calls.pop(index)
            try:
                args: Any = json.loads(call["arguments"]) if call["arguments"].strip() else {}
                args_text = json.dumps(args, ensure_ascii=False, separators=(", ", ": "))
            except json.JSONDecodeError:
                args_text = call["arguments"]  # left as sent: the parser reports it to the model
            name = json.dumps(call["name"], ensure_ascii=False)
            return f'\n{CALL_OPEN}\n{{"name": {name}, "arguments": {args_text}}}{CALL_CLOSE}'

        async for kind, value, _ in self._sse_chat(client, body, turn):
            out = ""
            if kind == "reasoning" and not self.reasoning_inline:
                out = value if not closed else ""
            elif kind == "content":
                if self.reasoning_inline:
                    if not started_inline:
                        value = value.lstrip()
                        value = value.removeprefix("<think>").lstrip("\n")
                        started_inline = bool(value)
                    out = value
                    if THINK_CLOSE in turn.text + value:
                        closed = True
                else:
                    out = close_reasoning() + value
            elif kind == "tool_delta":
                delta = json.loads(value)
                index = int(delta.get("index", 0))
                for done in [i for i in calls if i < index]:
                    out += serialise(done)
                entry = calls.setdefault(index, {"name": "", "arguments": ""})
                fn = delta.get("function") or {}
                entry["name"] += fn.get("name") or ""
                entry["arguments"] += fn.get("arguments") or ""
                if not closed and not self.reasoning_inline:
                    out = close_reasoning() + out
            elif kind == "finish":
                finish = "length" if value == "length" else "stop"
            if out:
                turn.text += out
                yield ModelChunk(text=out)
        tail = ""
        if calls and not closed and not self.reasoning_inline:
            tail += close_reasoning()
        for index in sorted(calls):
            tail += serialise(index)
        if not closed and not self.reasoning_inline and finish != "length":
            tail += close_reasoning()
        if tail:
            turn.text += tail
            yield ModelChunk(text=tail)
        yield ModelChunk(
            usage=Usage(
                prompt_tokens=turn.prompt_tokens,
                completion_tokens=turn.completion_tokens,
                cached_tokens=turn.cached_tokens,
            ),
            finish_reason=finish,
            extra={"requests": turn.requests},
        )

    # -- HTTP and SSE ----------------------------------------------------------------------------------------
    async def _send(
        self, client: httpx.AsyncClient, method: str, path: str, body: dict[str, Any] | None
    ) -> httpx.Response:
        """A non-streaming request with the retry policy."""
        attempt = 0
        while True:
            try:
                response = await client.request(method, self.base_url + path, json=body)
            except httpx.TransportError as exc:
                attempt = await self._retry_or_raise(attempt, None, exc)
                continue
            if response.status_code >= 400:
                if response.status_code in RETRY_STATUSES:
                    attempt = await self._retry_or_raise(attempt, response, None)
                    continue
                raise self._http_error(method, path, response.status_code, response.text)
            return response

    async def _retry_or_raise(
        self, attempt: int, response: httpx.Response | None, exc: BaseException | None
    ) -> int:
        what = f"HTTP {response.status_code}" if response is not None else f"{type(exc).__name__}: {exc}"
        if attempt >= self.max_retries:
            detail = ""
            if response is not None:
                detail = _excerpt(
                    response.text if response.is_stream_consumed or not response.is_closed else ""
                )
            raise ModelUnavailableError(
                f"{self.base_url} failed {attempt + 1} times (last: {what}{'; ' + detail if detail else ''}); "
                "is the server up and not overloaded?"
            ) from exc
        delay = min(self.max_backoff, self.backoff * (2**attempt)) * (0.75 + random.random() / 2)
        if response is not None:
            retry_after = _retry_after(response.headers.get("retry-after"))
            if retry_after is not None:
                delay = min(max(retry_after, 0.0), max(self.max_backoff, 0.0) * 4)
        self.retry_delays.append(delay)
        await asyncio.sleep(delay)
        return attempt + 1

    def _http_error(self, method: str, path: str, status: int, text: str) -> ModelError:
        detail = _error_detail(text)
        where = f"{method} {self.base_url}{path}"
        if status in (401, 403):
            return ModelAuthenticationError(
                f"{where} refused the credentials (HTTP {status}: {detail}); set the API key with api_key=... "
                f"or one of the environment variables {', '.join(API_KEY_ENVS)}"
            )
        if status == 404:
            return ModelConfigurationError(
                f"{where} does not exist (HTTP 404: {detail}); base_url must be the API root ending in /v1, "
                f"and the model name ({self.model!r}) one the server serves"
            )
        lowered = detail.lower()
        if "context" in lowered and ("length" in lowered or "exceed" in lowered or "window" in lowered):
            return ContextLengthError(
                f"{where}: the prompt does not fit the context ({detail})", status=status, detail=detail
            )
        return ModelRequestError(
            f"{where} rejected the request (HTTP {status}: {detail})", status=status, detail=detail
        )

    async def _events(
        self, client: httpx.AsyncClient, path: str, body: dict[str, Any], turn: _Turn
    ) -> AsyncGenerator[dict[str, Any], None]:
        """Parsed `data:` payloads of one streamed request, with retries until the first event arrives."""
        attempt = 0
        self.last_requests.append(body)
        turn.requests += 1
        url = self.base_url + path
        while True:
            got_event = False
            try:
                async with client.stream("POST", url, json=body) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        if response.status_code in RETRY_STATUSES:
                            attempt = await self._retry_or_raise(attempt, response, None)
                            continue
                        raise self._http_error("POST", path, response.status_code, response.text)
                    done = False
                    async for line in response.aiter_lines():
                        if not line or line.startswith(":"):
                            continue
                        if line.startswith(("event:", "id:", "retry:")):
                            continue
                        if not line.startswith("data:"):
                            raise ModelStreamError(
                                f"POST {url} answered with something other than server-sent events: {_excerpt(line)}"
                            )
                        data = line[5:].strip()
                        if data == "[DONE]":
                            done = True
                            break
                        try:
                            event = json.loads(data)
                        except json.JSONDecodeError as exc:
                            raise ModelStreamError(
                                f"POST {url} sent a malformed event: {_excerpt(data)}"
                            ) from exc
                        if not isinstance(event, dict):
                            raise ModelStreamError(f"POST {url} sent a malformed event: {_excerpt(data)}")
                        if "error" in event:
                            raise ModelRequestError(
                                f"POST {url} failed mid-stream: {_error_detail(json.dumps(event))}",
                                detail=json.dumps(event["error"]),
                            )
                        got_event = True
                        yield event
                        if any(
                            c.get("finish_reason") for c in event.get("choices") or [] if isinstance(c, dict)
                        ):
                            done = True
                    if not done:
                        raise ModelStreamError(
                            f"the stream from POST {url} ended before its end marker (cut off by the server "
                            "or the network)"
                        )
                    return
            except httpx.TransportError as exc:
                if got_event:
                    raise ModelStreamError(
                        f"the stream from POST {url} broke off: {type(exc).__name__}: {exc}"
                    ) from exc
                attempt = await self._retry_or_raise(attempt, None, exc)

    @staticmethod
    def _usage(event: Mapping[str, Any], turn: _Turn, counted: int) -> bool:
        usage = event.get("usage")
        if not isinstance(usage, Mapping):
            return False
        if not turn.prompt_tokens:
            turn.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        details = usage.get("prompt_tokens_details")
        if isinstance(details, Mapping) and not turn.cached_tokens:
            turn.cached_tokens = int(details.get("cached_tokens") or 0)
        turn.completion_tokens += int(usage.get("completion_tokens") or 0) - counted
        return True

    async def _sse_text(
        self, client: httpx.AsyncClient, path: str, body: dict[str, Any], turn: _Turn
    ) -> AsyncIterator[tuple[str, str]]:
        """("text", piece) / ("finish", reason) of a completions stream; counts tokens into `turn`."""
        counted = 0
        events = self._events(client, path, body, turn)
        try:
            async for event in events:
                for choice in event.get("choices") or []:
                    text = choice.get("text")
                    if text:
                        counted += 1
                        turn.completion_tokens += 1
                        yield "text", str(text)
                    if choice.get("stop_reason") is not None:
                        turn.extra["stop_reason"] = choice["stop_reason"]
                    if choice.get("finish_reason"):
                        yield "finish", str(choice["finish_reason"])
                if self._usage(event, turn, counted):
                    counted = 0
        finally:
            await events.aclose()

    async def _sse_chat(
        self, client: httpx.AsyncClient, body: dict[str, Any], turn: _Turn
    ) -> AsyncIterator[tuple[str, str, None]]:
        """("reasoning" | "content" | "tool_delta" (JSON) | "finish", value) of a chat stream."""
        counted = 0
        events = self._events(client, "/chat/completions", body, turn)
        try:
            async for event in events:
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") or {}
                    reasoning = delta.get("reasoning_content") or delta.get("reasoning")
                    if reasoning:
                        counted += 1
                        turn.completion_tokens += 1
                        yield "reasoning", str(reasoning), None
                    if delta.get("content"):
                        counted += 1
                        turn.completion_tokens += 1
                        yield "content", str(delta["content"]), None
                    for call in delta.get("tool_calls") or []:
                        counted += 1
                        turn.completion_tokens += 1
                        yield "tool_delta", json.dumps(call), None
                    if choice.get("finish_reason"):
                        yield "finish", str(choice["finish_reason"]), None
                if self._usage(event, turn, counted):
                    counted = 0
        finally:
            await events.aclose()


def _tool_dict(tool: Any) -> dict[str, Any]:
    if hasattr(tool, "to_openai"):
        data: dict[str, Any] = tool.to_openai()
        return data
    return dict(tool)


def _excerpt(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def _error_detail(text: str) -> str:
    """The server's own error message from an OpenAI-style error body, else an excerpt of the body."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return _excerpt(text or "(empty body)")
    if isinstance(data, Mapping):
        err = data.get("error", data)
        if isinstance(err, Mapping):
            message = err.get("message") or err.get("detail")
            if message:
                return _excerpt(str(message))
        elif isinstance(err, str):
            return _excerpt(err)
        if "detail" in data:
            return _excerpt(str(data["detail"]))
    return _excerpt(text)


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
