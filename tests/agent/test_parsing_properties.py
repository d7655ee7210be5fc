"""Property tests for `agent.parsing`: never raises, stream == whole, events add up, round trip.

Texts are built from the fragments QwQ output is made of (tags, braces, quotes, call objects, special tokens)
mixed with arbitrary text, so the generator reaches tag boundaries, unclosed blocks and broken JSON often.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.events import ContentDelta, MalformedCallEvent, ParseEvent, ThinkingDelta, ToolCallParsed
from agent.parsing import Completion, StreamParser, parse_completion
from tools.types import ToolCall

TAGS = [
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
]
FRAGMENTS = [
    *TAGS,
    *(tag[: len(tag) // 2] for tag in TAGS),
    "<",
    "</",
    ">",
    "{",
    "}",
    "[",
    "]",
    '"',
    "'",
    ":",
    ",",
    "\\",
    "\n",
    "\n\n",
    " ",
    "```json\n",
    '"name"',
    '"arguments"',
    '{"name": "f", "arguments": {"a": 1}}',
    '{"name": "web-fetch", "arguments": "{\\"u\\": 2}"}',
    "{'name': 'g.h', 'arguments': {'b': True, 'c': None}}",
    '{"function": {"name": "k", "parameters": {}}}',
    "True",
    "null",
    "NaN",
    # the other call forms (read only when the offered tools are named)
    "<tools>",
    "</tools>",
    "<function=f>",
    "</function>",
    "<json>",
    "</json>",
    "```",
    "```python\n",
    "\n{",
    '{"name": "python", "arguments": {"code": "1"}}',
]

fragment_texts = st.lists(
    st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=6)),
    max_size=40,
).map("".join)
options = st.fixed_dictionaries(
    {
        "prompt_opened_think": st.booleans(),
        "promote_trailing_drafts": st.booleans(),
        "tool_names": st.sampled_from([None, ["f", "g.h", "python"]]),
    }
)


def stream(text: str, cuts: list[int], **opts: Any) -> tuple[Completion, list[ParseEvent]]:
    parser = StreamParser(**opts)
    events: list[ParseEvent] = []
    start = 0
    for cut in [*sorted(cuts), len(text)]:
        events += parser.feed(text[start:cut])
        start = cut
    events += parser.finish()
    return parser.close(), events


@settings(max_examples=1500, deadline=None)
@given(st.one_of(fragment_texts, st.text()), options)
def test_parse_completion_never_raises(text: str, opts: dict[str, Any]) -> None:
    completion = parse_completion(text, **opts)
    assert completion.thinking == completion.thinking.strip()
    assert completion.content == completion.content.strip()
    assert text.startswith(completion.raw)
    for bad in completion.malformed:
        assert bad.error.endswith((".", "</tool_call>"))


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fragment_texts, st.data(), options)
def test_stream_equals_whole_and_events_add_up(text: str, data: st.DataObject, opts: dict[str, Any]) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=12), label="cuts")
    completion, events = stream(text, cuts, **opts)
    assert completion == parse_completion(text, **opts)
    assert "".join(e.text for e in events if isinstance(e, ThinkingDelta)) == completion.thinking
    assert "".join(e.text for e in events if isinstance(e, ContentDelta)) == completion.content
    assert [e.call for e in events if isinstance(e, ToolCallParsed)] == completion.tool_calls
    assert [(e.raw, e.error) for e in events if isinstance(e, MalformedCallEvent)] == [
        (bad.raw, bad.error) for bad in completion.malformed
    ]
    assert all(e.text for e in events if isinstance(e, ThinkingDelta | ContentDelta))


@pytest.mark.parametrize("tool_names", [None, ["f", "python"]])
def test_one_character_at_a_time_on_a_long_mixed_text(tool_names: list[str] | None) -> None:
    text = "".join(FRAGMENTS) * 5
    completion, _ = stream(text, list(range(len(text))), tool_names=tool_names)
    assert completion == parse_completion(text, tool_names=tool_names)


# -- round trip ---------------------------------------------------------------------------------------------

SPECIAL = (*TAGS, "<tool_call", "</tool_call")


def free_text() -> st.SearchStrategy[str]:
    """Any text that holds no tag (a `<` alone is fine: it must come back as text)."""
    return st.text(max_size=60).filter(lambda s: not any(tag in s for tag in TAGS))


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.\-]{0,24}", fullmatch=True)
calls = st.tuples(names, st.dictionaries(st.text(max_size=10), json_values, max_size=5)).filter(
    lambda call: not any(tag in json.dumps(call[1], ensure_ascii=False) for tag in SPECIAL)
)


def render(thinking: str, content: str, tool_calls: list[tuple[str, dict[str, Any]]]) -> str:
    """A QwQ-32B turn as the model writes it after the prompt's `<think>\\n`."""
    return (
        thinking
        + "\n</think>\n\n"
        + content
        + "".join(
            "\n<tool_call>\n" + json.dumps({"name": n, "arguments": a}, ensure_ascii=False) + "\n</tool_call>"
            for n, a in tool_calls
        )
    )


@settings(max_examples=800, deadline=None)
@given(free_text(), free_text(), st.lists(calls, max_size=4), st.data())
def test_round_trip(
    thinking: str, content: str, tool_calls: list[tuple[str, dict[str, Any]]], data: st.DataObject
) -> None:
    text = render(thinking, content, tool_calls)
    completion = parse_completion(text)
    assert completion.thinking == thinking.strip()
    assert completion.content == content.strip()
    assert completion.tool_calls == [ToolCall(name=n, arguments=a) for n, a in tool_calls]
    assert completion.malformed == []
    assert completion.drafts == []
    assert completion.repairs == []
    assert completion.thinking_closed
    assert not completion.cut_at_tool_response
    assert completion.raw == text
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=8), label="cuts")
    assert stream(text, cuts)[0] == completion


@settings(max_examples=300, deadline=None)
@given(free_text(), st.lists(calls, min_size=1, max_size=3))
def test_calls_drafted_in_reasoning_round_trip_as_drafts(
    thinking: str, tool_calls: list[tuple[str, dict[str, Any]]]
) -> None:
    drafted = render(thinking, "", tool_calls).replace("\n</think>\n\n", "", 1)
    closed = parse_completion(drafted + "\nso.\n</think>\n\nDone.")
    assert closed.tool_calls == []
    assert closed.drafts == [ToolCall(name=n, arguments=a) for n, a in tool_calls]
    # Output that ends right after the drafts, reasoning still open: the trailing run is promoted.
    unclosed = parse_completion(drafted)
    assert unclosed.tool_calls == closed.drafts
    assert unclosed.drafts == []
    assert not unclosed.thinking_closed
    assert parse_completion(drafted, promote_trailing_drafts=False).drafts == closed.drafts
