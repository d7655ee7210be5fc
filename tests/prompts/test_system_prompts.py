"""System prompts and loop notes: the *.j2 files under prompts/templates, rendered strictly."""

from __future__ import annotations

from typing import Any

import pytest

from prompts import (
    PromptTemplateError,
    available_notes,
    available_system_prompts,
    render_note,
    render_system_prompt,
)

# In use the parser passes agent.parsing.CALL_OBJECT and CALL_FORMAT (three lines); one-line stand-ins keep the
# paragraph check below about the templates' own text.
_CALL_OBJECT = '{"name": "f", "arguments": {}}'
_CALL_FORMAT = f"<tool_call>{_CALL_OBJECT}</tool_call>"

NOTE_VARIABLES: dict[str, dict[str, Any]] = {
    # the parser's sentences for unusable <tool_call> blocks
    "answer_reminder": {"results": 1},
    "call_arguments_missing": {"quoted_name": '"get_weather"', "keys": '"city"'},
    "call_arguments_string": {"quoted_name": '"get_weather"', "detail": "it held an array"},
    "call_arguments_type": {"quoted_name": '"get_weather"', "kind": "a string"},
    "call_bad_name": {"value": "42", "call_object": _CALL_OBJECT},
    "call_empty": {"call_format": _CALL_FORMAT},
    "call_invalid_json": {"detail": "Expecting value at line 1 column 9", "call_object": _CALL_OBJECT},
    "call_nested": {"call_format": _CALL_FORMAT},
    "call_no_name": {"call_object": _CALL_OBJECT},
    "call_not_json": {"start": '"get_weather(city=Paris)"', "call_object": _CALL_OBJECT},
    "call_not_object": {"kind": "a number", "call_object": _CALL_OBJECT},
    "call_stray_close": {"call_format": _CALL_FORMAT},
    "call_too_deep": {"max_depth": 64, "call_format": _CALL_FORMAT},
    "call_truncated": {"detail": "the block was empty", "call_format": _CALL_FORMAT},
    "empty_reply": {},
    "reply_cut_off": {"max_tokens": 320},
    "repeated_call": {"name": "get_weather", "count": 3},
    "run_timeout": {},
    "stopped_stuck": {"times": 4},
    "tool_choice_named": {"tool": "search", "called": "fetch"},
    "tool_choice_none": {},
    "state_lost": {"timeout_s": 10},
    "thinking_budget": {},
    "tool_required": {"tool_name": "search"},
    "unexecuted_call": {"name": "search"},
    "unrun_code": {"name": "python"},
    # what the code tools (tools/code.py) tell the model about a sandbox call
    "python_interrupted": {"timeout_s": 30},
    "python_line_break_in_string": {},
    "python_one_line_blocks": {},
    "python_return_as_value": {},
    "python_out_of_memory": {"memory": "1g"},
    "python_killed": {"signal": "SIGKILL"},
    "python_native_crash": {"signal": "SIGSEGV"},
    "python_exited": {"status": 3},
    "python_fresh_interpreter": {},
    "sandbox_replaced_before": {},
    "shell_timed_out": {"timeout_s": 30},
    "shell_cancelled": {},
    "shell_killed": {"signal": "SIGTERM"},
    "shell_exit_status": {"status": 2},
    "shell_out_of_memory": {"memory": "1g"},
    "shell_python_lost": {"memory": "1g"},
    "sandbox_unresponsive": {},
    "sandbox_died": {},
    "sandbox_protocol": {},
    "sandbox_closed": {},
    "file_written": {"size": "1,024", "path": "/workspace/a.txt"},
    "file_binary": {"path": "b.bin", "size": "100"},
    "file_empty": {},
    "file_bad_path": {},
    "file_outside_workspace": {"path": "/etc/passwd", "workspace": "/workspace"},
    "file_not_a_file": {"path": "pkg"},
    "file_too_large": {"path": "big.bin", "limit": "16,777,216"},
    "sandbox_limits": {"memory": "1g", "cpus": "1", "disk": "256m", "workspace": "/workspace"},
    "tool_python": {"workspace": "/workspace", "timeout_s": 30, "limits": "Limits: 1g."},
    "tool_shell": {"workspace": "/workspace", "timeout_s": 30, "limits": "Limits: 1g."},
    "tool_write_file": {"workspace": "/workspace"},
    "tool_read_file": {"workspace": "/workspace"},
    "param_code": {},
    "param_command": {},
    "param_path": {"workspace": "/workspace"},
    "param_content": {},
    # agent.context: what the model reads in place of what no longer fits its context
    "observation_masked": {
        "name": "python",
        "chars": "3,000",
        "tokens": "800",
        "path": "/workspace/.observations/c.txt",
    },
    "context_digest": {
        "first_step": 1,
        "last_step": 9,
        "calls": [("python", 8)],
        "folder": "/workspace/.observations",
    },
    "context_summary": {"first_step": 1, "last_step": 9, "summary": "Found x.", "folder": ""},
}


