"""Tools for models whose chat template has no tool support: the Hermes-style `<tool_call>` convention.

Qwen-Agent's "nous" function-calling prompt is the reference pattern: the tool list and the calling
convention go into the system message, the assistant's calls are written into its turns as `<tool_call>`
blocks, and results come back in a user turn as `<tool_response>` blocks. The wording the model reads is
`templates/formats/tool_use.j2`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from prompts._json import to_json
from prompts._normalize import Turn
from prompts.templating import render_format

__all__ = ["fold_tools"]


def fold_tools(turns: Sequence[Turn], tools: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages a tool-less template should see so that the model still knows and uses the tools."""
    guide = render_format("tool_use", tools=[to_json(t) for t in tools]) if tools else ""
    out: list[dict[str, Any]] = []
    results: list[str] = []

    def flush_results() -> None:
        if results:
            out.append({"role": "user", "content": "\n".join(results)})
            results.clear()

    for index, turn in enumerate(turns):
        if turn.role == "tool":
            results.append(f"<tool_response>\n{turn.content}\n</tool_response>")
            continue
        flush_results()
        content = turn.original
        if turn.role == "system" and index == 0 and guide:
            content = f"{content}\n\n{guide}" if content else guide
        elif turn.role == "assistant" and turn.tool_calls:
            blocks = [
                f"<tool_call>\n{to_json({'name': call.name, 'arguments': call.arguments})}\n</tool_call>"
                for call in turn.tool_calls
            ]
            content = "\n".join([content, *blocks] if content else blocks)
        out.append({"role": turn.role, "content": content})
    flush_results()
    if guide and (not turns or turns[0].role != "system"):
        out.insert(0, {"role": "system", "content": guide})
    return out
