"""agent.context with ScriptedModel: long runs kept inside the context, condensations recorded, context_full.

ScriptedModel(n_ctx=...) counts with the estimate, so these tests run without a tokenizer; the estimate
itself is checked against Qwen2's real tokenizer here, and the real backends in tests/agent/models.
"""

from __future__ import annotations

import inspect
import json
import random
from pathlib import Path
from typing import Any

import pytest

import prompts
from agent import Agent, StopReason
from agent.context import ContextPolicy, estimate_tokens
from agent.events import ContextCondensed, FinalAnswer
from agent.messages import AssistantMessage, NoteMessage, ToolMessage
from agent.models import ModelRequest, ScriptedModel, completion_text
from agent.testing import long_run_script, page
from agent.transcript import read_transcript

N_CTX = 4096
REPLY = 256


def _samples() -> dict[str, str]:
    import agent.loop
    import agent.transcript

    rng = random.Random(1)
    rows = [
        {"id": i, "name": f"item-{i}", "price": round(rng.random() * 100, 2), "ok": i % 2 == 0}
        for i in range(50)
    ]
    messages = [{"role": "user", "content": page(3)}, {"role": "tool", "content": page(4)}]
    return {
        "prose": inspect.getdoc(agent.transcript) or "",
        "code": inspect.getsource(agent.loop)[:6000],
        "json": json.dumps(rows, indent=2),
        "numbers": " ".join(str(rng.randint(0, 10**6)) for _ in range(300)),
        "cjk": "量子计算是一种利用量子力学原理进行信息处理的计算方式。它与传统计算机有着本质区别。" * 15
        + "日本語のテキストも少し含めます。東京は日本の首都です。" * 5,
        "hex": "\n".join(f"{rng.getrandbits(128):032x}" for _ in range(50)),
        "log": "\n".join(
            f"2026-12-02 09:{i % 60:02d} INFO worker[{i}] batch {i * 7} in {rng.random():.3f}s"
            for i in range(80)
        ),
        "traceback": 'Traceback (most recent call last):\n  File "/workspace/s.py", line 12, in <module>\n    f(x)\nZeroDivisionError: division by zero\n'
        * 15,
        "page": page(1),
        "chat prompt": prompts.render(messages, [page]),
    }


@pytest.fixture(scope="module")
def qwen_tokenizer() -> Any:
    tokenizers = pytest.importorskip(
        "tokenizers", reason="the real Qwen2 tokenizer is read with `tokenizers`"
    )
    from agent.models.tiny import qwen_tokenizer_json_path

    return tokenizers.Tokenizer.from_file(str(qwen_tokenizer_json_path()))


@pytest.mark.parametrize("kind", sorted(_samples()))
def test_the_estimate_is_within_ten_percent_of_the_real_tokenizer(kind: str, qwen_tokenizer: Any) -> None:
    tokenizer = qwen_tokenizer
    text = _samples()[kind]
    real = len(tokenizer.encode(text, add_special_tokens=False).ids)
    assert abs(estimate_tokens(text) - real) <= 0.1 * real, (estimate_tokens(text), real)


def _transcript(folder: Path) -> Path:
    return next(folder.glob("*.jsonl"))


def _fits(model: ScriptedModel, request: ModelRequest) -> bool:
    text = prompts.render(request.messages, request.tools, keep_thinking=request.keep_thinking)
    return estimate_tokens(text) + REPLY <= N_CTX


@pytest.mark.slow
async def test_a_100_step_run_with_3kb_results_finishes_inside_4096_tokens(tmp_path: Path) -> None:
    model = ScriptedModel(long_run_script(100), n_ctx=N_CTX)
    agent = Agent(model, [page], max_steps=100, max_tokens_per_step=REPLY, transcript_dir=tmp_path)
    events = [e async for e in agent.stream("Read the report, page by page.")]
    final = events[-1]
    assert isinstance(final, FinalAnswer)
    assert final.stop_reason == "final_answer", final
    assert len(model.requests) == 100
    assert all(_fits(model, r) for r in model.requests)
    assert all(r.max_tokens == REPLY for r in model.requests)
    # The history keeps every result whole; only what the model was shown changed.
    run = read_transcript(_transcript(tmp_path))
    results = [m for m in run.messages if isinstance(m, ToolMessage)]
    assert len(results) == 99
    assert all(len(r.content) == 3000 for r in results)
    condensed = [e for e in events if isinstance(e, ContextCondensed)]
    assert {e.strategy for e in condensed} == {"mask", "digest"}
    assert all(e.tokens_after < e.tokens_before for e in condensed)
    records = [r for _, r in run.other_records if r["type"] == "condensation"]
    assert len(records) == len(condensed)
    masked = records[0]["masked"][0]
    assert masked["tool"] == "page"
    assert masked["chars"] == 3000
    assert masked["path"] == ""
    # The last request: the system prompt and the task first, the last turns whole, older ones hidden.
    last = model.requests[-1].messages
    assert last[0].role == "system"
    assert last[1].content == "Read the report, page by page."
    assert isinstance(last[2], NoteMessage)
    assert last[2].kind == "context_digest"
    shown = [m for m in last if isinstance(m, ToolMessage)]
    assert shown[-1].content == results[-1].content
    assert any("hidden" in m.content for m in shown)


