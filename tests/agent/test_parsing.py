"""Example tests for `agent.parsing`: one per behaviour QwQ-32B really shows, plus the malformed cases.

Each example is also checked through `StreamParser` fed one character at a time, so every rule is exercised
with tags split across deltas.
"""

from __future__ import annotations

import json

import pytest

from agent.events import ContentDelta, MalformedCallEvent, ThinkingDelta, ToolCallParsed
from agent.parsing import CALL_FORMAT, Completion, MalformedCall, StreamParser, parse_completion
from tools.types import ToolCall


def parse(text: str, **options: bool) -> Completion:
    """Parse whole and streamed character by character; they must agree."""
    whole = parse_completion(text, **options)
    parser = StreamParser(**options)
    for char in text:
        parser.feed(char)
    assert parser.close() == whole
    return whole


def call_block(name: str, arguments: object) -> str:
    return (
        "\n<tool_call>\n"
        + json.dumps({"name": name, "arguments": arguments}, ensure_ascii=False)
        + "\n</tool_call>"
    )


# -- reasoning and content ----------------------------------------------------------------------------------


def test_text_starts_inside_reasoning_opened_by_the_prompt() -> None:
    c = parse("Let me think.\nStill thinking.\n</think>\n\nThe answer is 4.")
    assert c.thinking == "Let me think.\nStill thinking."
    assert c.content == "The answer is 4."
    assert c.thinking_closed
    assert c.tool_calls == []
    assert c.malformed == []
    assert c.repairs == []


def test_explicit_opening_think_is_dropped() -> None:
    c = parse("<think>\nreasoning\n</think>\n\nanswer")
    assert (c.thinking, c.content) == ("reasoning", "answer")
    assert c.repairs == []


def test_prompt_without_think_starts_in_content() -> None:
    assert parse("just an answer", prompt_opened_think=False).content == "just an answer"
    c = parse("<think>\nhm\n</think>\n\nanswer", prompt_opened_think=False)
    assert (c.thinking, c.content, c.thinking_closed) == ("hm", "answer", True)


def test_reasoning_never_closed() -> None:
    c = parse("I need to consider many cases. First")
    assert c.thinking == "I need to consider many cases. First"
    assert c.content == ""
    assert not c.thinking_closed


def test_a_later_think_tag_inside_reasoning_is_kept_as_text() -> None:
    c = parse("we write <think> here</think>ok")
    assert c.thinking == "we write <think> here"


def test_reasoning_reopened_in_content_is_noted() -> None:
    c = parse("a</think>b<think>c</think>d")
    assert (c.thinking, c.content) == ("ac", "bd")
    assert any("reopened" in note for note in c.repairs)


def test_stray_closing_think_in_content_is_dropped_with_a_note() -> None:
    c = parse("reasoning</think>answer</think> more")
    assert c.content == "answer more"
    assert any("</think>" in note for note in c.repairs)


def test_angle_brackets_that_are_not_tags_stay_text() -> None:
    c = parse("is a < b? <b>bold</b> <tool</think>x <tool_cal y <")
    assert c.thinking == "is a < b? <b>bold</b> <tool"
    assert c.content == "x <tool_cal y <"


# -- whitespace ---------------------------------------------------------------------------------------------


def test_whitespace_is_stripped_at_the_ends_and_kept_between_pieces() -> None:
    text = "\n\n  think  \n</think>\n\nBefore." + call_block("f", {}) + "\nAfter.\n"
    c = parse(text)
    assert c.thinking == "think"
    # Text on both sides of a call keeps the whitespace that surrounded the call.
    assert c.content == "Before.\n\nAfter."


def test_draft_blocks_stay_verbatim_in_thinking() -> None:
    block = call_block("f", {"a": 1})
    c = parse("plan" + block + "\nmore</think>done")
    assert c.thinking == "plan" + block + "\nmore"


# -- calls --------------------------------------------------------------------------------------------------


