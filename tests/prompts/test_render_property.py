"""Differential properties: `prompts.render` against an independent implementation of the same format.

The second implementation is `prompts/templates/qwq_chat.jinja`, a chat template written separately from the
format description and run through `render_chat_template` (the HF-compatible environment). Random
conversations cover: system or not, tools or not, parallel calls, consecutive tool results, unicode and
markup characters, nested arguments, reasoning given inline, apart or not at all, and both policies.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import prompts
from prompts import render, render_chat_template

QWQ_TEMPLATE = (Path(prompts.__file__).parent / "templates" / "qwq_chat.jinja").read_text(encoding="utf-8")

FRAGMENTS = [
    "a",
    "Zürich",
    "東京",
    "😀",
    "\n",
    "\n\n",
    "</think>",
    "<think>",
    "<b>&'\"",
    " ",
    "\\",
    "{}",
    "<|im_end|>",
]
texts = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=4), max_size=6).map("".join)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
argument_objects = st.dictionaries(texts, json_values, max_size=4)


@st.composite
def arguments(draw: st.DrawFn) -> Any:
    value = draw(argument_objects)
    form = draw(st.sampled_from(["dict", "json", "compact-json", "empty"]))
    if form == "json":
        return json.dumps(value)
    if form == "compact-json":
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if form == "empty":
        return draw(st.sampled_from(["", None, {}]))
    return value


@st.composite
def tool_calls(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(["get_weather", "search.web", "run-code", "ß"]) | texts)
    if draw(st.booleans()):
        return {
            "id": draw(texts),
            "type": "function",
            "function": {"name": name, "arguments": draw(arguments())},
        }
    return {"name": name, "arguments": draw(argument_objects), "id": ""}


@st.composite
def assistant_messages(draw: st.DrawFn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": draw(st.none() | texts)}
    thinking_key = draw(st.sampled_from([None, "thinking", "reasoning_content", "reasoning"]))
    if thinking_key is not None:
        message[thinking_key] = draw(texts)
    message["tool_calls"] = draw(st.lists(tool_calls(), max_size=3))
    if draw(st.booleans()):
        message["raw"] = draw(texts)
    return message


def plain(role: str) -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(lambda content: {"role": role, "content": content}, texts)


any_message = plain("user") | plain("system") | plain("tool") | assistant_messages()


@st.composite
def conversations(draw: st.DrawFn) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append(draw(plain("system")))
    # Mostly agent-shaped exchanges (user, calls, results, answer), sometimes arbitrary role sequences.
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.integers(0, 4)) == 0:
            messages.extend(draw(st.lists(any_message, max_size=3)))
            continue
        messages.append(draw(plain("user")))
        for _ in range(draw(st.integers(0, 3))):
            turn = draw(assistant_messages())
            messages.append(turn)
            messages.extend({"role": "tool", "content": draw(texts)} for _ in turn["tool_calls"])
    return messages


@st.composite
def tool_lists(draw: st.DrawFn) -> list[Any] | None:
    if draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from([None, []]))
    result: list[Any] = []
    for _ in range(draw(st.integers(1, 3))):
        function = {
            "name": draw(texts),
            "description": draw(texts),
            "parameters": {
                "type": "object",
                "properties": draw(st.dictionaries(texts, json_values, max_size=2)),
            },
        }
        result.append(draw(st.sampled_from([function, {"type": "function", "function": function}])))
    return result


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    messages=conversations(),
    tools=tool_lists(),
    add_generation_prompt=st.booleans(),
    keep_thinking=st.sampled_from(["none", "current_task"]),
)
def test_render_equals_the_independent_jinja_template(
    messages: list[dict[str, Any]], tools: list[Any] | None, add_generation_prompt: bool, keep_thinking: Any
) -> None:
    expected = render_chat_template(
        QWQ_TEMPLATE,
        messages,
        tools,
        add_generation_prompt=add_generation_prompt,
        keep_thinking=keep_thinking,
    )
    assert render(
        messages, tools, add_generation_prompt=add_generation_prompt, keep_thinking=keep_thinking
    ) == (expected)


@st.composite
def agent_runs(draw: st.DrawFn) -> list[dict[str, Any]]:
    """A run inside one task: earlier history, the task, then steps that each carry their generated `raw`."""
    messages = draw(st.lists(any_message, max_size=3))
    messages.append(draw(plain("user")))
    for _ in range(draw(st.integers(1, 4))):
        turn = draw(assistant_messages())
        turn["raw"] = draw(texts)
        messages.append(turn)
        messages.extend({"role": "tool", "content": draw(texts)} for _ in range(draw(st.integers(0, 2))))
    return messages


@settings(max_examples=100, deadline=None)
@given(messages=agent_runs(), tools=tool_lists())
def test_current_task_prompts_only_ever_grow_by_the_generated_text(
    messages: list[dict[str, Any]], tools: list[Any] | None
) -> None:
    # The KV-cache promise: each step's prompt is the previous prompt + generated text + new observations.
    for index, message in enumerate(messages):
        if message["role"] != "assistant" or index <= max(
            i for i, m in enumerate(messages) if m["role"] == "user"
        ):
            continue
        before = render(messages[:index], tools, keep_thinking="current_task")
        after = render(messages, tools, keep_thinking="current_task", add_generation_prompt=False)
        assert after.startswith(before + message["raw"] + "<|im_end|>\n")


@settings(max_examples=100, deadline=None)
@given(messages=conversations(), tools=tool_lists())
def test_generation_prompt_is_the_only_difference(
    messages: list[dict[str, Any]], tools: list[Any] | None
) -> None:
    with_prompt = render(messages, tools)
    without = render(messages, tools, add_generation_prompt=False)
    assert with_prompt == without + "<|im_start|>assistant\n<think>\n"
