"""OpenAICompatModel against real HTTP servers on 127.0.0.1.

A scripted server of our own plays the failure modes (429 with Retry-After, 500s, a stream cut off, garbage,
401, a context-length 400) and the chat-mode deltas; llama-cpp-python's own server, started on the tiny GGUF,
gives real SSE in both modes.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent import Agent
from agent.events import TurnRestarted
from agent.messages import AssistantMessage, Message, ToolMessage, UserMessage
from agent.models import ModelChunk, ModelRequest, OpenAICompatModel
from agent.models.errors import (
    ContextLengthError,
    ModelAuthenticationError,
    ModelConfigurationError,
    ModelStreamError,
    ModelUnavailableError,
)
from agent.parsing import parse_completion
from agent.testing import add
from tools import Toolbox

TASK: list[Message] = [UserMessage(content="Add 2 and 3.")]


# -- a scripted server -----------------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    events: Sequence[Any] = ()  # SSE payloads (dicts or raw strings); "[DONE]" is appended unless `cut`
    body: bytes | None = None  # sent as is instead of events
    cut: bool = False  # close the connection mid-stream
    endless: bool = False  # keep sending until the client goes away
    keepalive: bool = False  # after the events, send SSE comments forever (a stall that looks alive)
    delay: float = 0.0  # seconds to wait before answering
    keep_open: bool = False  # the whole stream with a Content-Length, the connection kept alive after it


def sse(payload: Any) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def text_event(text: str, finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "text": text, "finish_reason": finish}]}


class Scripted:
    def __init__(self) -> None:
        self.replies: list[Reply] = []
        self.requests: list[dict[str, Any]] = []
        self.client_gone = threading.Event()
        # A strict chat server refuses what real ones refuse: a tool message that answers no call id.
        self.strict = False
        self.default: Reply | None = None  # the reply when the script is empty (else a 500)
        script = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = json.dumps({"data": [{"id": "scripted"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                payload = json.loads(self.rfile.read(length) or b"{}")
                script.requests.append(
                    {"body": payload, "headers": dict(self.headers), "peer": self.client_address}
                )
                reply = script.replies.pop(0) if script.replies else (script.default or Reply(status=500))
                if script.strict and (problem := orphan_tool_message(payload.get("messages") or [])):
                    reply = Reply(status=400, body=json.dumps({"error": {"message": problem}}).encode())
                if reply.delay:
                    threading.Event().wait(reply.delay)
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                if reply.body is not None or reply.status >= 400:
                    body = reply.body or json.dumps({"error": {"message": f"status {reply.status}"}}).encode()
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_header("Content-Type", "text/event-stream")
                if reply.keep_open:
                    body = b"".join(sse(event) for event in [*reply.events, "[DONE]"])
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if reply.cut:
                    self.send_header("Content-Length", "100000")  # promises more than it sends
                else:
                    self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for event in reply.events:
                        self.wfile.write(sse(event))
                        self.wfile.flush()
                    if reply.endless:
                        while True:
                            self.wfile.write(sse(text_event("x")))
                            self.wfile.flush()
                            threading.Event().wait(0.01)
                    if reply.keepalive:
                        while True:
                            self.wfile.write(b": keep-alive\n\n")
                            self.wfile.flush()
                            threading.Event().wait(0.2)
                    if not reply.cut:
                        self.wfile.write(sse("[DONE]"))
                except (BrokenPipeError, ConnectionResetError):
                    script.client_gone.set()
                self.close_connection = True

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def orphan_tool_message(messages: list[dict[str, Any]]) -> str | None:
    """What OpenAI's API says of a tool message that does not answer a call of the assistant turn before it."""
    pending: set[str] = set()
    for message in messages:
        if message.get("role") == "assistant":
            pending = {c["id"] for c in message.get("tool_calls") or []}
        elif message.get("role") == "tool":
            if message.get("tool_call_id") not in pending:
                return "messages with role 'tool' must be a response to a preceding message with 'tool_calls'"
            pending.discard(message["tool_call_id"])
        elif pending:
            return "an assistant message with 'tool_calls' must be followed by tool messages for each call id"
    return None


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