def test_the_shipped_templates_are_listed() -> None:
    assert available_system_prompts() == ["context_summary", "default", "direct", "solve"]
    assert available_notes() == sorted(NOTE_VARIABLES)


def test_default_prompt_asks_to_think_then_call_or_answer_without_describing_the_format() -> None:
    text = render_system_prompt("default")
    assert "Think" in text
    assert "call" in text
    assert "final answer" in text
    assert "<tool_call>" not in text
    assert "# Tools" not in text
    assert not text.endswith("\n")


def test_direct_prompt_asks_to_call_rather_than_show_and_leaves_the_format_to_the_tools_section() -> None:
    text = render_system_prompt("direct", tools=True)
    assert "Think" not in text
    assert "call it" in text
    assert "final answer" in text
    assert "tools section below" in text  # the format's own tool section (or the tool prompt) follows
    assert "# Tools" not in text
    assert not text.endswith("\n")
    alone = render_system_prompt("direct", tools=False)
    assert "tool" not in alone
    assert not alone.endswith("\n")


def test_solve_prompt_names_the_workspace_and_the_solution_file() -> None:
    text = render_system_prompt("solve", workspace="/workspace", solution_file="solution.py")
    assert "/workspace" in text
    assert "solution.py" in text
    assert "tests" in text


def test_a_missing_variable_fails_and_names_what_the_template_takes() -> None:
    with pytest.raises(
        PromptTemplateError, match=r"'solution_file' is undefined.*takes: solution_file, workspace"
    ):
        render_system_prompt("solve", workspace="/workspace")


def test_an_unexpected_variable_fails() -> None:
    with pytest.raises(PromptTemplateError, match="takes no variable workspce"):
        render_system_prompt("solve", workspce="/w", workspace="/w", solution_file="s.py")


def test_an_unknown_name_lists_the_available_ones() -> None:
    with pytest.raises(
        PromptTemplateError,
        match="no system prompt named 'nope'; available: context_summary, default, direct, solve",
    ):
        render_system_prompt("nope")
    with pytest.raises(
        PromptTemplateError, match="available: answer_reminder, call_arguments_missing, call_arguments_string"
    ):
        render_note("../default")


# the summary the model wrote is shown as it wrote it, on lines of its own
MULTILINE_NOTES = {"context_summary"}
# notes whose variables choose the wording rather than appear in it
WORDING_ONLY = {"answer_reminder"}


@pytest.mark.parametrize("name", sorted(NOTE_VARIABLES))
def test_every_note_renders_as_one_paragraph(name: str) -> None:
    text = render_note(name, **NOTE_VARIABLES[name])
    assert text
    assert text == text.strip()
    assert ("\n" in text) == (name in MULTILINE_NOTES)
    if name in WORDING_ONLY:
        assert render_note(name, results=2) != text
        return
    for value in NOTE_VARIABLES[name].values():
        for part in value if isinstance(value, list) else [value]:
            for item in part if isinstance(part, tuple) else [part]:
                assert str(item) in text


def test_thinking_budget_sentence_is_exact() -> None:
    assert render_note("thinking_budget") == "Time is up; I should conclude my reasoning now and answer."


def test_repeated_call_nudge() -> None:
    text = render_note("repeated_call", name="get_weather", count=3)
    assert text.startswith("You have called get_weather with the same arguments 3 times")


def test_optional_note_variables() -> None:
    assert "seconds" not in render_note("state_lost")
    assert "a tool;" in render_note("tool_required")


def test_notes_are_strict_too() -> None:
    with pytest.raises(PromptTemplateError, match="'count' is undefined"):
        render_note("repeated_call", name="get_weather")
