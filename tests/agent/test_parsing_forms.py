"""The call forms real models write instead of `<tool_call>`, and the parser's limits on hostile calls."""

from __future__ import annotations

import json
import threading

import pytest

from agent.events import ThinkingDelta
from agent.parsing import MAX_DEPTH, StreamParser, parse_completion
from tools.types import ToolCall

NAMES = ["python", "read_file"]
CALL = {"name": "python", "arguments": {"code": "print(6 * 7)"}}
CALL_JSON = json.dumps(CALL)
EXPECTED = [ToolCall(name="python", arguments={"code": "print(6 * 7)"})]


def answer(text: str, tool_names: list[str] | None = NAMES) -> tuple[list[ToolCall], str, list[str]]:
    """Parse `text` as a whole answer (no reasoning), and check that streaming it gives the same result."""
    whole = parse_completion(text, prompt_opened_think=False, tool_names=tool_names)
    for size in (1, 3, 11):
        parser = StreamParser(prompt_opened_think=False, tool_names=tool_names)
        for start in range(0, len(text), size):
            parser.feed(text[start : start + size])
        assert parser.close() == whole, size
    return whole.tool_calls, whole.content, whole.repairs


# Each form a model was seen to write (or llama.cpp's Hermes-2-Pro parser accepts), as the model writes it.
POSITIVE = {
    "tools tag": f"<tools>\n{CALL_JSON}\n</tools>",
    "function_call tag": f"<function_call>{CALL_JSON}</function_call>",
    "tool tag": f"<tool>\n{CALL_JSON}\n</tool>",
    "function tag": f"<function>{CALL_JSON}</function>",
    "functions tag": f"<functions>{CALL_JSON}</functions>",
    "response tag": f"<response>{CALL_JSON}</response>",
    "json tag": f"<json>{CALL_JSON}</json>",
    "xml tag": f"<xml>{CALL_JSON}</xml>",
    "json fence": f"I will compute it.\n```json\n{CALL_JSON}\n```",
    "xml fence": f"```xml\n{CALL_JSON}\n```",
    "bare fence": f"```\n{CALL_JSON}\n```",
    "fence in a tag": f"<tools>\n```json\n{CALL_JSON}\n```\n</tools>",
    "function=NAME": '<function=python>{"code": "print(6 * 7)"}</function>',
    "bare line at the end": f"Let me check.\n{CALL_JSON}\n",
    "indented bare line": f"Let me check:\n  {CALL_JSON}",
}


@pytest.mark.parametrize("form", sorted(POSITIVE))
def test_each_form_naming_a_known_tool_is_a_call(form: str) -> None:
    calls, content, repairs = answer(POSITIVE[form])
    assert calls == EXPECTED
    assert CALL_JSON not in content
    assert len(repairs) == 1
    assert "instead of <tool_call>" in repairs[0]


@pytest.mark.parametrize("form", sorted(POSITIVE))
def test_each_form_naming_an_unknown_tool_stays_content(form: str) -> None:
    text = POSITIVE[form].replace('"python"', '"rm_rf"').replace("function=python", "function=rm_rf")
    calls, content, repairs = answer(text)
    assert calls == []
    assert repairs == []
    assert content == text.strip()


@pytest.mark.parametrize("form", sorted(POSITIVE))
def test_without_tool_names_every_form_is_content_as_before(form: str) -> None:
    calls, content, _ = answer(POSITIVE[form], tool_names=None)
    assert calls == []
    assert content == POSITIVE[form].strip()


@pytest.mark.parametrize(
    "text",
    [
        # arguments that are not an object
        '<tools>{"name": "python", "arguments": [1, 2]}</tools>',
        '```json\n{"name": "python", "arguments": "print(1)"}\n```',
        # JSON inside prose is an example, not a call
        f"For instance {CALL_JSON} would run code.",
        # a bare object followed by more prose is not the end of the turn
        f"{CALL_JSON}\nThat is how a call looks.",
        # code in another language is passed on untouched, even when it holds call-like lines
        f"```python\n{CALL_JSON}\n```",
        # the arguments of <function=NAME> must be one object
        "<function=python>[1]</function>",
        # an unrelated JSON answer
        '```json\n{"result": 42}\n```',
    ],
)
def test_lookalikes_stay_content(text: str) -> None:
    calls, content, repairs = answer(text)
    assert calls == []
    assert repairs == []
    assert content == text.strip()