def model_for(server: Scripted, **kwargs: Any) -> OpenAICompatModel:
    options: dict[str, Any] = {"model": "scripted", "max_retries": 2, "backoff": 0.01, "api_key": "k"}
    options.update(kwargs)
    return OpenAICompatModel(server.base_url, **options)


async def collect(model: OpenAICompatModel, request: ModelRequest) -> tuple[str, ModelChunk]:
    text = ""
    last: ModelChunk | None = None
    async for chunk in model.stream(request):
        text += chunk.text
        if chunk.finish_reason is not None:
            last = chunk
    assert last is not None
    return text, last


def task(**kwargs: Any) -> ModelRequest:
    return ModelRequest(messages=TASK, tools=kwargs.pop("tools", [add]), **kwargs)


# -- error paths -----------------------------------------------------------------------------------------------
async def test_429_with_retry_after_then_success(scripted: Scripted) -> None:
    scripted.replies = [
        Reply(status=429, headers={"Retry-After": "0.2"}),
        Reply(events=[text_event("think"), text_event("</think>\n\nhi", "stop")]),
    ]
    model = model_for(scripted)
    text, last = await collect(model, task())
    assert text == "think</think>\n\nhi"
    assert last.finish_reason == "stop"
    assert model.retry_delays == [0.2]
    assert len(scripted.requests) == 2


async def test_500_retries_exhausted(scripted: Scripted) -> None:
    scripted.replies = [Reply(status=500), Reply(status=503), Reply(status=500)]
    model = model_for(scripted, max_retries=2)
    with pytest.raises(ModelUnavailableError, match="failed 3 times"):
        await collect(model, task())
    assert len(scripted.requests) == 3
    assert len(model.retry_delays) == 2
    assert model.retry_delays[1] > model.retry_delays[0]  # exponential


async def test_stream_cut_off_mid_way(scripted: Scripted) -> None:
    scripted.replies = [Reply(events=[text_event("par"), text_event("tial")], cut=True)]
    model = model_for(scripted)
    seen: list[str] = []

    async def consume() -> None:
        async for chunk in model.stream(task()):
            seen.append(chunk.text)

    with pytest.raises(ModelStreamError, match=r"broke off|ended before"):
        await consume()
    assert "".join(seen) == "partial"  # what arrived was streamed; no silent retry duplicates it
    assert len(scripted.requests) == 1


async def test_stream_without_end_marker(scripted: Scripted) -> None:
    # A well-closed connection whose stream never says it is finished.
    scripted.replies = [Reply(body=sse(text_event("a")), headers={"Content-Type": "text/event-stream"})]
    with pytest.raises(ModelStreamError, match="ended before its end marker"):
        await collect(model_for(scripted), task())


async def test_garbage_instead_of_sse(scripted: Scripted) -> None:
    scripted.replies = [Reply(body=b"<html><body>Bad gateway page</body></html>\n")]
    with pytest.raises(ModelStreamError, match="server-sent events"):
        await collect(model_for(scripted), task())


async def test_malformed_event(scripted: Scripted) -> None:
    scripted.replies = [Reply(events=["{not json"])]
    with pytest.raises(ModelStreamError, match="malformed event"):
        await collect(model_for(scripted), task())


async def test_401_is_a_clear_error_without_retries(scripted: Scripted) -> None:
    scripted.replies = [Reply(status=401, body=b'{"error": {"message": "invalid api key"}}')]
    with pytest.raises(ModelAuthenticationError, match=r"invalid api key.*QWQ_AGENT_API_KEY"):
        await collect(model_for(scripted), task())
    assert len(scripted.requests) == 1


async def test_404_names_the_url_problem(scripted: Scripted) -> None:
    scripted.replies = [Reply(status=404, body=b'{"detail": "Not Found"}')]
    with pytest.raises(ModelConfigurationError, match="/v1"):
        await collect(model_for(scripted), task())


