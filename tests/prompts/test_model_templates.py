"""The prompt a model receives equals a plain Jinja rendering of that model's own chat template.

`ChatFormat.render` (what `LlamaCppModel.render_prompt` and every generation use) gets the framework's typed
history: `SystemMessage`, `AssistantMessage` with `ToolCall`s and reasoning, `ToolMessage`, `NoteMessage`,
and `Tool` objects. The reference gets what a Hugging Face user would hand `apply_chat_template`: OpenAI
message dicts (reasoning in `reasoning_content`, arguments as objects) and OpenAI tool dicts, rendered by a
plain `jinja2.Environment` set up as transformers sets it up (trim_blocks, lstrip_blocks, loop controls, a
`tojson` that keeps key order and non-ASCII). The two must agree to the character, for:

* Qwen2.5-Coder's template, read from the real GGUFs' metadata (it renders tools itself; no `<think>`);
* a Qwen3-style thinking template (tests/fixtures/chat_templates/qwen3_style.jinja): tools, `<think>` opened
  by the generation prompt, reasoning kept only after the last user query;
* SmolLM2's plain ChatML template, read from its GGUF: it knows no tools, so the reference renders the
  conversation folded by hand the way the framework's tool prompt folds it (tool list and convention in the
  system turn, calls as `<tool_call>` blocks, results as one user turn of `<tool_response>` blocks).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pytest

import prompts
from agent.messages import AssistantMessage, Message, NoteMessage, SystemMessage, ToolMessage, UserMessage
from agent.models.chat_formats import ChatFormat, opens_thinking, resolve_chat_format
from agent.testing import add, shout
from tools.types import ToolCall

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "chat_templates"
TOOLS = [add, shout]
REASONING = "The user wants a sum; the add tool computes it."

# -- the reference renderer --------------------------------------------------------------------------------


def plain_render(
    template: str, messages: list[dict[str, Any]], tools: list[Any] | None, **variables: Any
) -> str:
    """What transformers' apply_chat_template renders, with nothing of this project's code in the way."""

    def tojson(value: Any, indent: int | None = None) -> str:
        return json.dumps(value, ensure_ascii=False, indent=indent)

    def raise_exception(message: str) -> None:
        raise AssertionError(message)

    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages, tools=tools, add_generation_prompt=True, documents=None, **variables
    )


def openai_tools() -> list[dict[str, Any]]:
    return [t.to_openai() for t in TOOLS]


def hf_call(name: str, arguments: dict[str, Any], call_id: str) -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


# -- the conversations, twice: as the loop holds them and as a Hugging Face user writes them ---------------


def conversation(kind: str, *, thinking: bool) -> tuple[list[Message], list[dict[str, Any]]]:
    """(typed history, the same as OpenAI dicts) for `kind`: "tools", "results" or "multi_turn"."""
    reasoning = REASONING if thinking else ""
    typed: list[Message] = [
        SystemMessage(content="You are a precise assistant."),
        UserMessage(content="What is 2 + 3? Also shout 'héllo' twice."),
    ]
    plain: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a precise assistant."},
        {"role": "user", "content": "What is 2 + 3? Also shout 'héllo' twice."},
    ]
    if kind == "tools":
        return typed, plain
    calls = [
        ToolCall(id="call_1_0", name="add", arguments={"a": 2, "b": 3}),
        ToolCall(id="call_1_1", name="shout", arguments={"text": "héllo", "times": 2}),
    ]
    typed += [
        AssistantMessage(content="", thinking=reasoning, tool_calls=calls),
        ToolMessage(content="5", name="add", tool_call_id="call_1_0"),
        ToolMessage(content="héllohéllo", name="shout", tool_call_id="call_1_1"),
    ]
    first_turn: dict[str, Any] = {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            hf_call("add", {"a": 2, "b": 3}, "call_1_0"),
            hf_call("shout", {"text": "héllo", "times": 2}, "call_1_1"),
        ],
    }
    if thinking:
        first_turn["reasoning_content"] = reasoning
    plain += [
        first_turn,
        {"role": "tool", "content": "5", "name": "add", "tool_call_id": "call_1_0"},
        {"role": "tool", "content": "héllohéllo", "name": "shout", "tool_call_id": "call_1_1"},
    ]
    if kind == "results":
        return typed, plain
    assert kind == "multi_turn"
    answer: dict[str, Any] = {"role": "assistant", "content": "2 + 3 = 5, and: héllohéllo."}
    if thinking:
        answer["reasoning_content"] = "Both results are in."
    later_call: dict[str, Any] = {
        "role": "assistant",
        "content": "I will add 10 to 5.",
        "tool_calls": [hf_call("add", {"a": 5, "b": 10}, "call_2_0")],
    }
    if thinking:
        later_call["reasoning_content"] = "Now 5 + 10."
    note = prompts.render_note("repeated_call", name="add", count=3)
    typed += [
        AssistantMessage(content=answer["content"], thinking="Both results are in." if thinking else ""),
        UserMessage(content="Now add 10 to it."),
        AssistantMessage(
            content=later_call["content"],
            thinking="Now 5 + 10." if thinking else "",
            tool_calls=[ToolCall(id="call_2_0", name="add", arguments={"a": 5, "b": 10})],
        ),
        ToolMessage(content="15", name="add", tool_call_id="call_2_0"),
        # the framework's own notes: where results go for a model that reasons, else a user message
        NoteMessage(content=note, kind="repeated_call"),
    ]
    plain += [
        answer,
        {"role": "user", "content": "Now add 10 to it."},
        later_call,
        {"role": "tool", "content": "15", "name": "add", "tool_call_id": "call_2_0"},
        {"role": "tool" if thinking else "user", "content": note},
    ]
    return typed, plain


KINDS = ("tools", "results", "multi_turn")


def assert_same(ours: str, reference: str) -> None:
    if ours != reference:
        at = next((i for i, (a, b) in enumerate(zip(ours, reference, strict=False)) if a != b), None)
        at = min(len(ours), len(reference)) if at is None else at
        pytest.fail(
            f"differs at {at}: ours {ours[at - 40 : at + 60]!r}\nreference {reference[at - 40 : at + 60]!r}"
        )


# -- Qwen2.5 (the real GGUFs' template) --------------------------------------------------------------------


@pytest.mark.real_model
@pytest.mark.llama
@pytest.mark.smoke
@pytest.mark.parametrize("model", ["qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
@pytest.mark.parametrize("kind", KINDS)
def test_qwen25_prompt_equals_its_own_template(
    model: str,
    kind: str,
    real_gguf: Callable[[str], Path],
    chat_template_of: Callable[[Path], str],
) -> None:
    template = chat_template_of(real_gguf(model))
    chat_format = resolve_chat_format("auto", template)
    assert chat_format.kind == "template"
    assert chat_format.tools_in_template  # Qwen2.5 writes its own tool instructions
    typed, plain = conversation(kind, thinking=False)
    ours = chat_format.render(typed, TOOLS)
    assert_same(ours, plain_render(template, plain, openai_tools()))
    assert not opens_thinking(ours)
    assert ours.endswith("<|im_start|>assistant\n")


@pytest.mark.real_model
@pytest.mark.llama
@pytest.mark.smoke
def test_qwen25_without_tools_equals_its_own_template(
    real_gguf: Callable[[str], Path], chat_template_of: Callable[[Path], str]
) -> None:
    template = chat_template_of(real_gguf("qwen2.5-coder-0.5b"))
    typed, plain = conversation("tools", thinking=False)
    ours = resolve_chat_format("auto", template).render(typed)
    assert_same(ours, plain_render(template, plain, None))
    assert "# Tools" not in ours


# -- a Qwen3-style thinking template -----------------------------------------------------------------------


def qwen3_style() -> str:
    return (FIXTURES / "qwen3_style.jinja").read_text()


@pytest.mark.parametrize("kind", KINDS)
def test_qwen3_style_prompt_equals_its_own_template(kind: str) -> None:
    template = qwen3_style()
    chat_format = resolve_chat_format("auto", template)
    assert chat_format.kind == "template"
    typed, plain = conversation(kind, thinking=True)
    ours = chat_format.render(typed, TOOLS)
    assert_same(ours, plain_render(template, plain, openai_tools()))
    assert opens_thinking(ours)  # the turn starts inside reasoning, found by rendering


def test_qwen3_style_keeps_only_the_reasoning_after_the_last_query() -> None:
    typed, _ = conversation("multi_turn", thinking=True)
    ours = ChatFormat("template", qwen3_style()).render(typed, TOOLS)
    assert REASONING not in ours  # before the last user query: dropped
    assert "Both results are in." not in ours
    assert "<think>\nNow 5 + 10.\n</think>\n\nI will add 10 to 5." in ours


def test_qwen3_style_with_thinking_off() -> None:
    template = qwen3_style()
    typed, plain = conversation("results", thinking=True)
    ours = ChatFormat("template", template, {"enable_thinking": False}).render(typed, TOOLS)
    assert_same(ours, plain_render(template, plain, openai_tools(), enable_thinking=False))
    assert not opens_thinking(ours)
    assert ours.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


# -- plain ChatML without tool support (SmolLM2's real template) --------------------------------------------


def folded_by_hand(plain: list[dict[str, Any]], tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation a tool-less template should see: the tool prompt's documented folding rules."""
    guide = prompts.render_format("tool_use", tools=[json.dumps(t, ensure_ascii=False) for t in tools])
    out: list[dict[str, Any]] = []
    for message in plain:
        if message["role"] == "tool":
            block = f"<tool_response>\n{message['content']}\n</tool_response>"
            if out and out[-1].get("results"):
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block, "results": True})
            continue
        content = message["content"]
        if message["role"] == "system" and not out:
            content = f"{content}\n\n{guide}"
        for call in message.get("tool_calls", []):
            function = call["function"]
            block = (
                "<tool_call>\n"
                + json.dumps(
                    {"name": function["name"], "arguments": function["arguments"]}, ensure_ascii=False
                )
                + "\n</tool_call>"
            )
            content = f"{content}\n{block}" if content else block
        out.append({"role": message["role"], "content": content})
    return [{"role": m["role"], "content": m["content"]} for m in out]


@pytest.mark.real_model
@pytest.mark.llama
@pytest.mark.smoke
@pytest.mark.parametrize("kind", KINDS)
def test_chatml_without_tools_gets_the_tool_prompt(
    kind: str, real_gguf: Callable[[str], Path], chat_template_of: Callable[[Path], str]
) -> None:
    template = chat_template_of(real_gguf("smollm2-135m"))
    chat_format = resolve_chat_format("auto", template)
    assert chat_format.kind == "template"
    assert not chat_format.tools_in_template
    typed, plain = conversation(kind, thinking=False)
    ours = chat_format.render(typed, TOOLS)
    assert_same(ours, plain_render(template, folded_by_hand(plain, openai_tools()), None))
    assert "<tool_call>" in ours
    assert not opens_thinking(ours)
