"""agent.context on the real backends: 100 scripted steps of 3 kB results inside n_ctx=4096.

The script decides what the model says, but every prompt is really tokenized and evaluated by the backend
(`ScriptedModel(prefill=...)`): the tiny GGUF in-process, and llama-cpp-python's server on it. A prompt that
did not fit would end the run with "context_full"; the counts are checked again after the run.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent import Agent, StopReason
from agent.events import ContextCondensed
from agent.models import LlamaCppModel, OpenAICompatModel, ScriptedModel
from agent.testing import long_run_script, page

pytestmark = [pytest.mark.llama, pytest.mark.slow]

N_CTX = 4096
REPLY = 256
TASK = "Read the report, page by page."


async def test_100_steps_in_process_fit_4096_tokens(make_llama: Callable[..., LlamaCppModel]) -> None:
    llama = make_llama(n_ctx=N_CTX)
    model = ScriptedModel(long_run_script(100), prefill=llama)
    agent = Agent(model, [page], max_steps=100, max_tokens_per_step=REPLY)
    events = [e async for e in agent.stream(TASK)]
    assert events[-1].stop_reason == "final_answer", events[-1]  # type: ignore[union-attr]
    assert len(model.requests) == 100
    for request in model.requests:  # exact counts, with the reply's room
        assert request.max_tokens is not None
        assert await llama.count_prompt_tokens(request) + request.max_tokens <= N_CTX
    condensed = [e for e in events if isinstance(e, ContextCondensed)]
    assert {"mask", "digest"} <= {e.strategy for e in condensed}
    # Between condensations the KV cache serves the whole previous prompt: most tokens are reused.
    assert llama.last_stats.cached_tokens > llama.last_stats.evaluated_tokens


async def test_100_steps_through_a_server_fit_4096_tokens(llama_server: str) -> None:
    server = OpenAICompatModel(llama_server, model="tiny", n_ctx=N_CTX, max_tokens=REPLY)
    model = ScriptedModel(long_run_script(100), prefill=server)
    agent = Agent(model, [page], max_steps=100, max_tokens_per_step=REPLY)
    result = await agent.run(TASK)
    assert result.stop_reason is StopReason.FINAL_ANSWER, result.detail
    assert len(model.requests) == 100
    counts = [await server.count_prompt_tokens(r) for r in model.requests]
    assert all(c is not None for c in counts)  # llama-cpp-python's /extras/tokenize counted them
    assert max(c for c in counts if c is not None) + REPLY <= N_CTX
    # Usage comes from the server: the prompt tokens it evaluated, summed over the steps.
    assert result.usage.prompt_tokens >= sum(c for c in counts if c is not None) - 100
