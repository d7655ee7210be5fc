"""`qwq-agent export`: runs become the exact text the model saw and produced, or its messages.

Runs are real agent runs (ScriptedModel, an in-process tool), so the transcripts are what the loop writes.
The chatml prompt is compared with what the model really received at its final turn: the request the
ScriptedModel kept, rendered by the same renderer the server backends use.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import prompts
from agent.batch.export import (
    RENDERERS,
    ExportError,
    ExportFilter,
    ExportStats,
    QwQRenderer,
    export_runs,
)
from agent.batch.results import BatchResult
from agent.cli import main as cli_main
from agent.loop import Agent, RunResult
from agent.messages import AssistantMessage
from agent.models import ScriptedModel, completion_text, tool_call_text
from agent.transcript import read_transcript
from tools.base import tool


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first
        b: the second
    """
    return a + b


def solve_script(a: int, b: int, *, answer: int | None = None) -> list[str]:
    return [
        completion_text("I add them with the tool.", tool_call_text("add", {"a": a, "b": b})),
        completion_text(
            f"The tool said {a + b}.", content=f"The sum is {answer if answer is not None else a + b}."
        ),
    ]


async def run(tmp_path: Path, script: list[str], **options: Any) -> tuple[RunResult, ScriptedModel]:
    model = ScriptedModel(script)
    agent = Agent(model, [add], transcript_dir=tmp_path / "runs", **options)
    result = await agent.run("What is the sum?")
    return result, model


@pytest.mark.parametrize("keep_thinking", ["none", "current_task"])
async def test_chatml_is_the_last_prompt_plus_the_generated_text(tmp_path: Path, keep_thinking: str) -> None:
    result, model = await run(tmp_path, solve_script(2, 3), keep_thinking=keep_thinking)
    assert result.transcript_path is not None
    rows = list(export_runs(result.transcript_path, format="chatml"))
    assert len(rows) == 1
    row = rows[0]
    last = model.requests[-1]
    seen = prompts.render(list(last.messages), list(last.tools), keep_thinking=last.keep_thinking)
    assert row["prompt"] == seen
    assert row["completion"] == model.outputs[-1] + "<|im_end|>\n"
    assert row["text"] == seen + row["completion"]
    # the final turn keeps its reasoning; the earlier turn's reasoning is dropped unless the run kept it
    assert row["text"].endswith(
        "<|im_start|>assistant\n<think>\nThe tool said 5.\n</think>\n\nThe sum is 5.<|im_end|>\n"
    )
    assert ("I add them with the tool." in row["prompt"]) is (keep_thinking == "current_task")
    assert '<tools>\n{"type": "function", "function": {"name": "add"' in row["prompt"]
    assert row["id"] == result.transcript_path.stem
    assert row["stop_reason"] == "final_answer"
    assert row["steps"] == 2
    assert row["solved"] is None


def test_a_turn_without_recorded_text_is_rebuilt_with_its_reasoning() -> None:
    message = AssistantMessage(content="Done.", thinking="Think.")
    assert QwQRenderer().completion(message) == "Think.\n</think>\n\nDone.<|im_end|>\n"


async def test_sharegpt_has_the_conversation_and_the_final_reasoning(tmp_path: Path) -> None:
    result, _ = await run(tmp_path, solve_script(2, 3))
    assert result.transcript_path is not None
    (row,) = export_runs(result.transcript_path, format="sharegpt")
    assert row["system"].startswith("You are")
    assert json.loads(row["tools"])[0]["function"]["name"] == "add"
    assert row["conversations"] == [
        {"from": "human", "value": "What is the sum?"},
        {"from": "function_call", "value": '{"name": "add", "arguments": {"a": 2, "b": 3}}'},
        {"from": "observation", "value": "5"},
        {"from": "gpt", "value": "<think>\nThe tool said 5.\n</think>\n\nThe sum is 5."},
    ]


