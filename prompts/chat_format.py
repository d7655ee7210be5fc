"""The QwQ-32B chat format, written in plain Python (docs/chat-format.md).

`render` gives, byte for byte, what QwQ-32B's own Hugging Face chat template gives for the same
conversation. It is plain string building rather than a jinja template so that it is fast (it runs once per
step of every agent run) and so that `prompts/templates/qwq_chat.jinja`, written separately from the same
description, can serve as an independent second implementation in the tests.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from prompts._json import to_json
from prompts._normalize import Call, Turn, normalize_messages, normalize_tools

__all__ = ["KeepThinking", "render"]

KeepThinking = Literal["none", "current_task"]

_TOOLS_HEAD = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_TAIL = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": '
    "<args-json-object>}\n</tool_call><|im_end|>\n"
)
_GENERATION_PROMPT = "<|im_start|>assistant\n<think>\n"


def render(
    messages: Iterable[Any],
    tools: Iterable[Any] | None = None,
    *,
    add_generation_prompt: bool = True,
    keep_thinking: KeepThinking = "none",
) -> str:
    """Render a conversation as the QwQ-32B prompt text.

    `messages` are the project's typed messages (anything with `model_dump()`) or OpenAI-style dicts:
    `content` may be None, `tool_calls` may carry arguments as a JSON string (decoded, never encoded twice),
    reasoning may come as `thinking`, `reasoning_content` or `reasoning`. `tools` are objects with
    `to_openai()` or OpenAI tool dicts (a bare `{"name", "description", "parameters"}` is wrapped).

    `keep_thinking="none"` is the official format: reasoning of every assistant turn but the last is dropped.
    That throws away the model's own reasoning between the steps of one task, and it rewrites earlier text,
    so a server cannot reuse its KV cache. `"current_task"` keeps the reasoning of assistant turns after
    the last user message. Such a turn is written as `<|im_start|>assistant\\n<think>\\n` + `raw` +
    `<|im_end|>\\n` when the message carries `raw` (the exact text generated after the prompt's
    `<think>\\n`): each prompt is then the previous prompt plus the generated text plus the new
    observations, a pure extension. Without `raw`, the turn is `<think>\\n` + reasoning +
    `\\n</think>\\n\\n` + content, with tool calls appended as the official template does; that is close
    to, but not always exactly, what was generated.

    Unknown roles and malformed messages raise `ValueError`/`TypeError` naming the message. An empty
    conversation, which the official template cannot render, gives just the generation prompt.
    """
    if keep_thinking not in ("none", "current_task"):
        raise ValueError(f"keep_thinking must be 'none' or 'current_task'; got {keep_thinking!r}")
    turns = normalize_messages(messages)
    tool_dicts = normalize_tools(tools)
    out: list[str] = []
    first_is_system = bool(turns) and turns[0].role == "system"

    if tool_dicts:
        # With tools there is always a system turn, even with no system message: its text is then empty.
        out.append("<|im_start|>system\n")
        if first_is_system:
            out.append(turns[0].content)
        out.append(_TOOLS_HEAD)
        out.extend("\n" + to_json(tool) for tool in tool_dicts)
        out.append(_TOOLS_TAIL)
    elif first_is_system:
        out.append(f"<|im_start|>system\n{turns[0].content}<|im_end|>\n")

    last_user = max((i for i, turn in enumerate(turns) if turn.role == "user"), default=-1)
    last = len(turns) - 1
    for i, turn in enumerate(turns):
        if turn.role == "user" or (turn.role == "system" and i > 0):
            out.append(f"<|im_start|>{turn.role}\n{turn.content}<|im_end|>\n")
        elif turn.role == "assistant":
            keep = keep_thinking == "current_task" and i > last_user
            out.append(_assistant(turn, is_last=i == last, keep=keep))
        elif turn.role == "tool":
            # A run of results shares one user turn; the run is opened by its first and closed by its last.
            if i == 0 or turns[i - 1].role != "tool":
                out.append("<|im_start|>user")
            out.append(f"\n<tool_response>\n{turn.content}\n</tool_response>")
            if i == last or turns[i + 1].role != "tool":
                out.append("<|im_end|>\n")
        # The first system message was written above, in the system turn.

    if add_generation_prompt:
        out.append(_GENERATION_PROMPT)
    return "".join(out)


def _assistant(turn: Turn, *, is_last: bool, keep: bool) -> str:
    if keep and turn.raw is not None:
        return f"{_GENERATION_PROMPT}{turn.raw}<|im_end|>\n"
    original = turn.original
    if keep:
        shown = _reopen_think(original)
    elif is_last:
        # The official template leaves the final assistant message alone (a prefill being continued).
        shown = original
    else:
        shown = original.split("</think>")[-1].lstrip("\n")
    if not turn.tool_calls:
        return f"<|im_start|>assistant\n{shown}<|im_end|>\n"
    # The newline and content are written only if the *original* content was non-empty: a turn whose
    # content was only reasoning leaves an empty line once that is stripped. The model saw this quirk.
    head = f"<|im_start|>assistant\n{shown}" if original else "<|im_start|>assistant"
    return head + "".join(_call(call) for call in turn.tool_calls) + "<|im_end|>\n"


def _call(call: Call) -> str:
    # The name is pasted in unescaped, exactly as the official template does.
    return f'\n<tool_call>\n{{"name": "{call.name}", "arguments": {to_json(call.arguments)}}}\n</tool_call>'


def _reopen_think(original: str) -> str:
    """Give kept reasoning back the `<think>\\n` that the generation prompt, not the model, had written.

    Content holding a `</think>` without its opening tag is reasoning that followed the prompt's `<think>\\n`;
    content without `</think>` (or already opened) is shown as it is.
    """
    if "</think>" in original and not original.startswith("<think>"):
        return "<think>\n" + original
    return original
