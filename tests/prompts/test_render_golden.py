"""Golden renderings of the QwQ-32B format, one test per rule of docs/chat-format.md.

Every expected string is written out by hand from the format description, not produced by the code under
test, so these tests pin the format itself.
"""

from __future__ import annotations

from typing import Any

import pytest

from prompts import render

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_JSON = (
    '{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city.", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}'
)
TOOLS_INTRO = (
    "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
)
GEN = "<|im_start|>assistant\n<think>\n"


def call(name: str, arguments: Any, call_id: str = "c1") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def test_user_only_no_system_no_tools() -> None:
    assert render([{"role": "user", "content": "Hi"}]) == "<|im_start|>user\nHi<|im_end|>\n" + GEN


def test_system_without_tools_is_a_plain_turn() -> None:
    text = render([{"role": "system", "content": "Be exact."}, {"role": "user", "content": "Hi"}])
    assert text == "<|im_start|>system\nBe exact.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n" + GEN


def test_tools_without_system_open_an_empty_system_turn() -> None:
    text = render([{"role": "user", "content": "Weather?"}], tools=[WEATHER])
    assert text == (
        "<|im_start|>system\n"
        + TOOLS_INTRO
        + "\n"
        + WEATHER_JSON
        + TOOLS_OUTRO
        + "<|im_start|>user\nWeather?<|im_end|>\n"
        + GEN
    )


def test_tools_with_system_follow_the_system_text() -> None:
    second = {
        "name": "now",
        "description": "Current time.",
        "parameters": {"type": "object", "properties": {}},
    }
    text = render(
        [{"role": "system", "content": "You help."}, {"role": "user", "content": "Go"}],
        tools=[WEATHER, second],
    )
    assert text == (
        "<|im_start|>system\nYou help."
        + TOOLS_INTRO
        + "\n"
        + WEATHER_JSON
        + '\n{"type": "function", "function": {"name": "now", "description": "Current time.", '
        '"parameters": {"type": "object", "properties": {}}}}'
        + TOOLS_OUTRO
        + "<|im_start|>user\nGo<|im_end|>\n"
        + GEN
    )


def test_tool_objects_with_to_openai_are_accepted() -> None:
    class Tool:
        def to_openai(self) -> dict[str, Any]:
            return WEATHER

    assert render([{"role": "user", "content": "x"}], tools=[Tool()]) == render(
        [{"role": "user", "content": "x"}], tools=[WEATHER]
    )


def test_empty_tool_list_means_no_tools() -> None:
    assert render([{"role": "user", "content": "Hi"}], tools=[]) == "<|im_start|>user\nHi<|im_end|>\n" + GEN


def test_non_first_system_message_is_a_plain_turn() -> None:
    text = render(
        [
            {"role": "user", "content": "A"},
            {"role": "assistant", "content": "B"},
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "C"},
        ],
        tools=[WEATHER],
    )
    assert text == (
        "<|im_start|>system\n"
        + TOOLS_INTRO
        + "\n"
        + WEATHER_JSON
        + TOOLS_OUTRO
        + "<|im_start|>user\nA<|im_end|>\n"
        "<|im_start|>assistant\nB<|im_end|>\n"
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nC<|im_end|>\n" + GEN
    )


def test_reasoning_of_earlier_assistant_turns_is_stripped() -> None:
    text = render(
        [
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Hmm.\n</think>\nDraft </think>\n\n\nParis."},
            {"role": "user", "content": "And Italy?"},
        ]
    )
    # Everything up to the last </think> goes, and so do the newlines right after it.
    assert text == (
        "<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\nParis.<|im_end|>\n"
        "<|im_start|>user\nAnd Italy?<|im_end|>\n" + GEN
    )


def test_typed_thinking_is_stripped_like_inline_reasoning() -> None:
    text = render(
        [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "A", "thinking": "Let me see."},
            {"role": "user", "content": "Q2"},
        ],
        add_generation_prompt=False,
    )
    assert text == (
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nA<|im_end|>\n<|im_start|>user\nQ2<|im_end|>\n"
    )


def test_last_assistant_message_is_not_stripped() -> None:
    text = render(
        [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "", "thinking": "Let me see."},
        ],
        add_generation_prompt=False,
    )
    # Its original content is reasoning + "\n</think>\n\n" + content, shown whole.
    assert (
        text == "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\nLet me see.\n</think>\n\n<|im_end|>\n"
    )


def test_empty_line_quirk_of_a_reasoning_only_tool_call_turn() -> None:
    text = render(
        [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "I need the tool.",
                "tool_calls": [call("get_weather", {"city": "Oslo"})],
            },
            {"role": "tool", "content": "Rain, 7 °C"},
        ]
    )
    # The original content was non-empty (it held reasoning), so "\n" + stripped content (nothing) is
    # written: an empty line before the first call.
    assert text == (
        "<|im_start|>user\nWeather in Oslo?<|im_end|>\n"
        "<|im_start|>assistant\n"
        '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nRain, 7 °C\n</tool_response><|im_end|>\n" + GEN
    )