async def test_context_length_400(scripted: Scripted) -> None:
    body = b'{"error": {"message": "This model\'s maximum context length is 4096 tokens"}}'
    scripted.replies = [Reply(status=400, body=body)]
    with pytest.raises(ContextLengthError):
        await collect(model_for(scripted), task())


async def test_connection_refused_is_retried_then_unavailable(unused_port: int) -> None:
    model = OpenAICompatModel(f"http://127.0.0.1:{unused_port}/v1", model="m", max_retries=1, backoff=0.01)
    with pytest.raises(ModelUnavailableError, match="ConnectError"):
        await collect(model, task())


async def test_api_key_from_environment(scripted: Scripted, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWQ_AGENT_API_KEY", "from-env")
    scripted.replies = [Reply(events=[text_event("x", "stop")])]
    model = OpenAICompatModel(scripted.base_url, model="scripted")
    await collect(model, task())
    assert scripted.requests[0]["headers"]["Authorization"] == "Bearer from-env"


async def test_model_name_discovered(scripted: Scripted) -> None:
    scripted.replies = [Reply(events=[text_event("x", "stop")])]
    model = OpenAICompatModel(scripted.base_url)
    await collect(model, task())
    assert model.model == "scripted"
    assert scripted.requests[0]["body"]["model"] == "scripted"


async def test_closing_the_stream_closes_the_connection(scripted: Scripted) -> None:
    scripted.replies = [Reply(endless=True)]
    model = model_for(scripted)
    stream = model.stream(task())
    async for chunk in stream:
        if chunk.text:  # the first chunk says where the turn starts; wait for text from the server
            break
    await stream.aclose()  # type: ignore[attr-defined]
    assert scripted.client_gone.wait(10)


async def test_completions_request_carries_the_rendered_prompt_and_sampling(scripted: Scripted) -> None:
    import prompts

    scripted.replies = [Reply(events=[text_event("x", "stop")])]
    await collect(model_for(scripted, seed=3), task())
    body = scripted.requests[0]["body"]
    assert body["prompt"] == prompts.render(TASK, [add])
    assert body["stream"] is True
    assert (body["temperature"], body["top_p"], body["top_k"], body["seed"]) == (0.6, 0.95, 40, 3)
    assert "<tool_response>" in body["stop"]


async def test_completions_constrained_call_is_a_continuation_with_the_grammar(scripted: Scripted) -> None:
    call = '\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
    scripted.replies = [
        Reply(
            events=[text_event("ok</think>\n\n<tool_"), text_event("call>junk that is discarded")], cut=False
        ),
        Reply(events=[text_event(call, "stop")]),
        Reply(events=[text_event("", "stop")]),
    ]
    text, _ = await collect(model_for(scripted, constrain="grammar"), task())
    assert text == "ok</think>\n\n<tool_call>" + call
    second = scripted.requests[1]["body"]
    assert second["prompt"].endswith("<|im_start|>assistant\n<think>\nok</think>\n\n<tool_call>")
    assert 'root ::= "\\n" ' in second["grammar"]
    assert scripted.requests[2]["body"]["prompt"].endswith(call)


async def test_completions_thinking_budget(scripted: Scripted) -> None:
    import prompts

    scripted.replies = [
        Reply(events=[text_event("a"), text_event("b", "length")]),
        Reply(events=[text_event("answer", "stop")]),
    ]
    text, _ = await collect(model_for(scripted), task(thinking_budget=2, tool_choice="none"))
    sentence = prompts.render_note("thinking_budget").strip()
    assert text == f"ab\n\n{sentence}\n</think>\n\nanswer"
    assert scripted.requests[0]["body"]["max_tokens"] == 2


# -- chat mode -------------------------------------------------------------------------------------------------
def chat_event(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def test_chat_mode_reserialises_reasoning_content_and_tool_calls(scripted: Scripted) -> None:
    scripted.replies = [
        Reply(
            events=[
                chat_event({"role": "assistant", "reasoning_content": "I should "}),
                chat_event({"reasoning_content": "add."}),
                chat_event({"content": "Calling."}),
                chat_event(
                    {
                        "tool_calls": [
                            {"index": 0, "id": "c1", "function": {"name": "add", "arguments": '{"a": 2'}}
                        ]
                    }
                ),
                chat_event({"tool_calls": [{"index": 0, "function": {"arguments": ', "b": 3}'}}]}),
                chat_event(
                    {"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "add", "arguments": "{}"}}]}
                ),
                chat_event({}, "tool_calls"),
                {"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 7}},
            ]
        )
    ]
    text, last = await collect(model_for(scripted, mode="chat"), task())
    assert text == (
        "I should add.\n</think>\n\nCalling."
        '\n<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
        '\n<tool_call>\n{"name": "add", "arguments": {}}\n</tool_call>'
    )
    completion = parse_completion(text)
    assert completion.thinking == "I should add."
    assert [c.arguments for c in completion.tool_calls] == [{"a": 2, "b": 3}, {}]
    assert last.usage is not None
    assert last.usage.prompt_tokens == 11
    body = scripted.requests[0]["body"]
    assert body["tools"] == [add.to_openai()]
    assert body["tool_choice"] == "auto"


async def test_chat_mode_reasoning_field_and_named_tool_choice(scripted: Scripted) -> None:
    scripted.replies = [Reply(events=[chat_event({"reasoning": "hm"}), chat_event({"content": "4"}, "stop")])]
    text, _ = await collect(model_for(scripted, mode="chat"), task(tool_choice="add"))
    assert text == "hm\n</think>\n\n4"
    assert scripted.requests[0]["body"]["tool_choice"] == {"type": "function", "function": {"name": "add"}}


async def test_chat_mode_without_reasoning_still_closes_it(scripted: Scripted) -> None:
    scripted.replies = [Reply(events=[chat_event({"content": "just text"}, "stop")])]
    text, _ = await collect(model_for(scripted, mode="chat"), task())
    assert parse_completion(text).content == "just text"


async def test_chat_mode_inline_reasoning(scripted: Scripted) -> None:
    scripted.replies = [
        Reply(
            events=[chat_event({"content": "<think>\nhm"}), chat_event({"content": "</think>\n\nok"}, "stop")]
        )
    ]
    text, _ = await collect(model_for(scripted, mode="chat", reasoning_inline=True), task())
    assert text == "hm</think>\n\nok"


async def test_chat_mode_sends_history_with_call_ids(scripted: Scripted) -> None:
    from tools import ToolCall

    history: list[Message] = [
        *TASK,
        AssistantMessage(
            content="", thinking="t", tool_calls=[ToolCall(name="add", arguments={"a": 1, "b": 2})]
        ),
        ToolMessage(content="3", name="add"),
    ]
    scripted.replies = [Reply(events=[chat_event({"content": "3"}, "stop")])]
    await collect(model_for(scripted, mode="chat"), ModelRequest(messages=history, tools=[add]))
    sent = scripted.requests[0]["body"]["messages"]
    assert sent[1]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 1, "b": 2}'}
    assert sent[2]["tool_call_id"] == sent[1]["tool_calls"][0]["id"]


# -- llama-cpp-python's own server -----------------------------------------------------------------------------
@pytest.mark.llama
@pytest.mark.slow
async def test_llama_server_completions_with_grammar(llama_server: str) -> None:
    model = OpenAICompatModel(
        llama_server, model="tiny", constrain="grammar", max_tokens=120, max_string_length=12, seed=1
    )
    text, last = await collect(model, task(tool_choice="required", thinking_budget=4))
    completion = parse_completion(text)
    assert completion.tool_calls, text
    for call in completion.tool_calls:
        Toolbox([add]).validate(call.name, call.arguments)
    assert last.finish_reason in ("stop", "length")
    assert len(model.last_requests) >= 3  # reasoning, the constrained call, the rest


@pytest.mark.llama
@pytest.mark.slow
async def test_llama_server_chat_streams(llama_server: str) -> None:
    model = OpenAICompatModel(llama_server, model="tiny", mode="chat", max_tokens=24, seed=1)
    chunks = [c async for c in model.stream(ModelRequest(messages=TASK))]
    text = "".join(c.text for c in chunks)
    assert len(chunks) > 3
    assert chunks[-1].finish_reason in ("stop", "length")
    assert parse_completion(text).thinking_closed or "</think>" not in text


@pytest.mark.llama
@pytest.mark.slow
async def test_llama_server_models_list(llama_server: str) -> None:
    assert await OpenAICompatModel(llama_server).list_models() == ["tiny"]


# -- timeouts, retries, replicas -----------------------------------------------------------------------------
async def test_a_stream_kept_alive_by_comments_stops_at_the_idle_timeout(scripted: Scripted) -> None:
    scripted.replies = [Reply(events=[text_event("thinking")], keepalive=True)]
    model = model_for(scripted, idle_timeout=1.0)
    with pytest.raises(ModelStreamError, match="idle_timeout") as caught:
        await collect(model, task())
    assert caught.value.retryable


async def test_the_deadline_ends_an_endless_request(scripted: Scripted) -> None:
    scripted.replies = [Reply(endless=True)]
    with pytest.raises(ModelStreamError, match="deadline"):
        await collect(model_for(scripted, deadline=1.0), task())


async def test_retry_after_is_honoured_only_up_to_its_cap(scripted: Scripted) -> None:
    scripted.replies = [
        Reply(status=503, headers={"Retry-After": "3600"}),
        Reply(events=[text_event("ok", "stop")]),
    ]
    model = model_for(scripted, max_retry_after=0.3)
    await collect(model, task())
    assert model.retry_delays == [0.3]


async def test_a_broken_stream_says_what_happened(scripted: Scripted) -> None:
    scripted.replies = [Reply(events=[text_event("par")], cut=True)]
    with pytest.raises(ModelStreamError) as caught:
        await collect(model_for(scripted), task())
    message = str(caught.value)
    assert not message.rstrip().endswith(":")
    assert "connection" in message or "ended before" in message


@pytest.fixture
def replicas() -> Iterator[list[Scripted]]:
    servers = [Scripted() for _ in range(3)]
    yield servers
    for server in servers:
        server.close()


async def test_requests_spread_over_replicas_and_skip_a_failing_one(replicas: list[Scripted]) -> None:
    healthy, broken = replicas[:2], replicas[2]
    for server in healthy:
        server.default = Reply(events=[text_event("ok", "stop")], delay=0.2)
    broken.default = Reply(status=503)
    model = OpenAICompatModel(
        base_urls=[s.base_url for s in replicas], model="m", max_retries=3, backoff=0.01, cooldown=60
    )
    results = await asyncio.gather(*(collect(model, task()) for _ in range(8)))
    assert all(text == "ok" for text, _ in results)
    # the least busy replica takes each turn: all three got a share before the broken one was known...
    assert 1 <= len(broken.requests) <= 3
    assert len(healthy[0].requests) >= 2
    assert len(healthy[1].requests) >= 2
    # ...and once it failed, it is skipped for the cool-down
    tried = len(broken.requests)
    results = await asyncio.gather(*(collect(model, task()) for _ in range(8)))
    assert all(text == "ok" for text, _ in results)
    assert len(broken.requests) == tried


async def test_a_step_is_retried_on_another_replica_when_one_dies(replicas: list[Scripted]) -> None:
    first, second = replicas[:2]
    first.default = Reply(status=500)
    second.default = Reply(events=[text_event("done</think>\n\nfine", "stop")])
    model = OpenAICompatModel(base_urls=[first.base_url, second.base_url], model="m", backoff=0.01)
    result = await Agent(model).run("go")
    assert result.answer == "fine"


async def test_the_loop_starts_a_turn_again_when_its_stream_breaks_off(scripted: Scripted) -> None:
    scripted.replies = [
        Reply(events=[text_event("half a thou")], cut=True),
        Reply(events=[text_event("whole thought</think>\n\n42", "stop")]),
    ]
    run = Agent(model_for(scripted)).iter("go")
    events = [e async for e in run]
    assert any(isinstance(e, TurnRestarted) for e in events)
    assert run.result is not None
    assert run.result.answer == "42"
    assert run.result.steps == 1


# -- chat mode against a strict server ---------------------------------------------------------------------------
async def test_notes_reach_a_strict_chat_server_as_user_messages(scripted: Scripted) -> None:
    scripted.strict = True
    scripted.replies = [
        Reply(events=[chat_event({"content": "<tool_call>\n{broken json\n</tool_call>"}, "stop")]),
        Reply(events=[chat_event({"content": "no tools for me"}, "stop")]),
        Reply(
            events=[
                chat_event(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "c1",
                                "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'},
                            }
                        ]
                    },
                    "tool_calls",
                )
            ]
        ),
        Reply(events=[chat_event({"content": "3"}, "stop")]),
    ]
    agent = Agent(model_for(scripted, mode="chat"), tools=[add], tool_choice="auto", max_steps=6)
    result = await agent.run("Add 1 and 2.")
    assert result.answer == "no tools for me" or result.answer == "3"
    for request in scripted.requests:
        assert orphan_tool_message(request["body"]["messages"]) is None
    notes = [m for m in scripted.requests[1]["body"]["messages"] if m["role"] == "user"]
    assert len(notes) == 2  # the task, then the note about the malformed call


