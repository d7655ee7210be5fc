"""Prompt rendering cost per agent step: `prompts.render` against the same format run as a jinja template.

An agent re-renders the whole conversation before every model call, so the cost that matters is one render of
a growing history, summed over a run. The script builds a 50-step run (each step: reasoning, one tool call,
one result; five tools in the system turn), renders every prefix the loop would render, and prints the time
per step for both policies. Baseline in the same run: `render_chat_template` with prompts' own
`qwq_chat.jinja`, i.e. what rendering through a Hugging Face-style jinja template would cost instead.

Run: python benchmarks/render_speed.py [--steps 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import prompts

TEMPLATE = (Path(prompts.__file__).parent / "templates" / "qwq_chat.jinja").read_text(encoding="utf-8")


def tool(index: int) -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": f"tool_{index}",
            "description": "Look something up in a table that holds rows of data. " * 3,
            "parameters": {
                "type": "object",
                "properties": {"key": {"type": "string"}, "limit": {"type": "integer", "default": 3}},
                "required": ["key"],
            },
        },
    }


def history(steps: int) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": prompts.render_system_prompt("default")},
        {"role": "user", "content": "Collect the rows for items 0 to 49 and summarise them."},
    ]
    for step in range(steps):
        arguments = {"key": f"item-{step}", "limit": 3}
        thinking = "Let me look this up and check what the table says. " * 20
        call_text = json.dumps({"name": "tool_0", "arguments": arguments})
        messages.append(
            {
                "role": "assistant",
                "content": "",
                "thinking": thinking,
                "tool_calls": [{"name": "tool_0", "arguments": arguments, "id": str(step)}],
                "raw": f"{thinking}\n</think>\n\n<tool_call>\n{call_text}\n</tool_call>",
            }
        )
        messages.append({"role": "tool", "content": json.dumps({"key": f"item-{step}", "rows": [1, 2, 3]})})
    return messages


def per_step_ms(render_one: Callable[[list[dict[str, Any]]], str], messages: list[Any], repeat: int) -> float:
    """Best of `repeat` runs of rendering every prefix the loop renders, divided by the number of steps."""
    prefixes = [messages[:end] for end in range(2, len(messages) + 1, 2)]
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        for prefix in prefixes:
            render_one(prefix)
        best = min(best, time.perf_counter() - began)
    return best / len(prefixes) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    tools = [tool(i) for i in range(5)]
    messages = history(args.steps)
    final_chars = len(prompts.render(messages, tools, keep_thinking="current_task"))
    print(f"{args.steps} steps, 5 tools, final prompt {final_chars:,} characters (current_task)")
    for policy in ("none", "current_task"):
        ours = per_step_ms(
            lambda m, p=policy: prompts.render(m, tools, keep_thinking=p), messages, args.repeat
        )
        jinja = per_step_ms(
            lambda m, p=policy: prompts.render_chat_template(TEMPLATE, m, tools, keep_thinking=p),
            messages,
            args.repeat,
        )
        print(
            f"keep_thinking={policy:<12} render: {ours:7.3f} ms/step   jinja baseline: {jinja:7.3f} ms/step   "
            f"ratio {jinja / ours:4.1f}x"
        )


if __name__ == "__main__":
    main()