def test_tool_call_turn_without_any_content_has_no_empty_line() -> None:
    text = render(
        [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Oslo"})]},
            {"role": "tool", "content": "Rain"},
        ],
        add_generation_prompt=False,
    )
    assert text == (
        "<|im_start|>user\nWeather in Oslo?<|im_end|>\n"
        "<|im_start|>assistant"
        '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nRain\n</tool_response><|im_end|>\n"
    )


def test_tool_call_turn_with_visible_content() -> None:
    text = render(
        [
            {"role": "user", "content": "Q"},
            {
                "role": "assistant",
                "content": "Checking.",
                "thinking": "Plan.",
                "tool_calls": [call("get_weather", {"city": "Rome"})],
            },
            {"role": "tool", "content": "Sun"},
        ],
        add_generation_prompt=False,
    )
    assert text == (
        "<|im_start|>user\nQ<|im_end|>\n"
        "<|im_start|>assistant\nChecking."
        '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nSun\n</tool_response><|im_end|>\n"
    )


def test_parallel_calls_and_consecutive_results_share_turns() -> None:
    text = render(
        [
            {"role": "user", "content": "Oslo and Rome?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    call("get_weather", {"city": "Oslo"}, "a"),
                    call("get_weather", {"city": "Rome"}, "b"),
                ],
            },
            {"role": "tool", "content": "Rain", "tool_call_id": "a"},
            {"role": "tool", "content": "Sun", "tool_call_id": "b"},
            {"role": "assistant", "content": "", "tool_calls": [call("get_weather", {"city": "Bern"})]},
            {"role": "tool", "content": "Snow"},
        ]
    )
    assert text == (
        "<|im_start|>user\nOslo and Rome?<|im_end|>\n"
        "<|im_start|>assistant"
        '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
        '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user"
        "\n<tool_response>\nRain\n</tool_response>"
        "\n<tool_response>\nSun\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant"
        '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Bern"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nSnow\n</tool_response><|im_end|>\n" + GEN
    )


def test_unicode_and_html_characters_are_kept_as_they_are() -> None:
    tool = {
        "type": "function",
        "function": {"name": "ß", "description": "Grüße <b>&</b> 'q' 😀", "parameters": {}},
    }
    text = render(
        [
            {"role": "user", "content": "Zürich <&> 東京"},
            {"role": "assistant", "content": "", "tool_calls": [call("ß", {"stadt": "Zürich & <東京>"})]},
        ],
        tools=[tool],
        add_generation_prompt=False,
    )
    assert text == (
        "<|im_start|>system\n"
        + TOOLS_INTRO
        + '\n{"type": "function", "function": {"name": "ß", "description": "Grüße <b>&</b> \'q\' 😀", '
        '"parameters": {}}}' + TOOLS_OUTRO + "<|im_start|>user\nZürich <&> 東京<|im_end|>\n"
        "<|im_start|>assistant"
        '\n<tool_call>\n{"name": "ß", "arguments": {"stadt": "Zürich & <東京>"}}\n</tool_call><|im_end|>\n'
    )


def test_nested_arguments_keep_key_order_and_json_literals() -> None:
    arguments = {
        "z": {"tags": ["a", "b"], "range": {"min": 1, "max": 2.5}},
        "a": True,
        "none": None,
        "quote": 'say "hi"\n',
    }
    text = render(
        [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "", "tool_calls": [call("f", arguments)]},
        ],
        add_generation_prompt=False,
    )
    assert text == (
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<tool_call>\n"
        '{"name": "f", "arguments": {"z": {"tags": ["a", "b"], "range": {"min": 1, "max": 2.5}}, '
        '"a": true, "none": null, "quote": "say \\"hi\\"\\n"}}\n</tool_call><|im_end|>\n'
    )


def test_openai_dicts_with_none_content_and_json_string_arguments() -> None:
    openai_style = [
        {"role": "user", "content": "Q"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                call("f", '{"city": "Oslo", "days": [1, 2]}', "a"),
                call("g", "", "b"),
                call("h", "{not json", "c"),
            ],
        },
        {"role": "tool", "content": "ok", "tool_call_id": "a"},
    ]
    text = render(openai_style, add_generation_prompt=False)
    # JSON strings are decoded, never encoded twice; an empty string means no arguments; a string that is
    # not JSON stays a string.
    assert text == (
        "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant"
        '\n<tool_call>\n{"name": "f", "arguments": {"city": "Oslo", "days": [1, 2]}}\n</tool_call>'
        '\n<tool_call>\n{"name": "g", "arguments": {}}\n</tool_call>'
        '\n<tool_call>\n{"name": "h", "arguments": "{not json"}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nok\n</tool_response><|im_end|>\n"
    )