async def test_masking_happens_in_blocks_and_the_view_stays_put_in_between() -> None:
    """Between two condensations each request extends the previous one: a KV cache reuses all of it."""
    model = ScriptedModel(long_run_script(40, size=600), n_ctx=N_CTX)
    agent = Agent(
        model, [page], max_steps=40, max_tokens_per_step=REPLY, context=ContextPolicy(min_mask_chars=100)
    )
    events = [e async for e in agent.stream("Read the report.")]
    assert events[-1].stop_reason == "final_answer"  # type: ignore[union-attr]
    condensed = {e.step for e in events if isinstance(e, ContextCondensed)}
    assert condensed
    assert len(condensed) < 40 // 4
    prompts_sent = [prompts.render(r.messages, r.tools) for r in model.requests]
    for step in range(2, 41):
        if step not in condensed:
            previous = prompts_sent[step - 2].removesuffix("<|im_start|>assistant\n<think>\n")
            assert prompts_sent[step - 1].startswith(previous)
    masked = sum(e.masked for e in events if isinstance(e, ContextCondensed))
    assert masked > 2 * len([e for e in events if isinstance(e, ContextCondensed) and e.strategy == "mask"])


async def test_a_task_too_large_for_the_context_stops_with_context_full(tmp_path: Path) -> None:
    small = ScriptedModel([completion_text("Read", content="ok")], n_ctx=512)
    big_task = "Summarise this. " + page(1, size=4000)
    stopped = await Agent(small, [page], max_tokens_per_step=REPLY, transcript_dir=tmp_path).run(big_task)
    assert stopped.stop_reason is StopReason.CONTEXT_FULL
    assert stopped.steps == 0
    assert small.requests == []
    assert "--n-ctx 2048" in stopped.detail
    assert "holds 512" in stopped.detail


@pytest.mark.slow
async def test_context_full_after_some_steps_then_resume_with_a_larger_context(tmp_path: Path) -> None:
    script = long_run_script(80)
    policy = ContextPolicy(condense="none")  # masking only: the notes pile up until nothing fits
    small = ScriptedModel(script, n_ctx=N_CTX)
    first = await Agent(
        small, [page], max_steps=80, max_tokens_per_step=REPLY, transcript_dir=tmp_path, context=policy
    ).run("Read the report.")
    assert first.stop_reason is StopReason.CONTEXT_FULL
    assert first.steps > 20
    assert "--n-ctx 8192" in first.detail
    assert first.transcript_path is not None
    larger = ScriptedModel(script[first.steps :], n_ctx=4 * N_CTX)
    resumed = await Agent(larger, [page], max_steps=80, max_tokens_per_step=REPLY, context=policy).resume(
        first.transcript_path
    )
    assert resumed.stop_reason is StopReason.FINAL_ANSWER
    # The resumed run shows the model what it saw before: the results masked then stay masked.
    before = first_masked = [m for m in larger.requests[0].messages if isinstance(m, ToolMessage)]
    assert before
    assert "hidden" in first_masked[0].content


