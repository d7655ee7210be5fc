"""Loop overhead per step: render + parse + validate + dispatch, with a model that costs nothing.

A 50-step run on a scripted model that renders the real QwQ prompt for every request (as the in-process and
completions backends do) and then replays a fixed completion with one tool call. The figure is wall time per
step minus nothing: everything the framework does between two model calls is in it. Baseline in the same run:
the same number of bare `prompts.render` + `parse_completion` calls, to show what share the loop itself adds.

Run: python benchmarks/loop_overhead.py [--steps 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator

import prompts
from agent import Agent
from agent.models import ModelChunk, ModelRequest, ScriptedModel, Usage
from agent.parsing import parse_completion
from tools import tool


@tool
def lookup(key: str, limit: int = 3) -> str:
    """Look a key up in a small table.

    Args:
        key: what to look up
        limit: how many rows to return
    """
    return json.dumps({"key": key, "rows": list(range(limit))})


def completion(step: int) -> str:
    call = json.dumps({"name": "lookup", "arguments": {"key": f"item-{step}", "limit": 3}})
    reasoning = "Let me look this up. " * 20
    return f"{reasoning}\n</think>\n\n<tool_call>\n{call}\n</tool_call>"


class RenderingScriptedModel(ScriptedModel):
    """ScriptedModel that also renders the prompt, as a real backend must before it generates."""

    def __init__(self, outputs: list[str]) -> None:
        super().__init__(outputs, chunk_size=4)
        self.prompt_chars = 0

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        text = prompts.render(
            list(request.messages), list(request.tools), keep_thinking=request.keep_thinking
        )
        self.prompt_chars = len(text)
        async for chunk in super().stream(request):
            yield chunk if chunk.usage is None else ModelChunk(usage=Usage(), finish_reason="stop")


async def one_run(steps: int) -> tuple[float, int]:
    outputs = [completion(i) for i in range(steps - 1)] + ["done\n</think>\n\nfinished"]
    model = RenderingScriptedModel(outputs)
    agent = Agent(model, tools=[lookup], max_steps=steps, stuck_after=steps + 1)
    began = time.perf_counter()
    result = await agent.run("look up every item")
    elapsed = time.perf_counter() - began
    assert result.steps == steps, result.stop_reason
    return elapsed, model.prompt_chars


def baseline(steps: int, prompt_chars: int) -> float:
    """Render a prompt of the final size and parse one completion, `steps` times, with no loop around it."""
    messages = [{"role": "user", "content": "x" * prompt_chars}]
    text = completion(0)
    began = time.perf_counter()
    for _ in range(steps):
        prompts.render(messages, [lookup])
        parse_completion(text)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(one_run(5))  # warm imports and caches
    runs = [asyncio.run(one_run(args.steps)) for _ in range(args.repeat)]
    per_step_ms = [elapsed / args.steps * 1000 for elapsed, _ in runs]
    final_prompt = runs[-1][1]
    base_ms = [baseline(args.steps, final_prompt) / args.steps * 1000 for _ in range(args.repeat)]
    median = statistics.median(per_step_ms)
    print(f"steps per run: {args.steps}, runs: {args.repeat}, final prompt: {final_prompt:,} characters")
    print(
        f"loop per step (render+stream+parse+validate+dispatch+record): median {median:.3f} ms, "
        f"min {min(per_step_ms):.3f} ms, max {max(per_step_ms):.3f} ms"
    )
    print(
        f"baseline per step (render of a same-size prompt + parse, no loop): "
        f"median {statistics.median(base_ms):.3f} ms"
    )
    print(f"target < 2 ms per step: {'met' if median < 2 else 'NOT met'}")


if __name__ == "__main__":
    main()
