"""Stream a run's events into your own UI: here, a minimal terminal printer (about 30 lines, no dependencies).

`agent.stream(task)` yields typed events as they happen: reasoning and answer text as the model writes it,
each tool call when it starts and when it has its result, the end of every step with its token counts, and
last a `FinalAnswer`. Swap the `print` calls for your web socket, GUI or log.

    python examples/stream_events.py models/qwq-32b-q4_k_m.gguf "What time is it in UTC? Then count to 3."
    python examples/stream_events.py http://127.0.0.1:8000/v1 "..."
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys

from agent import Agent
from agent.events import (
    ContentDelta,
    Event,
    FinalAnswer,
    MalformedCallEvent,
    StepEnd,
    ThinkingDelta,
    ToolCallFinished,
    ToolCallStarted,
)
from agent.models import LlamaCppModel, Model, OpenAICompatModel
from tools import tool

DIM, BOLD, RESET = ("\x1b[2m", "\x1b[1m", "\x1b[0m") if sys.stdout.isatty() else ("", "", "")


@tool
def utc_now() -> str:
    """The current date and time in UTC, ISO 8601."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def render(event: Event) -> None:
    """One event to the terminal. Deltas come as the model writes them: print them without newlines."""
    match event:
        case ThinkingDelta(text=text):
            print(f"{DIM}{text}{RESET}", end="", flush=True)
        case ContentDelta(text=text):
            print(text, end="", flush=True)
        case ToolCallStarted(step=step, call=call):
            print(f"\n{BOLD}[step {step}] calling {call.name}({call.arguments}){RESET}")
        case ToolCallFinished(call=call, result=result, duration_s=seconds):
            status = "error" if result.is_error else "ok"
            print(f"{BOLD}[{call.name} {status}, {seconds:.2f} s]{RESET} {result.content[:300]}")
        case MalformedCallEvent(error=error):
            print(f"\n[unreadable tool call: {error}]")
        case StepEnd(step=step, prompt_tokens=prompt, completion_tokens=completion, duration_s=seconds):
            print(
                f"\n{DIM}-- step {step}: {prompt} prompt + {completion} completion tokens, {seconds:.1f} s{RESET}"
            )
        case FinalAnswer(answer=answer, stop_reason=reason, steps=steps):
            print(f"\n{BOLD}answer:{RESET} {answer or '(none)'}")
            print(f"stop reason: {reason} after {steps} steps")


def make_model(spec: str, threads: int | None = None, seed: int | None = None) -> Model:
    """An http(s) URL is an OpenAI-compatible server; anything else a GGUF file run in-process."""
    if spec.startswith(("http://", "https://")):
        return OpenAICompatModel(base_url=spec, seed=seed)
    return LlamaCppModel(model_path=spec, n_ctx=16384, n_threads=threads, seed=seed)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("model", help="a GGUF file, or the base URL of an OpenAI-compatible server")
    parser.add_argument("task", nargs="?", default="What time is it in UTC right now?")
    parser.add_argument("--max-steps", type=int, default=6, help="model turns (default 6)")
    parser.add_argument("--threads", type=int, help="CPU threads for a GGUF model")
    parser.add_argument("--seed", type=int, help="sampling seed, for repeatable runs")
    parser.add_argument("--max-tokens", type=int, help="cap on generated tokens per turn")
    parser.add_argument("--thinking-budget", type=int, help="cap on reasoning tokens per turn")
    args = parser.parse_args()

    agent = Agent(
        make_model(args.model, args.threads, args.seed),
        [utc_now],
        max_steps=args.max_steps,
        max_tokens_per_step=args.max_tokens,
        thinking_budget=args.thinking_budget,
    )
    async for event in agent.stream(args.task):
        render(event)


if __name__ == "__main__":
    asyncio.run(main())
