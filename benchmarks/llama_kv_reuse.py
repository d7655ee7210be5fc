"""KV-cache reuse in-process: prompt tokens evaluated per step against the minimum each policy allows.

A 10-step Agent run on LlamaCppModel with the tiny random-weight GGUF (every step makes a grammar-constrained
call, so the run really goes 10 steps), once per `keep_thinking` policy. For each step after the first:

* evaluated  - prompt tokens llama.cpp actually evaluated (the rest came from the KV cache);
* minimum    - tokens of the new prompt's text after its longest common prefix with what the cache holds
               (the previous prompt + the text generated for it): nothing less can be evaluated. With
               "current_task" that is just what is new since the previous step (the model's end-of-turn token,
               the observations, the next generation prompt); with "none" the dropped reasoning forces
               re-evaluation from the previous turn on;
* generate() - what llama-cpp-python's own `Llama.generate` prefix match on token ids would evaluate (the
               baseline): sampled tokens are often not what the tokenizer makes of the same text, so it loses
               the cache at the first such token.

Target: evaluated within 5% of the minimum. Run: python benchmarks/llama_kv_reuse.py [--steps 10]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import prompts
from agent import Agent
from agent.models import LlamaCppModel, ModelChunk, ModelRequest
from agent.models.llamacpp import LlamaStats
from agent.models.tiny import write_tiny_qwen2_gguf
from tools import tool


@tool
def record(note: str, count: int = 1) -> str:
    """Write a note down.

    Args:
        note: the note
        count: how many copies
    """
    return f"noted {note!r} x{count}"


class Recorder:
    """Passes calls through and keeps each request with the backend's statistics and cache contents."""

    def __init__(self, inner: LlamaCppModel) -> None:
        self.inner = inner
        self.steps: list[tuple[ModelRequest, LlamaStats, list[int]]] = []

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        async for chunk in self.inner.stream(request):
            yield chunk
        llm = self.inner.llama
        assert llm is not None
        self.steps.append((request, self.inner.last_stats, [int(t) for t in llm._input_ids]))


def common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def common_ids(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def run_policy(path: Path, policy: Any, steps: int) -> None:
    model = LlamaCppModel(
        path, n_ctx=16384, n_threads=1, n_gpu_layers=0, seed=5, max_tokens=160, max_string_length=16
    )
    recorder = Recorder(model)
    agent = Agent(
        model=recorder,
        tools=[record],
        tool_choice="required",
        max_steps=steps,
        thinking_budget=24,
        keep_thinking=policy,
    )
    result = asyncio.run(agent.run("Write ten notes, one per step."))
    llm = model.llama
    assert llm is not None
    print(f"\nkeep_thinking={policy!r}: {result.steps} steps, stop: {result.stop_reason}")
    print(f"{'step':>4} {'prompt':>7} {'evaluated':>9} {'minimum':>8} {'generate()':>10}")
    total_eval = total_min = total_gen = 0
    previous_text = ""
    previous_ids: list[int] = []
    for i, (request, stats, cache_ids) in enumerate(recorder.steps):
        prompt = prompts.render(request.messages, list(request.tools), keep_thinking=policy)
        ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
        if i:
            shared = common_prefix(prompt, previous_text)
            minimum = (
                len(llm.tokenize(prompt[shared:].encode(), add_bos=False, special=True))
                if shared < len(prompt)
                else 1
            )
            by_generate = len(ids) - min(common_ids(ids, previous_ids), len(ids) - 1)
            total_eval += stats.evaluated_tokens
            total_min += minimum
            total_gen += by_generate
            print(
                f"{i + 1:>4} {stats.prompt_tokens:>7} {stats.evaluated_tokens:>9} {minimum:>8} {by_generate:>10}"
            )
        else:
            print(
                f"{i + 1:>4} {stats.prompt_tokens:>7} {stats.evaluated_tokens:>9} {'(cold)':>8} {'(cold)':>10}"
            )
        previous_text = prompt + stats.texts[0]
        previous_ids = cache_ids
    model.close()
    if total_min:
        print(
            f"steps 2..{len(recorder.steps)}: evaluated {total_eval}, minimum {total_min}, "
            f"ratio {total_eval / total_min:.3f} (target <= 1.05); "
            f"Llama.generate's id prefix match would evaluate {total_gen} ({total_gen / total_min:.2f}x the minimum)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_tiny_qwen2_gguf(Path(tmp) / "tiny.gguf")
        for policy in ("current_task", "none"):
            run_policy(path, policy, args.steps)


if __name__ == "__main__":
    main()