async def results_file(tmp_path: Path) -> Path:
    """Three runs: solved, wrong answer, stopped by the step budget; a results file as `batch` writes."""
    rows = []
    for task_id, script, max_steps, solved in [
        ("good", solve_script(1, 1), 5, True),
        ("wrong", solve_script(1, 1, answer=3), 5, False),
        ("long", solve_script(1, 1), 1, False),
    ]:
        result, _ = await run(tmp_path, script, max_steps=max_steps)
        rows.append(
            BatchResult(
                id=task_id,
                answer=result.answer,
                stop_reason=result.stop_reason.value,
                steps=result.steps,
                # relative to the results file's directory, as a batch run from there writes it
                transcript=str(Path("runs") / Path(str(result.transcript_path)).name),
                solved=solved,
            ).to_row()
        )
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


async def test_filters_select_runs_from_a_results_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = await results_file(tmp_path)
    monkeypatch.chdir(tmp_path.parent)  # transcripts resolve against the results file's directory too

    def ids(keep: ExportFilter) -> tuple[list[str], dict[str, int]]:
        stats = ExportStats()
        return [r["id"] for r in export_runs(source, keep=keep, stats=stats)], stats.skipped

    assert ids(ExportFilter()) == (["good", "wrong", "long"], {})
    assert ids(ExportFilter(solved_only=True)) == (["good"], {"not solved": 2})
    assert ids(ExportFilter(stop_reasons=frozenset({"max_steps"}))) == (["long"], {"stop reason": 2})
    assert ids(ExportFilter(max_steps=1)) == (["long"], {"too many steps": 2})


async def test_solved_only_needs_a_results_file(tmp_path: Path) -> None:
    await run(tmp_path, solve_script(1, 2))
    with pytest.raises(ExportError, match="needs a results file"):
        list(export_runs(tmp_path / "runs", keep=ExportFilter(solved_only=True)))


async def test_unfinished_and_older_runs_are_skipped_with_a_reason(tmp_path: Path) -> None:
    finished, _ = await run(tmp_path, solve_script(1, 2))
    assert finished.transcript_path is not None
    runs = tmp_path / "runs"
    lines = finished.transcript_path.read_text().splitlines()
    # killed mid-run: no final step and no run_end (a last step that answered would make the run finished)
    (runs / "killed.jsonl").write_text("\n".join(lines[:-2]) + "\n")
    start = json.loads(lines[0])
    del start["config"]["tool_specs"]  # as written before tool definitions were recorded
    (runs / "older.jsonl").write_text("\n".join([json.dumps(start), *lines[1:]]) + "\n")
    (runs / "notes.jsonl").write_text('{"something": "else"}\n')
    stats = ExportStats()
    exported = [r["id"] for r in export_runs(runs, stats=stats)]
    assert exported == [finished.transcript_path.stem]
    assert stats.skipped == {"unfinished run": 1, "tool definitions not recorded (older transcript)": 1}


async def test_export_command_writes_the_file_and_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    source = await results_file(tmp_path)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "train.jsonl"
    code = cli_main(["export", str(source), "-o", str(out), "--format", "sharegpt", "--solved-only"])
    assert code == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["good"]
    assert "exported 1 run(s)" in capsys.readouterr().err
    assert cli_main(["export", str(tmp_path / "runs"), "-o", str(out), "--solved-only"]) == 2
    assert "needs a results file" in capsys.readouterr().err
    assert cli_main(["export", str(source), "-o", str(out), "--chat-format", "nope"]) == 2
    assert "choose from qwq" in capsys.readouterr().err
    assert sorted(RENDERERS) == ["qwq"]


async def test_a_transcript_read_back_gives_the_same_row(tmp_path: Path) -> None:
    result, _ = await run(tmp_path, solve_script(4, 5))
    assert result.transcript_path is not None
    record = read_transcript(result.transcript_path)
    assert record.config["tool_specs"] == [add.to_openai()]