async def test_a_finished_stream_leaves_its_connection_for_the_next_turn(scripted: Scripted) -> None:
    """After `[DONE]` the rest of the body is read, so the kept-alive connection serves the next request: a
    connection closed unread made every turn pay a new handshake (most of the client's CPU under load)."""
    events = [text_event("4</think>\n\nDone.", finish="stop")]
    scripted.replies = [Reply(events=events, keep_open=True), Reply(events=events, keep_open=True)]
    model = model_for(scripted)
    request = ModelRequest(messages=TASK)
    for _ in range(2):
        text, last = await collect(model, request)
        assert text.endswith("Done.")
        assert last.finish_reason == "stop"
    await model.aclose()
    first, second = (r["peer"] for r in scripted.requests)
    assert first == second  # the same client port: one TCP connection for both turns


async def test_line_separators_inside_a_token_do_not_cut_its_event(scripted: Scripted) -> None:
    """Servers that write JSON without escaping non-ASCII (llama.cpp, vLLM) send U+2028 and U+0085 as they are;
    only CR LF, LF and CR end an SSE line (httpx's `aiter_lines` also split there, breaking the event)."""
    odd = "a\u2028b\u0085c\u2029d\x0ce"
    raw = json.dumps(text_event(f"{odd}</think>\n\n{odd}", "stop"), ensure_ascii=False)
    scripted.replies = [Reply(events=[raw])]
    text, last = await collect(model_for(scripted), task())
    assert text == f"{odd}</think>\n\n{odd}"
    assert last.finish_reason == "stop"


async def test_events_with_crlf_and_cr_line_ends(scripted: Scripted) -> None:
    body = (
        "data: " + json.dumps(text_event("one ")) + "\r\n\r\n"
        "data: " + json.dumps(text_event("two</think>\n\nok", "stop")) + "\r\r"
        ": a comment\r\ndata: [DONE]\r\n\r\n"
    ).encode()
    scripted.replies = [Reply(body=body)]
    text, last = await collect(model_for(scripted), task())
    assert text == "one two</think>\n\nok"
    assert last.finish_reason == "stop"


def test_sse_lines_split_only_at_cr_lf_and_crlf_even_across_chunks() -> None:
    from agent.models._http import _Lines

    lines = _Lines()
    for chunk in ["data: a\r", "\ndata: b\u2028c\r", "\r", "\n", "data: d\n", "\n", "\r\r\n"]:
        lines.feed(chunk)
    # the CR and LF of "\r", "\n" are one CR LF; "\r\r\n" is a CR, then a CR LF
    assert list(lines._lines) == ["data: a", "data: b\u2028c", "", "data: d", "", "", ""]