async def test_the_summary_is_written_by_the_model_and_replaces_the_middle(tmp_path: Path) -> None:
    class Summariser(ScriptedModel):
        """Answers summary requests (no tools) from its own script, the run's turns from the other."""

        def __init__(self, outputs: list[str]) -> None:
            super().__init__(outputs, n_ctx=N_CTX)
            self.summaries = ScriptedModel(
                [
                    completion_text("Pages so far.", content=f"Summary {i}: pages read, nothing missing.")
                    for i in range(30)
                ]
            )

        async def stream(self, request: ModelRequest):  # type: ignore[no-untyped-def,override]
            source = self.summaries if not request.tools else super()
            async for chunk in source.stream(request):
                yield chunk

    model = Summariser(long_run_script(30))
    policy = ContextPolicy(condense="summary", keep_turns=2, mask=False)
    agent = Agent(
        model, [page], max_steps=30, max_tokens_per_step=REPLY, transcript_dir=tmp_path, context=policy
    )
    events = [e async for e in agent.stream("Read the report.")]
    assert events[-1].stop_reason == "final_answer"  # type: ignore[union-attr]
    summaries = [e for e in events if isinstance(e, ContextCondensed) and e.strategy == "summary"]
    assert summaries
    assert summaries[0].hidden_steps is not None
    assert summaries[0].hidden_steps[0] == 1
    asked = model.summaries.requests[0]
    assert asked.tools == ()
    assert asked.max_tokens == policy.summary_tokens
    assert "Read the report." in asked.messages[1].content
    assert "Step 1:" in asked.messages[1].content
    if len(model.summaries.requests) > 1:  # a second summary builds on the first
        assert "Summary 0" in model.summaries.requests[1].messages[1].content
    after = next(r for r in model.requests if any(isinstance(m, NoteMessage) for m in r.messages))
    note = next(m for m in after.messages if isinstance(m, NoteMessage))
    assert note.kind == "context_summary"
    assert "Summary 0: pages read" in note.content
    assert after.messages[1].content == "Read the report."
    assert sum(isinstance(m, AssistantMessage) for m in after.messages) == 2  # the last turns, whole
    record = next(
        r for _, r in read_transcript(_transcript(tmp_path)).other_records if r.get("strategy") == "summary"
    )
    assert "Summary 0" in record["note"]
    assert record["tokens_after"] < record["tokens_before"]


async def test_a_failing_summary_falls_back_to_the_digest() -> None:
    class NoSummary(ScriptedModel):
        async def stream(self, request: ModelRequest):  # type: ignore[no-untyped-def,override]
            if not request.tools:
                from agent.models import ModelUnavailableError

                raise ModelUnavailableError("the server is away")
            async for chunk in super().stream(request):
                yield chunk

    model = NoSummary(long_run_script(30), n_ctx=N_CTX)
    agent = Agent(
        model,
        [page],
        max_steps=30,
        max_tokens_per_step=REPLY,
        context=ContextPolicy(condense="summary", mask=False),
    )
    events = [e async for e in agent.stream("Read the report.")]
    assert events[-1].stop_reason == "final_answer"  # type: ignore[union-attr]
    assert any(isinstance(e, ContextCondensed) and e.strategy == "digest" for e in events)


async def test_without_a_policy_the_history_goes_out_whole() -> None:
    model = ScriptedModel(long_run_script(8), n_ctx=N_CTX)
    result = await Agent(model, [page], max_steps=8, max_tokens_per_step=REPLY, context=None).run("Read.")
    assert result.stop_reason is StopReason.FINAL_ANSWER
    assert all(r.messages == tuple(result.messages[: len(r.messages)]) for r in model.requests)


def test_policy_checks() -> None:
    with pytest.raises(ValueError, match="keep_turns"):
        ContextPolicy(keep_turns=0)
    with pytest.raises(ValueError, match="condense"):
        ContextPolicy(condense="forget")  # type: ignore[arg-type]


async def test_replay_shows_each_condensation_before_its_step(tmp_path: Path) -> None:
    from agent.cli.replay import recorded_events
    from agent.cli.view import condensed_text

    model = ScriptedModel(long_run_script(60), n_ctx=N_CTX)
    live = [
        e
        async for e in Agent(
            model, [page], max_steps=60, max_tokens_per_step=REPLY, transcript_dir=tmp_path
        ).stream("Read the report.")
    ]
    replayed = recorded_events(read_transcript(_transcript(tmp_path)))
    kinds = [e.type for e in live if e.type in ("context_condensed", "step_end", "final")]
    assert kinds == [e.type for e in replayed if e.type in ("context_condensed", "step_end", "final")]
    condensed = [e for e in replayed if isinstance(e, ContextCondensed)]
    assert condensed == [e for e in live if isinstance(e, ContextCondensed)]
    digest = next(e for e in condensed if e.strategy == "digest")
    assert condensed_text(digest).startswith("context: steps 1-")
    assert "tokens" in condensed_text(condensed[0])