def test_several_calls_with_text_around() -> None:
    text = (
        "ok</think>\n\nI will look both up."
        + call_block("github.search", {"q": "qwq"})
        + call_block("web-fetch", {"url": "https://example.org", "n": [1, 2], "deep": {"x": None}})
        + "\nWaiting."
    )
    c = parse(text)
    assert c.tool_calls == [
        ToolCall(name="github.search", arguments={"q": "qwq"}),
        ToolCall(
            name="web-fetch", arguments={"url": "https://example.org", "n": [1, 2], "deep": {"x": None}}
        ),
    ]
    assert c.content == "I will look both up.\n\n\nWaiting."
    assert c.malformed == []
    assert c.repairs == []


def test_unicode_and_names_with_odd_characters_are_kept() -> None:
    c = parse("</think>" + call_block("mcp/files.read-all", {"path": "café/日本.txt"}))
    assert c.tool_calls == [ToolCall(name="mcp/files.read-all", arguments={"path": "café/日本.txt"})]


def test_last_call_without_closing_tag_is_accepted_when_complete() -> None:
    c = parse('</think>\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n')
    assert c.tool_calls == [ToolCall(name="f", arguments={"a": 1})]
    assert c.malformed == []
    assert any("</tool_call>" in note for note in c.repairs)


def test_last_call_cut_off_mid_json_is_malformed() -> None:
    c = parse('</think>\n<tool_call>\n{"name": "f", "arguments": {"a": ')
    assert c.tool_calls == []
    [bad] = c.malformed
    assert bad.raw == '<tool_call>\n{"name": "f", "arguments": {"a": '
    assert bad.error.startswith(
        "Your last <tool_call> block ended before its JSON was complete (Expecting value"
    )
    assert bad.error.endswith(CALL_FORMAT)


def test_tags_inside_argument_strings_of_a_real_call() -> None:
    # `</think>` is harmless inside a call; `</tool_call>` ends it, as in vLLM's parser (documented limit).
    c = parse("</think>" + call_block("echo", {"text": "a </think> b"}))
    assert c.tool_calls == [ToolCall(name="echo", arguments={"text": "a </think> b"})]
    c = parse("</think>" + call_block("echo", {"text": "x </tool_call> y"}))
    assert c.tool_calls == []
    assert [bad.raw for bad in c.malformed] == [
        '<tool_call>\n{"name": "echo", "arguments": {"text": "x </tool_call>',
        "</tool_call>",
    ]


# -- drafts in reasoning ------------------------------------------------------------------------------------


def test_calls_drafted_in_closed_reasoning_are_not_run() -> None:
    c = parse("Maybe:" + call_block("search", {"q": "a"}) + "\nNo wait.\n</think>\n\nDone.")
    assert c.tool_calls == []
    assert c.drafts == [ToolCall(name="search", arguments={"q": "a"})]
    assert c.content == "Done."


def test_draft_just_before_closing_think_is_still_a_draft() -> None:
    c = parse("I'll call:" + call_block("search", {"q": "a"}) + "\n</think>\n\n")
    assert c.tool_calls == []
    assert len(c.drafts) == 1


def test_trailing_calls_in_unclosed_reasoning_are_promoted() -> None:
    text = "I should search." + call_block("search", {"q": "a"}) + call_block("fetch", {"u": "b"}) + "\n"
    c = parse(text)
    assert not c.thinking_closed
    assert c.tool_calls == [
        ToolCall(name="search", arguments={"q": "a"}),
        ToolCall(name="fetch", arguments={"u": "b"}),
    ]
    assert c.drafts == []
    assert any("never closed" in note for note in c.repairs)
    assert c.thinking == text.strip()


def test_promotion_can_be_switched_off() -> None:
    text = "I should search." + call_block("search", {"q": "a"})
    c = parse(text, promote_trailing_drafts=False)
    assert c.tool_calls == []
    assert c.drafts == [ToolCall(name="search", arguments={"q": "a"})]
    assert c.repairs == []