def test_several_bare_calls_on_their_own_lines() -> None:
    second = {"name": "read_file", "arguments": {"path": "a.txt"}}
    calls, content, _ = answer(f"{CALL_JSON}\n{json.dumps(second)}\n")
    assert calls == [*EXPECTED, ToolCall(name="read_file", arguments={"path": "a.txt"})]
    assert content == ""


def test_a_bare_call_line_repeated_runs_once() -> None:
    """A small model stutters its call line; the same call written again on the next line is not a second call,
    while two different calls, or the same call apart, are each run."""
    calls, content, _ = answer(f"{CALL_JSON}\n{CALL_JSON}\n")
    assert calls == EXPECTED
    assert content == ""
    second = json.dumps({"name": "read_file", "arguments": {"path": "a.txt"}})
    calls, _, _ = answer(f"{CALL_JSON}\n{second}\n{CALL_JSON}\n")
    assert [c.name for c in calls] == ["python", "read_file", "python"]


def test_forms_in_reasoning_are_not_run() -> None:
    completion = parse_completion(f"Maybe <tools>{CALL_JSON}</tools>.\n</think>\n\nDone.", tool_names=NAMES)
    assert completion.tool_calls == []
    assert completion.content == "Done."


def test_the_standard_form_still_runs_unknown_names_for_the_toolbox_to_refuse() -> None:
    text = '<tool_call>\n{"name": "nope", "arguments": {}}\n</tool_call>'
    calls, _, _ = answer(text)
    assert calls == [ToolCall(name="nope", arguments={})]


# -- limits -----------------------------------------------------------------------------------------------


def nested(depth: int) -> str:
    return '{"name": "python", "arguments": {"x": ' + "[" * depth + "]" * depth + "}}"


@pytest.mark.parametrize("depth", [MAX_DEPTH - 2, MAX_DEPTH + 1, 256, 300, 2000, 100_000])
def test_nesting_is_bounded_at_parse_time(depth: int) -> None:
    completion = parse_completion(f"</think>\n<tool_call>\n{nested(depth)}\n</tool_call>")
    if depth + 2 <= MAX_DEPTH:
        assert len(completion.tool_calls) == 1
        completion.tool_calls[0].model_dump()  # a transcript can write it
    else:
        assert completion.tool_calls == []
        assert "nested more than" in completion.malformed[0].error


def test_the_depth_verdict_does_not_depend_on_the_callers_stack() -> None:
    text = f"</think>\n<tool_call>\n{nested(MAX_DEPTH - 2)}\n</tool_call>"
    shallow = parse_completion(text)

    def deep(level: int) -> object:
        return parse_completion(text) if level == 0 else deep(level - 1)

    verdicts: list[object] = []
    worker = threading.Thread(target=lambda: verdicts.append(deep(900)))
    worker.start()
    worker.join()
    assert verdicts == [shallow]
    assert len(shallow.tool_calls) == 1


@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity", "-Infinity"])
def test_numbers_json_cannot_say_are_refused(number: str) -> None:
    completion = parse_completion(
        f'</think>\n<tool_call>\n{{"name": "f", "arguments": {{"x": {number}}}}}\n</tool_call>'
    )
    assert completion.tool_calls == []
    assert len(completion.malformed) == 1


