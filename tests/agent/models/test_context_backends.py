"""agent.context on the real backends: 100 scripted steps of 3 kB results inside n_ctx=4096.

In-process, the script decides what the model says but every prompt is really tokenized and evaluated by
the tiny GGUF (`ScriptedModel(prefill=...)`): a prompt that did not fit would end the run with
"context_full". Over HTTP, `OpenAICompatModel` talks to a server on 127.0.0.1 that behaves like llama.cpp's
as far as context goes — it reports `n_ctx` in /props, counts with Qwen2's real tokenizer at /tokenize and
refuses a prompt that does not fit with llama.cpp's error — and replays the script; llama-cpp-python's own
server (whose prefill is too slow here for 100 steps) runs a shorter run with `/extras/tokenize`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent import Agent, StopReason
from agent.events import ContextCondensed
from agent.models import LlamaCppModel, OpenAICompatModel, ScriptedModel
from agent.testing import long_run_script, page

pytestmark = [pytest.mark.llama, pytest.mark.slow, pytest.mark.timeout(900)]

N_CTX = 4096
REPLY = 256
TASK = "Read the report, page by page."


async def test_100_steps_in_process_fit_4096_tokens(make_llama: Callable[..., LlamaCppModel]) -> None:
    llama = make_llama(n_ctx=N_CTX)
    model = ScriptedModel(long_run_script(100), prefill=llama)
    agent = Agent(model, [page], max_steps=100, max_tokens_per_step=REPLY)
    run = agent.iter(TASK)
    events = [e async for e in run]
    assert run.result is not None
    assert run.result.stop_reason is StopReason.FINAL_ANSWER, run.result.detail
    assert len(model.requests) == 100
    for request in model.requests:  # exact counts, with the reply's room
        assert request.max_tokens is not None
        assert await llama.count_prompt_tokens(request) + request.max_tokens <= N_CTX
    condensed = [e for e in events if isinstance(e, ContextCondensed)]
    assert {"mask", "digest"} <= {e.strategy for e in condensed}
    # The KV cache served what the condensations left in place (benchmarks/context.py measures how much).
    assert run.result.usage.cached_tokens > 0


class LlamaCppLike:
    """A completions server that replays `outputs` and keeps to its context the way llama.cpp's server does."""

    def __init__(self, outputs: list[str], n_ctx: int, *, vllm: bool = False) -> None:
        tokenizers = pytest.importorskip("tokenizers")
        from agent.models.tiny import qwen_tokenizer_json_path

        tokenizer = tokenizers.Tokenizer.from_file(str(qwen_tokenizer_json_path()))
        self.prompts: list[tuple[int, int]] = []  # (prompt tokens, max_tokens) of every completion asked
        self.refused = 0
        server = self

        def count(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=False).ids)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def reply(self, status: int, payload: Any, kind: str = "application/json") -> None:
                body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path == "/props":  # llama.cpp's; vLLM has none, and says it in /v1/models
                    self.reply(404, {}) if vllm else self.reply(
                        200, {"default_generation_settings": {"n_ctx": n_ctx}}
                    )
                else:
                    extra = {"max_model_len": n_ctx} if vllm else {}
                    self.reply(
                        200, {"data": [{"id": "other", "max_model_len": 1}, {"id": "scripted", **extra}]}
                    )

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/tokenize":
                    self.reply(200, {"tokens": list(range(count(body["content"])))})
                    return
                tokens, limit = count(body["prompt"]), int(body.get("max_tokens") or 0)
                server.prompts.append((tokens, limit))
                if tokens + limit > n_ctx:
                    server.refused += 1
                    message = "the request exceeds the available context size, try increasing it"
                    self.reply(400, {"error": {"code": 400, "message": message}})
                    return
                text = outputs[len(server.prompts) - server.refused - 1]
                events = [{"choices": [{"index": 0, "text": text, "finish_reason": None}]}]
                usage = {"prompt_tokens": tokens, "completion_tokens": count(text)}
                events.append(
                    {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}], "usage": usage}
                )
                stream = b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in [*events, "[DONE]"])
                self.reply(200, stream.replace(b'data: "[DONE]"', b"data: [DONE]"), "text/event-stream")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def llama_like() -> Iterator[LlamaCppLike]:
    server = LlamaCppLike(long_run_script(100), N_CTX)
    yield server
    server.close()


async def test_100_steps_through_an_openai_compatible_server_fit_4096_tokens(
    llama_like: LlamaCppLike,
) -> None:
    model = OpenAICompatModel(llama_like.base_url, model="scripted", constrain=None)
    assert await model.context_window() == N_CTX  # read from /props
    agent = Agent(model, [page], max_steps=100, max_tokens_per_step=REPLY)
    run = agent.iter(TASK)
    events = [e async for e in run]
    assert run.result is not None
    assert run.result.stop_reason is StopReason.FINAL_ANSWER, run.result.detail
    assert llama_like.refused == 0
    assert len(llama_like.prompts) == 100
    assert all(tokens + limit <= N_CTX for tokens, limit in llama_like.prompts)
    assert {"mask", "digest"} <= {e.strategy for e in events if isinstance(e, ContextCondensed)}
    # The counts were the server's own (/tokenize), so the reported usage matches what was sent.
    assert run.result.usage.prompt_tokens == sum(tokens for tokens, _ in llama_like.prompts)


async def test_the_context_size_of_a_vllm_like_server_comes_from_its_model_list() -> None:
    server = LlamaCppLike([], 12_288, vllm=True)
    try:
        model = OpenAICompatModel(server.base_url, model="scripted")
        assert await model.context_window() == 12_288
        assert await OpenAICompatModel(server.base_url, model="scripted", n_ctx=999).context_window() == 999
    finally:
        server.close()


async def test_without_the_policy_the_server_refuses_and_the_run_stops_with_context_full(
    llama_like: LlamaCppLike,
) -> None:
    model = OpenAICompatModel(llama_like.base_url, model="scripted", constrain=None)
    result = await Agent(model, [page], max_steps=100, max_tokens_per_step=REPLY, context=None).run(TASK)
    assert result.stop_reason is StopReason.CONTEXT_FULL
    assert "--n-ctx" in result.detail
    assert llama_like.refused == 1


async def test_llama_cpp_python_server_counts_with_extras_tokenize(llama_server: str) -> None:
    server = OpenAICompatModel(llama_server, model="tiny", n_ctx=2048, max_tokens=REPLY)
    model = ScriptedModel(long_run_script(12, size=1500), prefill=server)
    agent = Agent(model, [page], max_steps=12, max_tokens_per_step=REPLY)
    run = agent.iter(TASK)
    events = [e async for e in run]
    assert run.result is not None
    assert run.result.stop_reason is StopReason.FINAL_ANSWER, run.result.detail
    assert any(isinstance(e, ContextCondensed) for e in events)
    counts = [await server.count_prompt_tokens(r) for r in model.requests]
    assert all(c is not None and c + REPLY <= 2048 for c in counts), counts