def test_only_the_trailing_run_is_promoted() -> None:
    text = "A" + call_block("early", {}) + "\nthen more thought" + call_block("late", {})
    c = parse(text)
    assert c.tool_calls == [ToolCall(name="late")]
    assert c.drafts == [ToolCall(name="early")]


def test_a_draft_followed_by_reasoning_text_is_not_promoted() -> None:
    c = parse("A" + call_block("f", {}) + "\nhmm, but")
    assert c.tool_calls == []
    assert c.drafts == [ToolCall(name="f")]


def test_unclosed_draft_at_the_very_end_is_promoted_when_complete() -> None:
    c = parse('think\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}')
    assert c.tool_calls == [ToolCall(name="f", arguments={"a": 1})]


def test_promoted_malformed_draft_is_reported() -> None:
    c = parse("think\n<tool_call>\n{name: f}\n</tool_call>")
    assert c.tool_calls == []
    assert len(c.malformed) == 1


def test_malformed_drafts_in_closed_reasoning_are_not_reported() -> None:
    c = parse("<tool_call>nonsense</tool_call></think>answer")
    assert c.malformed == []
    assert c.drafts == []


# -- cuts ---------------------------------------------------------------------------------------------------


def test_invented_tool_response_is_cut() -> None:
    before = "ok</think>\n\n" + call_block("f", {"a": 1}) + "\n"
    c = parse(before + "<tool_response>\n42\n</tool_response>\nSo the answer is 42.")
    assert c.cut_at_tool_response
    assert c.tool_calls == [ToolCall(name="f", arguments={"a": 1})]
    assert c.content == ""
    assert c.raw == before


def test_tool_response_in_reasoning_promotes_the_call_before_it() -> None:
    text = "I'll call it." + call_block("f", {}) + "\n<tool_response>\nfake\n</tool_response>\nso</think>ans"
    c = parse(text)
    assert c.cut_at_tool_response
    assert not c.thinking_closed
    assert c.tool_calls == [ToolCall(name="f")]
    assert c.content == ""


def test_tool_response_right_after_an_unclosed_call_block() -> None:
    c = parse('</think><tool_call>\n{"name": "f", "arguments": {}}\n<tool_response>x')
    assert c.tool_calls == [ToolCall(name="f")]
    assert c.cut_at_tool_response


def test_end_of_turn_token_ends_the_output() -> None:
    c = parse("a</think>answer<|im_end|>")
    assert (c.content, c.raw, c.repairs) == ("answer", "a</think>answer", [])
    c = parse("a</think>answer<|im_end|>\n<|im_start|>user\nmore")
    assert c.content == "answer"
    assert c.repairs == ["ignored the text after <|im_end|>"]


# -- repairs inside a block ---------------------------------------------------------------------------------


def test_arguments_given_as_a_json_string_are_decoded() -> None:
    c = parse('</think><tool_call>{"name": "f", "arguments": "{\\"a\\": [1, 2]}"}</tool_call>')
    assert c.tool_calls == [ToolCall(name="f", arguments={"a": [1, 2]})]
    assert any("JSON string" in note for note in c.repairs)


def test_arguments_string_that_is_not_an_object_is_malformed() -> None:
    c = parse('</think><tool_call>{"name": "f", "arguments": "[1, 2]"}</tool_call>')
    assert "were a string that is not a JSON object (it held an array)" in c.malformed[0].error
    c = parse('</think><tool_call>{"name": "f", "arguments": "{oops"}</tool_call>')
    assert c.tool_calls == []
    assert '"f"' in c.malformed[0].error


def test_python_literal_arguments_are_repaired_with_a_note() -> None:
    c = parse(
        "</think><tool_call>\n"
        "{\"name\": \"f\", \"arguments\": {'q': 'it\\'s', 'ok': True, 'n': None, 't': (1, 2)}}"
        "\n</tool_call>"
    )
    assert c.tool_calls == [ToolCall(name="f", arguments={"q": "it's", "ok": True, "n": None, "t": [1, 2]})]
    assert any("Python literal" in note for note in c.repairs)
    c = parse("</think><tool_call>{'name': 'g', 'arguments': {'x': False}}</tool_call>")
    assert c.tool_calls == [ToolCall(name="g", arguments={"x": False})]


