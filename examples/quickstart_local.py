"""Quickstart: QwQ-32B in-process (llama-cpp-python) with a Python tool that runs in the Docker sandbox.

Needs the `llama` extra, a running Docker engine and the sandbox image (`qwq-agent sandbox build`, or let
`qwq-agent run` build it once). Get the GGUF once, e.g.:

    hf download Qwen/QwQ-32B-GGUF qwq-32b-q4_k_m.gguf --local-dir models

Then:

    python examples/quickstart_local.py models/qwq-32b-q4_k_m.gguf "How many primes are below 100,000?"

The model's reasoning is not shown here (see stream_events.py for that); the script prints the answer, why
the run stopped, the number of steps and the tokens used.
"""

from __future__ import annotations

import argparse
import asyncio

from agent import Agent
from agent.models import LlamaCppModel
from sandboxes import DockerSandbox
from tools.code import code_tools


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("gguf", help="path to a GGUF file, e.g. qwq-32b-q4_k_m.gguf")
    parser.add_argument(
        "task", nargs="?", default="How many primes are there below 100,000? Check it with code."
    )
    parser.add_argument("--max-steps", type=int, default=10, help="model turns (default 10)")
    parser.add_argument("--n-ctx", type=int, default=16384, help="context size in tokens (default 16384)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: llama.cpp's choice)")
    parser.add_argument("--seed", type=int, help="sampling seed, for repeatable runs")
    parser.add_argument("--max-tokens", type=int, help="cap on generated tokens per turn")
    parser.add_argument("--thinking-budget", type=int, help="cap on reasoning tokens per turn")
    parser.add_argument("--tool-choice", default="auto", help="auto, required, none, or a tool name")
    args = parser.parse_args()

    # Nothing is loaded until the first turn; the loaded model keeps its KV cache from step to step.
    model = LlamaCppModel(model_path=args.gguf, n_ctx=args.n_ctx, n_threads=args.threads, seed=args.seed)
    try:
        # One hardened container for the whole run (no network, read-only root, limits); removed on exit.
        async with DockerSandbox() as sandbox:
            python = [t for t in code_tools(sandbox) if t.name == "python"]
            agent = Agent(
                model,
                python,
                max_steps=args.max_steps,
                max_tokens_per_step=args.max_tokens,
                thinking_budget=args.thinking_budget,
                tool_choice=args.tool_choice,
            )
            result = await agent.run(args.task)
    finally:
        model.close()

    print("answer:", result.answer or "(none)")
    print("stop reason:", result.stop_reason.value)
    print(f"steps: {result.steps}, tool calls: {result.tool_calls}")
    print(f"tokens: {result.usage.prompt_tokens} prompt, {result.usage.completion_tokens} completion")


if __name__ == "__main__":
    asyncio.run(main())
