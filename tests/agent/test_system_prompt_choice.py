"""The default system prompt follows the model's format: `default` for reasoning turns, `direct` otherwise.

Small non-reasoning models (Qwen2.5-Coder-0.5B, measured in tests/e2e/test_real_models.py) read the
reasoning prompt's "think the task through" as a cue to write prose and code for the reader, and never call
a tool; the direct prompt asks them to call. The loop asks the model (`turn_opens_thinking`) when the run
starts, so a model that must load to know is asked off the caller's synchronous `iter()`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import prompts
from agent import Agent, StopReason
from agent.messages import NoteMessage, SystemMessage, ToolMessage, UserMessage
from agent.models import ModelChunk, ModelRequest, ModelUnavailableError, ScriptedModel, tool_call_text
from agent.testing import add
from agent.transcript import read_transcript
from tools import tool

DIRECT = prompts.render_system_prompt("direct", tools=True)
DEFAULT = prompts.render_system_prompt("default")


def system_of(model: ScriptedModel) -> str:
    first = model.requests[0].messages[0]
    assert isinstance(first, SystemMessage)
    return first.content


async def test_a_model_whose_turn_opens_no_reasoning_gets_the_direct_prompt(tmp_path: Path) -> None:
    # written as Qwen2.5 writes: no reasoning, no </think>, the call then the answer
    model = ScriptedModel([tool_call_text("add", {"a": 2, "b": 3}), "5"], opens_thinking=False)
    result = await Agent(model, [add], transcript_dir=tmp_path).run("2+3?")
    assert result.stop_reason is StopReason.FINAL_ANSWER
    assert result.answer == "5"
    assert result.tool_calls == 1
    assert system_of(model) == DIRECT
    assert "call it" in DIRECT
    assert "stop calling tools" in DIRECT
    assert "Think the task through" not in DIRECT
    # the transcript opens with the prompt the model saw
    assert result.transcript_path is not None
    record = read_transcript(result.transcript_path)
    assert [type(m) for m in record.messages[:2]] == [SystemMessage, UserMessage]
    assert record.messages[0].content == DIRECT


async def test_a_reasoning_model_and_an_unknown_one_get_the_default_prompt() -> None:
    for opens in (True, None):
        model = ScriptedModel(["R\n</think>\n\n4"], opens_thinking=opens)
        assert (await Agent(model, [add]).run("2+2?")).answer == "4"
        assert system_of(model) == DEFAULT


async def test_without_tools_the_direct_prompt_speaks_of_no_tools() -> None:
    model = ScriptedModel(["4"], opens_thinking=False)
    assert (await Agent(model).run("2+2?")).answer == "4"
    text = system_of(model)
    assert text == prompts.render_system_prompt("direct", tools=False)
    assert "tool" not in text


async def test_a_given_system_prompt_is_kept_and_the_model_is_not_asked() -> None:
    class Asked(ScriptedModel):
        async def turn_opens_thinking(self) -> bool | None:
            raise AssertionError("the model was asked although the system prompt was given")

    model = Asked(["4"], opens_thinking=False)
    run = Agent(model, system_prompt="Be terse.").iter("2+2?")
    assert [m.content for m in run.messages] == ["Be terse.", "2+2?"]  # known at once
    assert (await run.finish()).answer == "4"
    assert system_of(model) == "Be terse."


async def test_a_model_that_cannot_tell_yet_gets_the_default_and_its_turn_reports_the_failure() -> None:
    class Down:
        async def turn_opens_thinking(self) -> bool | None:
            raise ModelUnavailableError("the server at 127.0.0.1:9 is down")

        async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
            raise ModelUnavailableError("the server at 127.0.0.1:9 is down")
            yield ModelChunk()

    run = Agent(Down(), [add]).iter("2+2?")
    result = await run.finish()
    assert result.stop_reason is StopReason.MODEL_ERROR
    assert "is down" in result.detail
    assert isinstance(result.messages[0], SystemMessage)
    assert result.messages[0].content == DEFAULT


async def test_the_opening_is_made_once_the_run_starts() -> None:
    model = ScriptedModel(["4"], opens_thinking=False)
    run = Agent(model).iter("2+2?")
    assert run.messages == []  # the model has not been asked yet
    await run.finish()
    assert [type(m) for m in run.messages[:2]] == [SystemMessage, UserMessage]


# -- code shown instead of run -----------------------------------------------------------------------------


@tool
def python(code: str) -> str:
    """Run Python code (a stand-in that evaluates one expression).

    Args:
        code: the expression
    """
    return str(eval(code, {"__builtins__": {}}))


SHOWN = "You can compute it like this:\n\n```python\n2 + 3\n```\n\nThis prints 5."


async def test_code_shown_instead_of_run_is_not_the_answer_and_the_model_is_told_how_to_run_it() -> None:
    model = ScriptedModel(
        [SHOWN, tool_call_text("python", {"code": "2 + 3"}), "2 + 3 = 5"], opens_thinking=False
    )
    result = await Agent(model, [python]).run("What is 2 + 3?")
    assert result.answer == "2 + 3 = 5"
    assert result.tool_calls == 1
    note = result.messages[3]
    assert isinstance(note, NoteMessage)
    assert note.kind == "unrun_code"
    assert '<tool_call>{"name": "python"' in note.content
    # the code itself was never run: the only tool result is the one the model asked for
    assert [m.content for m in result.messages if isinstance(m, ToolMessage)] == ["5"]


async def test_the_note_comes_once_and_code_that_is_the_answer_stands() -> None:
    model = ScriptedModel([SHOWN, SHOWN], opens_thinking=False)
    result = await Agent(model, [python]).run("Show me how to add 2 and 3 in Python.")
    assert result.stop_reason is StopReason.FINAL_ANSWER
    assert result.answer == SHOWN
    assert result.steps == 2


async def test_code_shown_after_calls_that_all_failed_gets_the_note() -> None:
    # Qwen2.5-Coder-1.5B, file_roundtrip: two failed calls, then code in a block and an invented sum (measured)
    failed = tool_call_text("python", {"code": "2 +"})
    model = ScriptedModel(
        [failed, SHOWN, tool_call_text("python", {"code": "2 + 3"}), "5"], opens_thinking=False
    )
    result = await Agent(model, [python]).run("2 + 3?")
    assert result.answer == "5"
    kinds = [m.kind for m in result.messages if isinstance(m, NoteMessage)]
    assert kinds == ["unrun_code", "answer_reminder"]  # the reminder after the call that succeeded


async def test_code_in_an_answer_after_tools_ran_or_for_no_such_tool_stands() -> None:
    after_a_call = ScriptedModel([tool_call_text("python", {"code": "2 + 3"}), SHOWN], opens_thinking=False)
    assert (await Agent(after_a_call, [python]).run("2 + 3?")).answer == SHOWN
    other_language = "```javascript\n2 + 3\n```"
    no_such_tool = ScriptedModel([other_language], opens_thinking=False)
    assert (await Agent(no_such_tool, [python]).run("2 + 3 in JS?")).answer == other_language
    no_tools = ScriptedModel([SHOWN], opens_thinking=False)
    assert (await Agent(no_tools).run("2 + 3?")).answer == SHOWN