def test_python_literal_repair_never_evaluates_code() -> None:
    c = parse("</think><tool_call>{'name': 'f', 'arguments': {'a': __import__('os').getcwd()}}</tool_call>")
    assert c.tool_calls == []
    assert "not valid JSON" in c.malformed[0].error
    # Literals JSON cannot express (sets, bytes, complex) are refused rather than guessed at.
    c = parse("</think><tool_call>{'name': 'f', 'arguments': {'a': {1, 2}, 'b': b'x'}}</tool_call>")
    assert c.tool_calls == []
    assert len(c.malformed) == 1


def test_parameters_key_and_openai_wrapper_are_accepted_with_notes() -> None:
    c = parse('</think><tool_call>{"name": "f", "parameters": {"a": 1}}</tool_call>')
    assert c.tool_calls == [ToolCall(name="f", arguments={"a": 1})]
    assert any('"parameters"' in note for note in c.repairs)
    wrapped = {"type": "function", "function": {"name": "g", "arguments": '{"b": 2}'}}
    c = parse("</think><tool_call>" + json.dumps(wrapped) + "</tool_call>")
    assert c.tool_calls == [ToolCall(name="g", arguments={"b": 2})]
    assert any("OpenAI-style" in note for note in c.repairs)


def test_trailing_garbage_after_the_json_is_ignored_with_a_note() -> None:
    c = parse('</think><tool_call>\n{"name": "f", "arguments": {"a": 1}}}\n</tool_call>')
    assert c.tool_calls == [ToolCall(name="f", arguments={"a": 1})]
    assert c.repairs == ['ignored text after the call JSON: "}"']
    c = parse('</think><tool_call>{"name": "f", "arguments": {}} (this runs f)</tool_call>')
    assert c.tool_calls == [ToolCall(name="f")]


def test_code_fence_inside_the_block_is_removed() -> None:
    c = parse('</think><tool_call>\n```json\n{"name": "f", "arguments": {}}\n```\n</tool_call>')
    assert c.tool_calls == [ToolCall(name="f")]
    assert any("code fence" in note for note in c.repairs)


def test_several_objects_or_an_array_in_one_block() -> None:
    c = parse(
        '</think><tool_call>\n{"name": "a", "arguments": {}}\n{"name": "b", "arguments": {}}\n</tool_call>'
    )
    assert c.tool_calls == [ToolCall(name="a"), ToolCall(name="b")]
    c = parse(
        '</think><tool_call>[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]</tool_call>'
    )
    assert c.tool_calls == [ToolCall(name="a"), ToolCall(name="b")]
    c = parse('</think><tool_call>{"name": "a", "arguments": {}}\n{"name": "b", "argu</tool_call>')
    assert c.tool_calls == [ToolCall(name="a")]
    assert len(c.malformed) == 1


def test_call_without_arguments_gets_an_empty_object() -> None:
    for body in ('{"name": "now"}', '{"name": "now", "arguments": null}', '{"name": "now", "arguments": ""}'):
        c = parse("</think><tool_call>" + body + "</tool_call>")
        assert c.tool_calls == [ToolCall(name="now")], body
        assert len(c.repairs) == 1


def test_unknown_keys_beside_arguments_are_ignored_with_a_note() -> None:
    c = parse(
        '</think><tool_call>{"name": "f", "arguments": {"a": 1}, "reason": "x", "id": "c1"}</tool_call>'
    )
    assert c.tool_calls == [ToolCall(name="f", arguments={"a": 1})]
    assert c.repairs == ['ignored the keys "reason" in the call to "f"']


def test_whitespace_around_a_name_is_removed() -> None:
    c = parse('</think><tool_call>{"name": " f ", "arguments": {}}</tool_call>')
    assert c.tool_calls == [ToolCall(name="f")]


# -- malformed calls ----------------------------------------------------------------------------------------


