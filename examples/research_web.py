"""A research task with the `web_fetch` tool: the model reads web pages (as Markdown) and answers with sources.

    python examples/research_web.py models/qwq-32b-q4_k_m.gguf \\
        "What does PEP 8 say about the maximum line length?" --url https://peps.python.org/pep-0008/

    python examples/research_web.py http://127.0.0.1:8000/v1 "..."        # an OpenAI-compatible server

`web_fetch` runs in this process, not in the sandbox, and refuses loopback and private addresses (cloud
metadata included) so a model-chosen URL cannot reach your network; `--allow-host` lifts that for one host you
trust, e.g. an intranet wiki. Long pages come in pages of 8,000 characters that the model asks for one by one.
"""

from __future__ import annotations

import argparse
import asyncio

from agent import Agent
from agent.events import ToolCallFinished, ToolCallStarted
from agent.models import LlamaCppModel, Model, OpenAICompatModel
from tools.web import web_fetch_tool


def make_model(spec: str, threads: int | None = None, seed: int | None = None) -> Model:
    """An http(s) URL is an OpenAI-compatible server; anything else a GGUF file run in-process."""
    if spec.startswith(("http://", "https://")):
        return OpenAICompatModel(base_url=spec, seed=seed)
    return LlamaCppModel(model_path=spec, n_ctx=16384, n_threads=threads, seed=seed)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("model", help="a GGUF file, or the base URL of an OpenAI-compatible server")
    parser.add_argument("question")
    parser.add_argument("--url", action="append", default=[], help="a page to start from (repeatable)")
    parser.add_argument(
        "--allow-host", action="append", default=[], help="a private host web_fetch may reach"
    )
    parser.add_argument("--max-steps", type=int, default=12, help="model turns (default 12)")
    parser.add_argument("--threads", type=int, help="CPU threads for a GGUF model")
    parser.add_argument("--seed", type=int, help="sampling seed, for repeatable runs")
    parser.add_argument("--max-tokens", type=int, help="cap on generated tokens per turn")
    parser.add_argument("--thinking-budget", type=int, help="cap on reasoning tokens per turn")
    args = parser.parse_args()

    task = args.question
    if args.url:
        task += "\n\nStart from: " + ", ".join(args.url)
    task += "\n\nAnswer from what the pages say, and list the URLs you used."

    agent = Agent(
        make_model(args.model, args.threads, args.seed),
        [web_fetch_tool(allowed_hosts=args.allow_host)],
        max_steps=args.max_steps,
        max_tokens_per_step=args.max_tokens,
        thinking_budget=args.thinking_budget,
        # QwQ reads better when it keeps its notes on earlier pages within the task.
        keep_thinking="current_task",
    )
    read: list[str] = []
    run = agent.iter(task)
    async for event in run:
        if isinstance(event, ToolCallStarted):
            print(f"fetching {event.call.arguments.get('url')} (page {event.call.arguments.get('page', 1)})")
        elif isinstance(event, ToolCallFinished):
            first_line = event.result.content.splitlines()[0] if event.result.content else ""
            print(f"  {'failed' if event.result.is_error else 'read'}: {first_line[:120]}")
            if not event.result.is_error:
                read.append(str(event.call.arguments.get("url")))

    result = run.result
    assert result is not None
    print("answer:", result.answer or "(none)")
    print("pages read:", ", ".join(dict.fromkeys(read)) or "(none)")
    print("stop reason:", result.stop_reason.value)
    print(f"steps: {result.steps}, tool calls: {result.tool_calls}")


if __name__ == "__main__":
    asyncio.run(main())
