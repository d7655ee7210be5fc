"""What keeping a long run inside the context costs: prefill per step and KV reuse, masking against none.

Part 1 — KV cache. A 60-step scripted run (each step reads a 3 kB page, `agent.testing.long_run_script`)
on the tiny random-weight GGUF in-process, its n_ctx large enough for the whole unmasked run. Every prompt is
really evaluated (`ScriptedModel(prefill=...)`), so llama.cpp's own counts are reported per step:

* prefill  - prompt tokens evaluated (the rest came from the KV cache);
* reuse    - the share of prompt tokens the cache served.

Runs: no condensing (`context=None`), and the default policy made to condense within a smaller budget
(`ContextPolicy(n_ctx=B)`, the model's context unchanged). Target: masking costs at most 1.3x the prefill
of the unmasked run. Masking rewrites the history from the first newly hidden result on, so its cost is
about `keep_turns` turns re-evaluated per condensation; blocks make condensations rare when the budget
leaves room for several turns, and frequent when it does not (hence several budgets).

Part 2 — the largest run that finishes in n_ctx=8192, counted exactly with Qwen2's tokenizer (no model
needed): the history sent whole, masking only, and the default (masking, then a digest of the middle).

Run: python benchmarks/context.py [--steps 60] [--budgets 8192,16384,8192:2] [--skip-kv] [--skip-largest]
(a budget `B:K` also sets `keep_turns=K`; `--skip-baseline` leaves out the unmasked run, e.g. to add budgets).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prompts
from agent import Agent
from agent.context import ContextPolicy
from agent.models import LlamaCppModel, ModelChunk, ModelRequest, ScriptedModel
from agent.models.tiny import qwen_tokenizer_json_path, write_tiny_qwen2_gguf
from agent.testing import long_run_script, page

REPLY = 512
TASK = "Read the report, page by page, then say what it is about."


@dataclass
class Recorder:
    """Passes requests through and keeps what the backend reported for each."""

    inner: ScriptedModel
    steps: list[tuple[int, int, int]] = field(default_factory=list)  # prompt, cached, evaluated

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        async for chunk in self.inner.stream(request):
            if chunk.usage is not None:
                evaluated = chunk.extra.get("evaluated_prompt_tokens", 0)
                self.steps.append(
                    (
                        chunk.usage.prompt_tokens,
                        chunk.usage.cached_tokens,
                        evaluated if isinstance(evaluated, int) else 0,
                    )
                )
            yield chunk

    async def context_window(self) -> int | None:
        return await self.inner.context_window()

    async def count_prompt_tokens(self, request: ModelRequest) -> int | None:
        return await self.inner.count_prompt_tokens(request)


async def kv_run(llama: LlamaCppModel, steps: int, policy: ContextPolicy | None) -> dict[str, Any]:
    llama.reset_cache()
    model = Recorder(ScriptedModel(long_run_script(steps), prefill=llama))
    agent = Agent(model, [page], max_steps=steps, max_tokens_per_step=REPLY, context=policy)  # type: ignore[arg-type]
    started = time.monotonic()
    condensations = 0
    run = agent.iter(TASK)
    async for event in run:
        condensations += event.type == "context_condensed"
    assert run.result is not None
    prompt = sum(p for p, _, _ in model.steps)
    cached = sum(c for _, c, _ in model.steps)
    evaluated = sum(e for _, _, e in model.steps)
    return {
        "stop": run.result.stop_reason.value,
        "steps": run.result.steps,
        "largest prompt": max(p for p, _, _ in model.steps),
        "prefill total": evaluated,
        "prefill/step": evaluated / len(model.steps),
        "reuse": cached / prompt if prompt else 0.0,
        "condensations": condensations,
        "seconds": time.monotonic() - started,
    }


class Counted(ScriptedModel):
    """A script whose prompts are counted exactly with Qwen2's tokenizer, inside a context of `n_ctx`."""

    def __init__(self, outputs: list[str], n_ctx: int) -> None:
        super().__init__(outputs, n_ctx=n_ctx)
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(qwen_tokenizer_json_path()))

    async def count_prompt_tokens(self, request: ModelRequest) -> int | None:
        text = prompts.render(request.messages, request.tools, keep_thinking=request.keep_thinking)
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)


async def largest_run(policy: ContextPolicy, limit: int, n_ctx: int = 8192) -> tuple[int, str]:
    model = Counted(long_run_script(limit), n_ctx)
    result = await Agent(model, [page], max_steps=limit, max_tokens_per_step=REPLY, context=policy).run(TASK)
    return result.steps, result.stop_reason.value


def table(rows: dict[str, dict[str, Any]]) -> None:
    columns = list(next(iter(rows.values())))
    print(f"{'run':28}" + "".join(f"{c:>16}" for c in columns))
    for name, row in rows.items():
        cells = [f"{v:>16.2f}" if isinstance(v, float) else f"{v!s:>16}" for v in row.values()]
        print(f"{name:28}" + "".join(cells))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument(
        "--budgets", default="8192,16384", help="condensing budgets (tokens), comma-separated"
    )
    parser.add_argument("--n-ctx", type=int, default=65536, help="the model's context for part 1")
    parser.add_argument("--skip-kv", action="store_true", help="only part 2 (no model)")
    parser.add_argument("--skip-largest", action="store_true", help="only part 1")
    parser.add_argument("--skip-baseline", action="store_true", help="part 1 without the unmasked run")
    args = parser.parse_args()
    if not args.skip_kv:
        with tempfile.TemporaryDirectory() as folder:
            path = write_tiny_qwen2_gguf(Path(folder) / "tiny.gguf", seed=0)
            llama = LlamaCppModel(
                path, n_ctx=args.n_ctx, n_threads=1, n_gpu_layers=0, seed=1, max_tokens=REPLY
            )
            try:
                rows = {} if args.skip_baseline else {"no condensing": await kv_run(llama, args.steps, None)}
                for spec in args.budgets.split(","):
                    budget, _, keep = spec.partition(":")
                    policy = ContextPolicy(n_ctx=int(budget), keep_turns=int(keep or 3))
                    rows[f"budget {budget}, keep {policy.keep_turns}"] = await kv_run(
                        llama, args.steps, policy
                    )
            finally:
                llama.close()
        print(f"Part 1: {args.steps} steps of 3 kB pages, tiny GGUF in-process, n_ctx={args.n_ctx}")
        table(rows)
        base = rows["no condensing"]["prefill total"] if "no condensing" in rows else None
        for name, row in rows.items():
            if name != "no condensing" and base:
                print(f"{name}: prefill {row['prefill total'] / base:.2f}x the unmasked run (target <= 1.3x)")
    if args.skip_largest:
        return
    print("\nPart 2: the largest run that finishes in n_ctx=8192 (3 kB pages, 512 tokens kept for the reply)")
    for name, policy, limit in (
        ("history sent whole", ContextPolicy(mask=False, condense="none"), 100),
        ("masking only", ContextPolicy(condense="none"), 400),
        ("default (mask, then digest)", ContextPolicy(), 400),
    ):
        steps, stop = await largest_run(policy, limit)
        outcome = f"finished all {steps} steps" if stop == "final_answer" else f"{steps} steps, then {stop}"
        print(f"  {name:30} {outcome}")


if __name__ == "__main__":
    asyncio.run(main())
