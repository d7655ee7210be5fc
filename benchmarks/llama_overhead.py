"""Framework overhead in-process: tokens/s of an Agent run on LlamaCppModel against raw `Llama.generate`.

Both run on the same tiny random-weight Qwen2 GGUF (written here), the same prompt (the one the agent's first
step renders) and the same sampling (QwQ presets), from a cold KV cache, for the same number of tokens, on one
thread. The agent figure is end to end: render, prompt evaluation, the token loop, streaming to the event loop,
parsing, step bookkeeping. The baseline is the bare generator loop of llama-cpp-python. Target: >= 0.9 of raw.

Run: python benchmarks/llama_overhead.py [--tokens 256] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import prompts
from agent import Agent
from agent.messages import UserMessage
from agent.models import LlamaCppModel, ModelRequest
from agent.models.tiny import write_tiny_qwen2_gguf
from tools import tool


@tool
def lookup(key: str) -> str:
    """Look a key up.

    Args:
        key: what to look up
    """
    return key


TASK = "Look up the capital of France and explain how you found it."


def raw_generate(model: LlamaCppModel, prompt: str, tokens: int) -> tuple[float, float]:
    """(tokens per wall second, tokens per CPU second of the whole process)."""
    llm = model.llama
    assert llm is not None
    model.reset_cache()
    start, cpu = time.perf_counter(), time.process_time()
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    n = 0
    for _ in llm.generate(ids, temp=0.6, top_p=0.95, top_k=40, min_p=0.0, repeat_penalty=1.0):
        n += 1
        if n >= tokens:
            break
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def stream_only(model: LlamaCppModel, tokens: int) -> tuple[float, float]:
    """The backend alone: the same request consumed without the agent loop (no parsing, no events)."""
    model.reset_cache()
    request = ModelRequest(
        messages=[UserMessage(content=TASK)], tools=[lookup], tool_choice="none", max_tokens=tokens
    )

    async def consume() -> int:
        async for _ in model.stream(request):
            pass
        return model.last_stats.completion_tokens

    start, cpu = time.perf_counter(), time.process_time()
    n = asyncio.run(consume())
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def agent_run(model: LlamaCppModel, tokens: int) -> tuple[float, float]:
    model.reset_cache()
    agent = Agent(model=model, tools=[lookup], tool_choice="none", max_steps=1, max_tokens_per_step=tokens)
    start, cpu = time.perf_counter(), time.process_time()
    result = asyncio.run(agent.run(TASK))
    n = result.usage.completion_tokens
    return n / (time.perf_counter() - start), n / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_tiny_qwen2_gguf(Path(tmp) / "tiny.gguf")
        model = LlamaCppModel(path, n_ctx=4096, n_threads=1, n_gpu_layers=0, seed=1, max_tokens=args.tokens)
        model.load()
        prompt = prompts.render([UserMessage(content=TASK)], [lookup])
        agent_run(model, 16)  # warm-up: vocabulary scan, sampler set-up
        raw, ours, alone = [], [], []
        for _ in range(args.repeat):  # interleaved, so machine load hits all alike
            raw.append(raw_generate(model, prompt, args.tokens))
            ours.append(agent_run(model, args.tokens))
            alone.append(stream_only(model, args.tokens))
        model.close()
    print(f"tokens per run: {args.tokens}, runs: {args.repeat}, one thread, cold KV cache each run")
    print("wall clock is disturbed by other load on a shared machine: best run, and CPU time of the process")
    for label, pick in (("wall, best run", 0), ("CPU time, median", 1)):
        if pick == 0:
            r, a, b = max(x[0] for x in raw), max(x[0] for x in ours), max(x[0] for x in alone)
        else:
            r = statistics.median(x[1] for x in raw)
            a = statistics.median(x[1] for x in ours)
            b = statistics.median(x[1] for x in alone)
        print(f"[{label}]")
        print(f"  raw Llama.generate          : {r:8.1f} tokens/s")
        print(f"  LlamaCppModel.stream alone  : {b:8.1f} tokens/s  ratio {b / r:.3f}")
        print(f"  Agent + LlamaCppModel       : {a:8.1f} tokens/s  ratio {a / r:.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