def test_invalid_json_error_says_where_and_shows_the_form() -> None:
    c = parse('</think><tool_call>\n{"name": "f", "arguments": {"a" 1}}\n</tool_call>')
    [bad] = c.malformed
    assert bad == MalformedCall(
        raw='<tool_call>\n{"name": "f", "arguments": {"a" 1}}\n</tool_call>',
        error=(
            "Your <tool_call> block was not valid JSON (Expecting ':' delimiter at line 1 column 33). "
            'Write exactly one JSON object: {"name": <function-name>, "arguments": <args-json-object>}.'
        ),
    )
    c = parse('</think><tool_call>{"name": "f" "arguments": {}}</tool_call>')
    assert "(Expecting ',' delimiter at line 1 column 14)" in c.malformed[0].error


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("", "Your <tool_call> block was empty"),
        ("  \n ", "Your <tool_call> block was empty"),
        ("search(q='x')", "it started with \"search(q='x')\""),
        ('"just a string"', "it started with"),
        ("[1, 2]", "held an array that is not a list of call objects where a call object belongs"),
        ("[]", "held an array that is not a list"),
        ('[{"name": "f"}, 2]', "held an array that is not a list"),
        ("7", 'it started with "7"'),
        ('{"arguments": {}}', 'had no "name"'),
        ('{"name": 3, "arguments": {}}', 'The "name" in your <tool_call> must be a non-empty string'),
        ('{"name": "", "arguments": {}}', 'not ""'),
        ('{"name": "f", "arguments": [1]}', 'The "arguments" of your call to "f" must be a JSON object'),
        ('{"name": "f", "arguments": 7}', "not a number"),
        ('{"name": "f", "q": 1}', 'Your call to "f" had no "arguments" but had the keys "q"'),
        ('{"name": "f", "arguments": {"x": NaN}}', "not valid JSON"),
    ],
)
def test_malformed_blocks(body: str, expected: str) -> None:
    c = parse("</think>\n<tool_call>\n" + body + "\n</tool_call>\nafter")
    assert c.tool_calls == []
    [bad] = c.malformed
    assert expected in bad.error
    assert bad.raw == "<tool_call>\n" + body + "\n</tool_call>"
    assert c.content == "after"


def test_nested_tool_call_makes_the_open_block_malformed() -> None:
    text = '</think><tool_call>\n{"name": "a", "arguments": {}}\n' + call_block("b", {})
    c = parse(text)
    assert c.tool_calls == [ToolCall(name="b")]
    [bad] = c.malformed
    assert bad.error.startswith("You opened a new <tool_call> before closing the previous one")
    assert bad.raw == '<tool_call>\n{"name": "a", "arguments": {}}\n\n'


def test_stray_closing_tool_call_is_reported() -> None:
    c = parse('</think>{"name": "a", "arguments": {}}\n</tool_call>')
    assert c.tool_calls == []
    assert c.malformed[0].error.startswith("You wrote </tool_call> without an opening <tool_call>")


@pytest.mark.parametrize(
    "text",
    [
        "</think><tool_call>" + "[" * 100_000 + "</tool_call>",
        "</think><tool_call>" + "{'a': " * 5_000 + "</tool_call>",
        '</think><tool_call>{"name": "f", "arguments": {"n": ' + "9" * 10_000 + "}}</tool_call>",
        "</think><tool_call>{'name': 'f', 'arguments': {'s': '''a\nb'''}}</tool_call>",
        "</think><tool_call>{'name': 'f', 'arguments': {'s': 'unterminated}}</tool_call>",
        '</think><tool_call>{"name": "f", "arguments": {"a": 1e999}}</tool_call>',
        "\x00<\x00tool_call>\ud800</think>\ufeff<tool_call>\x00",
        "</think><tool_call>" + "[" * 50_000 + "]" * 50_000 + "</tool_call>",
        '</think><tool_call>{"name": ' + "[" * 980 + "]" * 980 + ', "arguments": {}}</tool_call>',
        '</think><tool_call>{"name": "f", "arguments": "' + "[" * 5_000 + "]" * 5_000 + '"}</tool_call>',
    ],
)
def test_hostile_blocks_never_raise(text: str) -> None:
    c = parse_completion(text)
    assert isinstance(c, Completion)


