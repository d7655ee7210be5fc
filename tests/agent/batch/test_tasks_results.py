"""The batch's input (task lines, checks) and output (the results file a killed driver may have torn)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from agent.batch.results import BatchResult, ResultsFile, ResultsFileError, read_rows
from agent.batch.tasks import BatchTask, Check, TaskFileError, check_tools, load_tasks, parse_tasks


def lines(*objects: object) -> list[str]:
    return [o if isinstance(o, str) else json.dumps(o) for o in objects]


def test_task_lines_are_read_with_defaults_and_shorthands() -> None:
    tasks = list(
        parse_tasks(
            lines(
                {"id": 7, "task": "a"},
                "",
                "# a comment",
                {"id": "b", "task": "b", "tools": "python, shell", "max_steps": 3},
                {
                    "id": "c",
                    "task": "c",
                    "tools": "none",
                    "metadata": {"k": 1},
                    "check": {"answer_equals": "x"},
                },
            )
        )
    )
    assert [t.id for t in tasks] == ["7", "b", "c"]
    assert tasks[0].tools is None
    assert tasks[0].max_steps is None
    assert tasks[0].check is None
    assert tasks[1].tools == ["python", "shell"]
    assert tasks[1].max_steps == 3
    assert tasks[2].tools == []
    assert tasks[2].metadata == {"k": 1}
    assert tasks[2].check == Check(answer_equals="x")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "not a JSON object"),
        ("[1, 2]", "expected a JSON object"),
        ('{"id": "a"}', "task: Field required"),
        ('{"id": "", "task": "t"}', "id must not be empty"),
        ('{"id": "a", "task": "t", "colour": 1}', "colour: Extra inputs are not permitted"),
        ('{"id": "a", "task": "t", "max_steps": 0}', "max_steps"),
        ('{"id": "a", "task": "t", "check": {}}', "needs answer_contains, answer_equals or answer_regex"),
        ('{"id": "a", "task": "t", "check": {"answer_regex": "("}}', "not a valid regular expression"),
    ],
)
def test_bad_task_lines_name_the_line_and_the_problem(line: str, message: str) -> None:
    with pytest.raises(TaskFileError) as raised:
        list(parse_tasks([line], "tasks.jsonl"))
    assert str(raised.value).startswith("tasks.jsonl:1:")
    assert message in str(raised.value)


def test_duplicate_ids_are_refused_because_resume_matches_by_id() -> None:
    with pytest.raises(TaskFileError, match=r"tasks:2: the id '1' was already used"):
        list(parse_tasks(lines({"id": 1, "task": "a"}, {"id": "1", "task": "b"}), "tasks"))


def test_a_missing_task_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(TaskFileError, match="cannot read the task file"):
        load_tasks(tmp_path / "absent.jsonl")


def test_unknown_tool_names_are_refused() -> None:
    tasks = [BatchTask(id="a", task="t", tools=["python", "browser"])]
    with pytest.raises(TaskFileError, match=r"task 'a' names unknown tool\(s\) browser"):
        check_tools(tasks, ["python", "shell"])


@pytest.mark.parametrize(
    ("check", "answer", "solved"),
    [
        ({"answer_contains": "42"}, "The answer is 42.", True),
        ({"answer_contains": "42"}, "The answer is 41.", False),
        ({"answer_contains": ["4", "2"]}, "2 and 4", True),
        ({"answer_contains": ["4", "5"]}, "2 and 4", False),
        ({"answer_equals": "Paris"}, "  Paris\n", True),
        ({"answer_equals": "Paris"}, "paris", False),
        ({"answer_equals": "Paris", "ignore_case": True}, "PARIS", True),
        ({"answer_regex": r"\b42\b"}, "x 42 y", True),
        ({"answer_regex": r"\b42\b"}, "x 420 y", False),
        ({"answer_regex": r"^yes", "ignore_case": True}, "Yes, it is", True),
        ({"answer_contains": "4", "answer_regex": "^no"}, "4", False),
    ],
)
def test_checks_judge_the_final_answer(check: dict[str, object], answer: str, solved: bool) -> None:
    assert Check.model_validate(check).passes(answer) is solved


def row(task_id: str) -> dict[str, object]:
    return BatchResult(id=task_id, answer="a", stop_reason="final_answer").to_row()


def test_results_file_refuses_to_mix_batches_without_resume(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(row("a")) + "\n")
    with pytest.raises(ResultsFileError, match="--resume"):
        ResultsFile(path).open(resume=False)


def test_rows_are_synced_off_the_caller_thread_and_at_close(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The periodic sync runs on a thread of its own: the caller is the driver's event loop."""
    synced_on: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced_on.append(threading.current_thread().name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with ResultsFile(tmp_path / "r.jsonl") as results:
        results.open(resume=False)
        for name in "abc":  # within a second of each other: one periodic sync
            results.append(row(name))
    assert len(synced_on) == 2
    assert synced_on[0].startswith("qwq-results-sync")
    assert synced_on[1] == threading.current_thread().name  # close syncs before it returns
    assert [r["id"] for r in read_rows(tmp_path / "r.jsonl")] == ["a", "b", "c"]


def test_a_failed_background_sync_fails_the_next_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fsync)
    results = ResultsFile(tmp_path / "r.jsonl")
    results.open(resume=False)
    results.append(row("a"))
    with pytest.raises(OSError, match="No space left"):
        results.close()
    assert results._handle is None  # closed all the same


def test_resume_cuts_a_torn_last_row_and_appends_valid_lines(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    torn = json.dumps(row("c"))[:25]
    path.write_text(json.dumps(row("a")) + "\n" + json.dumps(row("b")) + "\n" + torn)
    with ResultsFile(path) as results:
        assert results.open(resume=True) == {"a", "b"}
        results.append(row("c"))
    text = path.read_text()
    assert text.endswith("\n")
    assert [json.loads(line)["id"] for line in text.splitlines()] == ["a", "b", "c"]
    assert [r["id"] for r in read_rows(path)] == ["a", "b", "c"]


def test_damage_before_the_last_line_is_not_taken_for_a_torn_write(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(row("a")) + "\n{broken\n" + json.dumps(row("b")) + "\n")
    with pytest.raises(ResultsFileError, match="line 2 is not a JSON object"):
        ResultsFile(path).open(resume=True)


def test_result_rows_round_trip() -> None:
    result = BatchResult(
        id="x",
        answer="42",
        stop_reason="final_answer",
        steps=2,
        tool_calls=1,
        usage={"prompt_tokens": 5, "completion_tokens": 3, "cached_tokens": 0},
        wall_s=1.23456,
        transcript="runs/x.jsonl",
        solved=True,
        worker={"host": "h", "pid": 1},
    )
    data = result.to_row()
    assert list(data)[:10] == [
        "id",
        "answer",
        "stop_reason",
        "steps",
        "tool_calls",
        "usage",
        "wall_s",
        "transcript",
        "error",
        "error_type",
    ]
    assert data["wall_s"] == 1.2346
    assert BatchResult.from_row(json.loads(json.dumps(data))).to_row() == data