@pytest.mark.parametrize("escape", ["\\ud800", "\\udc80", "\\udbff\\u0041"])
def test_lone_surrogates_in_arguments_become_replacement_characters(escape: str) -> None:
    text = f'</think>\n<tool_call>\n{{"name": "f\\ud800", "arguments": {{"k{escape}": "v{escape}"}}}}\n</tool_call>'
    (call,) = parse_completion(text).tool_calls
    dumped = json.dumps(call.model_dump(), ensure_ascii=False)
    dumped.encode("utf-8")  # would raise on a lone surrogate
    assert "\ufffd" in call.name
    assert all("\ufffd" in key for key in call.arguments)


def test_lone_surrogates_in_the_text_itself_become_replacement_characters() -> None:
    # A server's JSON event can carry "\ud800" escapes in the text: reasoning, content and raw must encode.
    text = "think \ud800\n</think>\n\nanswer \udc80 end"
    completion = parse_completion(text)
    assert completion.thinking == "think \ufffd"
    assert completion.content == "answer \ufffd end"
    for field in (completion.thinking, completion.content, completion.raw):
        field.encode("utf-8")


def test_a_surrogate_pair_split_across_deltas_becomes_its_character() -> None:
    parser = StreamParser()
    events = parser.feed("a\ud83d") + parser.feed("\ude00b \ud800") + parser.feed("\udbff") + parser.finish()
    completion = parser.close()
    assert completion.thinking == "a\U0001f600b \ufffd\ufffd"
    assert "".join(e.text for e in events if isinstance(e, ThinkingDelta)) == completion.thinking
    assert completion.raw == completion.thinking


def test_a_note_that_quotes_a_name_given_as_a_surrogate_escape_encodes() -> None:
    # Found by the run fuzz (seed 20268620): the note quoted the decoded name, lone surrogate and all.
    text = '</think>\n<tool_call>\n{"name": "\\udfff", "arguments": "{\\"a\\" 1}"}\n</tool_call>'
    (malformed,) = parse_completion(text).malformed
    malformed.error.encode("utf-8")
    malformed.raw.encode("utf-8")
    assert "\ufffd" in malformed.error


@pytest.mark.parametrize(
    ("text", "code", "repair"),
    [
        # Qwen2.5-Coder-0.5B, file_roundtrip: the closing quote forgotten, then the turn ended (measured)
        (
            '{"name": "python", "arguments": {"code": "sum(i for i in range(1, 31) if i % 3 == 0)}}\n',
            "sum(i for i in range(1, 31) if i % 3 == 0)",
            "quote was added",
        ),
        # Qwen2.5-Coder-0.5B, sha256: the outer object's brace forgotten, then the turn ended (measured)
        (
            '{"name": "python", "arguments": {"code": "import hashlib; hashlib.sha256(b\'x\').hexdigest()"}',
            "import hashlib; hashlib.sha256(b'x').hexdigest()",
            "closing braces were added",
        ),
    ],
)
def test_a_bare_call_cut_short_at_the_end_of_the_turn_is_completed(text: str, code: str, repair: str) -> None:
    calls, content, repairs = answer(text)
    assert calls == [ToolCall(name="python", arguments={"code": code})]
    assert content == ""
    assert any(repair in r for r in repairs)


@pytest.mark.parametrize(
    "text",
    [
        '{"name": "python", "arguments": {"code": "print(1)"',  # cut after a value: no brace to finish
        '{"name": "python", "arguments": {"code": "print(1)"}\nmore prose',  # the answer goes on
        '{"name": "nope", "arguments": {"code": "print(1)"}',  # no such tool
        '{"name": "python", "arguments": {"code": "print(1)}}\nand then some prose',  # the answer goes on
        '{"name": "nope", "arguments": {"code": "print(1)}}',  # no such tool
        '{"name": "python", "arguments": {"code": "print(1)}',  # one brace: not the call's end
        '{"name": "python", "arguments": {"code": "d = {1: 2}}}',  # braces that do not balance once quoted
        'Example: {"name": "python", "arguments": {"code": "x}}',  # not opening a line
    ],
)
def test_unclosed_strings_that_are_not_such_a_call_stay_content(text: str) -> None:
    calls, content, _ = answer(text)
    assert calls == []
    assert content == text.strip() or content == text