# -- streaming ----------------------------------------------------------------------------------------------


def test_events_arrive_as_soon_as_they_are_certain() -> None:
    parser = StreamParser()
    assert parser.feed("Think") == [ThinkingDelta(text="Think")]
    assert parser.feed("ing </thi") == [ThinkingDelta(text="ing")]  # the space waits, and so does "</thi"
    assert parser.in_thinking
    assert parser.feed("nk>\n\nHi") == [ContentDelta(text="Hi")]
    assert not parser.in_thinking
    assert parser.feed('\n<tool_call>\n{"name": "f", "arguments": {}}\n</tool_c') == []
    assert parser.feed("all>\nbye") == [ToolCallParsed(call=ToolCall(name="f")), ContentDelta(text="\n\nbye")]
    assert parser.finish() == []
    c = parser.close()
    assert (c.thinking, c.content) == ("Thinking", "Hi\n\nbye")
    assert parser.close() is c


def test_whitespace_is_held_until_something_follows_it() -> None:
    parser = StreamParser()
    assert parser.feed("a ") == [ThinkingDelta(text="a")]
    assert parser.feed(" \n") == []
    assert parser.feed("b") == [ThinkingDelta(text="  \nb")]


def test_finish_returns_the_events_only_the_end_settles() -> None:
    parser = StreamParser()
    events = parser.feed('x</think>ok <tool_call>{"name": "f", "arguments": {}}')
    assert events == [ThinkingDelta(text="x"), ContentDelta(text="ok")]
    assert parser.finish() == [ToolCallParsed(call=ToolCall(name="f"))]
    parser = StreamParser()
    parser.feed("x</think>ok <tool_call>{")
    [event] = parser.finish()
    assert isinstance(event, MalformedCallEvent)
    parser = StreamParser()
    parser.feed("think </thi")
    assert parser.finish() == [ThinkingDelta(text=" </thi")]


def test_feed_after_close_is_a_programming_error() -> None:
    parser = StreamParser()
    parser.close()
    with pytest.raises(RuntimeError, match="one StreamParser per completion"):
        parser.feed("x")


def test_text_after_a_cut_is_not_parsed() -> None:
    parser = StreamParser()
    parser.feed("a</think>b<tool_response>")
    assert parser.feed('<tool_call>{"name": "f", "arguments": {}}</tool_call>') == []
    c = parser.close()
    assert c.tool_calls == []
    assert c.raw == "a</think>b"


def test_held_back_text_never_exceeds_the_longest_tag() -> None:
    # The structural reason streaming is linear: only a possible tag prefix waits for the next delta.
    text = ("reasoning <b> <tool_ " * 50 + "</think>" + call_block("f", {"x": "<" * 40})) * 20
    parser = StreamParser()
    longest = 0
    for char in text:
        parser.feed(char)
        longest = max(longest, len(parser._buf))
    assert longest < len("<tool_response>")
    assert parser.close() == parse_completion(text)


def test_text_full_of_angle_brackets_is_text() -> None:
    # A `<` that starts no tag is plain text; slicing the rest of the text at each one was once quadratic.
    text = "x<y " * 50_000 + "</think>" + "a<b</c " * 30_000
    c = parse_completion(text)
    assert c.thinking == ("x<y " * 50_000).strip()
    assert c.content == ("a<b</c " * 30_000).strip()


def test_in_thinking_follows_drafts_and_cuts() -> None:
    parser = StreamParser()
    parser.feed("plan <tool_call>\n{")
    assert parser.in_thinking
    parser.feed("}</tool_call></think>")
    assert not parser.in_thinking
    parser = StreamParser(prompt_opened_think=False)
    assert not parser.in_thinking
    parser.feed("<think>")
    assert parser.in_thinking
