"""The Hugging Face-compatible environment behind `render_chat_template`, rule by rule."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from prompts import PromptTemplateError, render_chat_template


def run(template: str, messages: list[Any] | None = None, **extra: Any) -> str:
    return render_chat_template(template, messages or [], **extra)


def test_tojson_keeps_key_order_unicode_and_markup() -> None:
    value = {"b": "<a href='x'>&</a>", "a": "Grüße 東京 😀", "n": [1, None, True]}
    assert run("{{ v | tojson }}", v=value) == (
        '{"b": "<a href=\'x\'>&</a>", "a": "Grüße 東京 😀", "n": [1, null, true]}'
    )


def test_tojson_accepts_indent() -> None:
    assert run("{{ v | tojson(indent=2) }}", v={"b": 1, "a": [1]}) == '{\n  "b": 1,\n  "a": [\n    1\n  ]\n}'


def test_raise_exception_raises_a_clear_error() -> None:
    with pytest.raises(PromptTemplateError, match="roles must alternate"):
        run("{{ raise_exception('roles must alternate') }}")


def test_trim_and_lstrip_blocks() -> None:
    template = "  {% if true %}\nX\n  {% endif %}\nY"
    assert run(template) == "X\nY"


def test_loop_controls() -> None:
    template = (
        "{% for i in range(6) %}{% if i == 1 %}{% continue %}{% endif %}"
        "{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}"
    )
    assert run(template) == "023"


def test_strftime_now() -> None:
    year = datetime.now().year
    assert run("{{ strftime_now('%Y') }}") in {str(year), str(year + 1)}


def test_generation_block_renders_its_body() -> None:
    assert run("{% generation %}A{{ 1 }}{% endgeneration %}B") == "A1B"


def test_variables_reach_the_template() -> None:
    template = "{{ bos_token }}{{ add_generation_prompt }}{{ tools is none }}{{ documents is none }}"
    assert run(template, bos_token="<s>") == "<s>TrueTrueTrue"


def test_syntax_errors_say_where() -> None:
    with pytest.raises(PromptTemplateError, match="does not compile: line 2"):
        run("ok\n{% if %}")


def test_the_sandbox_is_immutable() -> None:
    with pytest.raises(PromptTemplateError, match="failed while rendering"):
        run("{% set items = [] %}{{ items.append(1) }}")


def test_namespaces_refuse_underscore_attributes() -> None:
    with pytest.raises(PromptTemplateError, match="_secret"):
        run("{% set ns = namespace(_secret=1) %}")


def test_messages_arrive_normalised() -> None:
    messages = [
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "R",
            "tool_calls": [
                {"id": "1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
            ],
        }
    ]
    template = (
        "{% for m in messages %}{{ m.content | tojson }}|{{ m.tool_calls[0].function.name }}|"
        "{{ m.tool_calls[0].function.arguments | tojson }}{% endfor %}"
    )
    # Reasoning travels in content before </think>; arguments are an object, not a JSON string.
    assert run(template, messages) == '"R\\n</think>\\n\\n"|f|{"a": 1}'


def test_tools_arrive_as_openai_tool_dicts() -> None:
    bare = {"name": "f", "description": "d", "parameters": {}}
    out = render_chat_template("{{ tools | tojson }}", [], [bare])
    assert out == '[{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}]'


def test_add_generation_prompt_is_passed_through() -> None:
    template = "{% if add_generation_prompt %}GEN{% endif %}"
    assert render_chat_template(template, [], add_generation_prompt=True) == "GEN"
    assert render_chat_template(template, [], add_generation_prompt=False) == ""
