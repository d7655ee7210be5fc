"""LlamaCppModel on the tiny random-weight Qwen2 GGUF: a real llama.cpp runtime, noise text, valid calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import pytest

import prompts
from agent.messages import AssistantMessage, Message, ToolMessage, UserMessage
from agent.models import LlamaCppModel, ModelChunk, ModelRequest
from agent.models.errors import ContextLengthError, ModelConfigurationError
from agent.parsing import Completion, parse_completion
from agent.testing import add, shout
from tools import Toolbox

pytestmark = pytest.mark.llama

Factory = Callable[..., LlamaCppModel]


TOOLS = [add, shout]
TASK = [UserMessage(content="Add 2 and 3, then shout the result.")]


async def collect(model: LlamaCppModel, request: ModelRequest) -> tuple[str, ModelChunk]:
    text = ""
    last: ModelChunk | None = None
    async for chunk in model.stream(request):
        text += chunk.text
        if chunk.finish_reason is not None:
            last = chunk
    assert last is not None
    assert last.usage is not None
    return text, last


def request(messages: Sequence[Message] = TASK, **kwargs: Any) -> ModelRequest:
    return ModelRequest(messages=list(messages), tools=kwargs.pop("tools", TOOLS), **kwargs)


def answer_part(text: str) -> str:
    assert "</think>" in text
    return text.split("</think>", 1)[1]


async def test_streams_noise_until_max_tokens(make_llama: Factory) -> None:
    # Text comes in 20 ms batches: 200 tokens take several batches even on a fast machine (40 tokens could
    # fit in five), so "more than two chunks" says streamed-not-delivered-at-the-end without racing the clock.
    model = make_llama(max_tokens=200)
    chunks = [c async for c in model.stream(request(tool_choice="none"))]
    assert len(chunks) > 2
    last = chunks[-1]
    assert last.finish_reason == "length"
    assert last.usage is not None
    assert last.usage.completion_tokens == 200
    assert last.usage.prompt_tokens == model.last_stats.prompt_tokens > 100  # the tools' system turn
    assert "".join(c.text for c in chunks)


async def test_stops_at_end_of_turn_without_printing_it(make_llama: Factory) -> None:
    model = make_llama(logit_bias={"<|im_end|>": 100.0})
    text, last = await collect(model, request(tool_choice="auto"))
    assert last.finish_reason == "stop"
    assert "<|im_end|>" not in text
    assert last.usage is not None
    assert last.usage.completion_tokens == 0


async def test_stops_at_an_invented_tool_response(make_llama: Factory) -> None:
    model = make_llama(logit_bias={"<tool_response>": 100.0})
    text, last = await collect(model, request(tool_choice="auto"))
    assert last.finish_reason == "tool_response"
    assert "<tool_response>" not in text


async def test_thinking_budget_closes_reasoning_with_the_note(make_llama: Factory) -> None:
    model = make_llama(max_tokens=60)
    text, last = await collect(model, request(tool_choice="none", thinking_budget=6))
    sentence = prompts.render_note("thinking_budget").strip()
    assert f"{sentence}\n</think>\n\n" in text
    assert model.last_stats.thinking_tokens == 6
    assert last.extra["thinking_tokens"] == 6
    completion = parse_completion(text)
    assert completion.thinking_closed


@pytest.mark.parametrize("seed", range(6))
async def test_required_calls_are_valid_and_nothing_else_follows_the_reasoning(
    make_llama: Factory, seed: int
) -> None:
    model = make_llama(seed=seed, max_tokens=200)
    text, last = await collect(model, request(tool_choice="required", thinking_budget=3))
    completion = parse_completion(text)
    assert completion.malformed == []
    assert completion.tool_calls, text
    toolbox = Toolbox(TOOLS)
    for call in completion.tool_calls:
        toolbox.validate(call.name, call.arguments)  # raises if the grammar let anything invalid through
    # After </think>: only call blocks separated by newlines.
    rest = answer_part(text)
    for block in rest.split("</tool_call>")[:-1]:
        assert block.strip().startswith("<tool_call>\n{"), rest
    if last.finish_reason == "stop":
        assert rest.rstrip().endswith("</tool_call>")


async def test_named_tool_choice_calls_only_that_tool(make_llama: Factory) -> None:
    model = make_llama(max_tokens=200)
    for _ in range(3):
        text, _ = await collect(model, request(tool_choice="shout", thinking_budget=2))
        completion = parse_completion(text)
        assert completion.tool_calls
        assert {c.name for c in completion.tool_calls} == {"shout"}


async def test_tool_choice_none_never_opens_a_call_after_the_reasoning(make_llama: Factory) -> None:
    model = make_llama(max_tokens=120, logit_bias={"<tool_call>": 12.0})
    text, _ = await collect(model, request(tool_choice="none", thinking_budget=3))
    assert "<tool_call>" not in answer_part(text)


async def test_auto_constrains_a_call_the_model_opens(make_llama: Factory) -> None:
    # The bias makes the noise model open calls often; each one must come out valid.
    model = make_llama(max_tokens=160, logit_bias={"<tool_call>": 12.0})
    text, last = await collect(model, request(tool_choice="auto", thinking_budget=2))
    completion = parse_completion(text)
    assert completion.tool_calls, text
    # Only a call cut off by the token cap may be incomplete.
    cut = 1 if last.finish_reason == "length" and not text.endswith("</tool_call>") else 0
    assert len(completion.malformed) <= cut
    toolbox = Toolbox(TOOLS)
    for call in completion.tool_calls:
        toolbox.validate(call.name, call.arguments)
    assert model.last_stats.grammar_tokens > 0


async def test_unconstrained_option_leaves_calls_to_the_model(make_llama: Factory) -> None:
    model = make_llama(max_tokens=60, constrain_tool_calls=False, logit_bias={"<tool_call>": 12.0})
    await collect(model, request(tool_choice="auto", thinking_budget=2))
    assert model.last_stats.grammar_tokens == 0
    # tool_choice="required" still opens the call after the reasoning, but its body is free text.
    text, _ = await collect(model, request(tool_choice="required", thinking_budget=2))
    assert answer_part(text).startswith("\n\n<tool_call>")
    assert model.last_stats.grammar_tokens == 0
    assert model.last_stats.tool_calls >= 1


def next_messages(previous: Sequence[Message], text: str, completion: Completion) -> list[Message]:
    calls = completion.tool_calls
    return [
        *previous,
        AssistantMessage(
            content=completion.content, thinking=completion.thinking, tool_calls=calls, raw=completion.raw
        ),
        *[ToolMessage(content=str(len(c.arguments)), name=c.name) for c in calls],
    ]


async def test_kv_cache_is_reused_across_steps(make_llama: Factory) -> None:
    model = make_llama(max_tokens=120)
    messages: list[Message] = list(TASK)
    prior_prompt = ""
    for step in range(3):
        req = request(messages, tool_choice="required", thinking_budget=4, keep_thinking="current_task")
        text, last = await collect(model, req)
        assert last.usage is not None
        stats = model.last_stats
        prompt = prompts.render(messages, TOOLS, keep_thinking="current_task")
        if step == 0:
            assert last.usage.cached_tokens == 0
        else:
            # The new prompt extends the previous prompt + generated text; only what is new is evaluated.
            assert prompt.startswith(prior_prompt)
            new_text = prompt[len(prior_prompt) :]
            llm = model.llama
            assert llm is not None
            new_tokens = len(llm.tokenize(new_text.encode(), add_bos=False, special=True))
            assert stats.evaluated_tokens <= new_tokens + 1
            assert last.usage.cached_tokens == stats.prompt_tokens - stats.evaluated_tokens
            assert last.usage.cached_tokens >= len(prior_prompt) // 8
        completion = parse_completion(text)
        prior_prompt = prompt + completion.raw
        messages = next_messages(messages, text, completion)


async def test_closing_the_stream_stops_generation(make_llama: Factory) -> None:
    model = make_llama(max_tokens=4000)
    stream = model.stream(request(tool_choice="none"))
    got = 0
    async for chunk in stream:
        got += len(chunk.text) > 0
        if got == 3:
            break
    await stream.aclose()  # type: ignore[attr-defined]
    # The worker releases the model: the next call runs (and the cancelled one did not run to 4000 tokens).
    _text, last = await asyncio.wait_for(collect(make_llama_again(model), request(tool_choice="none")), 120)
    assert last.finish_reason == "length"


def make_llama_again(model: LlamaCppModel) -> LlamaCppModel:
    model.max_tokens = 10
    return model


async def test_cancelled_stream_records_it(make_llama: Factory) -> None:
    model = make_llama(max_tokens=4000)

    started = asyncio.Event()

    async def consume() -> None:
        async for _ in model.stream(request(tool_choice="none")):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 120)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(model.load)  # waits for the worker to let go of the model
    assert model.last_stats.finish_reason == "cancelled"
    assert model.last_stats.completion_tokens < 4000


async def test_context_overflow_is_a_clear_error(make_llama: Factory) -> None:
    model = make_llama(n_ctx=256)
    with pytest.raises(ContextLengthError, match="raise n_ctx"):
        await collect(model, request(tool_choice="auto"))


def test_missing_file_is_a_clear_error(tmp_path: Any) -> None:
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        LlamaCppModel(tmp_path / "nope.gguf")


def test_from_pretrained_without_network_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelConfigurationError, match="model_path"):
        LlamaCppModel.from_pretrained("Qwen/QwQ-32B-GGUF", "qwq-32b-q4_k_m.gguf", cache_dir=str(tmp_path))


def test_tiny_model_tokenizes_tags_as_single_tokens(make_llama: Factory) -> None:
    llm = make_llama().load()
    for tag in ("<tool_call>", "</tool_call>", "<think>", "</think>", "<|im_start|>", "<|im_end|>"):
        assert len(llm.tokenize(tag.encode(), add_bos=False, special=True)) == 1, tag
    assert llm.n_vocab() == 151669
    # user-defined tags print as text; control tokens do not
    (call,) = llm.tokenize(b"<tool_call>", add_bos=False, special=True)
    assert llm.detokenize([call]) == b"<tool_call>"


def test_long_tokens_keep_their_text(make_llama: Factory) -> None:
    # llama-cpp-python's detokenize drops tokens longer than 32 bytes; the backend must not.
    model = make_llama()
    model.load()
    rt = model.runtime
    assert rt is not None
    text = " /*" + "-" * 64
    tokens = rt.tokenize(text.encode(), special=False)
    assert any(len(rt.token_bytes(t)) > 32 for t in tokens)
    assert b"".join(rt.token_bytes(t) for t in tokens) == text.encode()