def test_text_content_parts_are_joined() -> None:
    message = {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    assert render([message], add_generation_prompt=False) == "<|im_start|>user\nab<|im_end|>\n"


TASK: list[dict[str, Any]] = [
    {"role": "user", "content": "Old question"},
    {"role": "assistant", "content": "Old answer", "thinking": "Old thoughts."},
    {"role": "user", "content": "Weather in Oslo?"},
    {
        "role": "assistant",
        "content": "",
        "thinking": "Need the tool.",
        "tool_calls": [call("get_weather", {"city": "Oslo"})],
        # As generated: compact JSON, no blank line before the call; the official form differs in both.
        "raw": (
            "Need the tool.\n</think>\n\n"
            '<tool_call>\n{"name":"get_weather","arguments":{"city":"Oslo"}}\n</tool_call>'
        ),
    },
    {"role": "tool", "content": "Rain"},
]


def test_current_task_with_raw_reproduces_the_generated_text() -> None:
    text = render(TASK, keep_thinking="current_task")
    assert text == (
        "<|im_start|>user\nOld question<|im_end|>\n"
        "<|im_start|>assistant\nOld answer<|im_end|>\n"
        "<|im_start|>user\nWeather in Oslo?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nNeed the tool.\n</think>\n\n"
        '<tool_call>\n{"name":"get_weather","arguments":{"city":"Oslo"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nRain\n</tool_response><|im_end|>\n" + GEN
    )


def test_current_task_prompt_extends_the_previous_prompt_plus_generated_text() -> None:
    before = render(TASK[:3], keep_thinking="current_task")
    after = render(TASK, keep_thinking="current_task")
    generated = TASK[3]["raw"] + "<|im_end|>\n"
    assert after.startswith(before + generated)


def test_current_task_without_raw_keeps_reasoning_in_template_form() -> None:
    messages = [{**message} for message in TASK]
    del messages[3]["raw"]
    messages.append({"role": "assistant", "content": "Rain.", "thinking": "It rains."})
    text = render(messages, keep_thinking="current_task", add_generation_prompt=False)
    assert text == (
        "<|im_start|>user\nOld question<|im_end|>\n"
        "<|im_start|>assistant\nOld answer<|im_end|>\n"
        "<|im_start|>user\nWeather in Oslo?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\nNeed the tool.\n</think>\n\n"
        '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nRain\n</tool_response><|im_end|>\n"
        "<|im_start|>assistant\n<think>\nIt rains.\n</think>\n\nRain.<|im_end|>\n"
    )


def test_none_policy_ignores_raw() -> None:
    text = render(TASK, add_generation_prompt=False)
    assert text == (
        "<|im_start|>user\nOld question<|im_end|>\n"
        "<|im_start|>assistant\nOld answer<|im_end|>\n"
        "<|im_start|>user\nWeather in Oslo?<|im_end|>\n"
        "<|im_start|>assistant\n"
        '\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nRain\n</tool_response><|im_end|>\n"
    )


def test_add_generation_prompt_false_ends_after_the_last_turn() -> None:
    text = render([{"role": "user", "content": "Hi"}], add_generation_prompt=False)
    assert text == "<|im_start|>user\nHi<|im_end|>\n"


def test_typed_messages_of_the_agent_package() -> None:
    from agent.messages import AssistantMessage, SystemMessage, ToolMessage, UserMessage
    from tools.types import ToolCall

    typed = [
        SystemMessage(content="S"),
        UserMessage(content="Q"),
        AssistantMessage(thinking="T", tool_calls=[ToolCall(name="f", arguments={"x": 1}, id="1")]),
        ToolMessage(content="R", name="f", tool_call_id="1"),
    ]
    assert render(typed) == (
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"
        '\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call><|im_end|>\n'
        "<|im_start|>user\n<tool_response>\nR\n</tool_response><|im_end|>\n" + GEN
    )


def test_empty_conversation_is_just_the_generation_prompt() -> None:
    assert render([]) == GEN


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([{"role": "robot", "content": "x"}], ValueError),
        ([{"role": "user", "content": 3}], TypeError),
        (["not a message"], TypeError),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], TypeError),
        (
            [{"role": "assistant", "content": "", "tool_calls": [{"function": {"arguments": "{}"}}]}],
            TypeError,
        ),
    ],
)
def test_invalid_messages_are_refused_with_a_reason(messages: list[Any], error: type[Exception]) -> None:
    with pytest.raises(error, match="message 0"):
        render(messages)


def test_unknown_keep_thinking_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="keep_thinking"):
        render([], keep_thinking="all")  # type: ignore[arg-type]
