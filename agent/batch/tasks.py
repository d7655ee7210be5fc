"""The input of a batch: one task per JSONL line, with an optional check that says whether it was solved.

A line is `{"id": ..., "task": "...", "tools": [...], "max_steps": N, "metadata": {...}, "check": {...}}`; only
`id` and `task` are required. Ids must be unique within a file: they are what `--resume` skips and what
results are matched back to.

A check is deliberately simple, so it can be judged anywhere from the answer alone (no sandbox, no model):
every condition given must hold on the run's final answer, stripped of surrounding whitespace, and a run that
ended without a final answer (a budget, an error) is never solved:

    {"answer_contains": "42"}                 the answer contains this text (or every text of a list)
    {"answer_equals": "42"}                   the answer is exactly this text
    {"answer_regex": "\\b42\\b"}              Python's re.search finds this pattern in the answer
    {"ignore_case": true, ...}                compare without regard to case (default: false)
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from prompts.errors import ConfigurationError

__all__ = ["BatchTask", "Check", "TaskFileError", "check_tools", "load_tasks", "parse_tasks"]


class TaskFileError(ConfigurationError, ValueError):
    """The task file cannot be read or a line is not a valid task (the message names the line)."""


class Check(BaseModel):
    """Conditions on the final answer; all given must hold (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    answer_contains: str | list[str] | None = None
    answer_equals: str | None = None
    answer_regex: str | None = None
    ignore_case: bool = False

    @model_validator(mode="after")
    def _some_condition(self) -> Check:
        if self.answer_contains is None and self.answer_equals is None and self.answer_regex is None:
            raise ValueError("a check needs answer_contains, answer_equals or answer_regex")
        if self.answer_regex is not None:
            try:
                re.compile(self.answer_regex)
            except re.error as exc:
                raise ValueError(f"answer_regex is not a valid regular expression: {exc}") from exc
        return self

    def passes(self, answer: str) -> bool:
        """Whether `answer` (a final answer) meets every condition."""
        text = answer.strip()
        fold = str.casefold if self.ignore_case else str
        if self.answer_contains is not None:
            wanted = [self.answer_contains] if isinstance(self.answer_contains, str) else self.answer_contains
            if not all(fold(w) in fold(text) for w in wanted):
                return False
        if self.answer_equals is not None and fold(text) != fold(self.answer_equals.strip()):
            return False
        if self.answer_regex is not None:
            flags = re.IGNORECASE if self.ignore_case else 0
            if re.search(self.answer_regex, text, flags) is None:
                return False
        return True


class BatchTask(BaseModel):
    """One task of a batch. `tools`: tool names (None: the batch's default set; []: no tools)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    task: str
    tools: list[str] | None = None
    max_steps: int | None = Field(default=None, ge=1)
    metadata: dict[str, Any] = Field(default_factory=dict)
    check: Check | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        # Numbers are common ids in task files; results always carry the id as text.
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("id")
    @classmethod
    def _id_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("id must not be empty")
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _tools_list(cls, value: Any) -> Any:
        # "python,shell" and "none" as on the command line
        if isinstance(value, str):
            names = [n.strip() for n in value.split(",") if n.strip()]
            return [] if names == ["none"] else names
        return value


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"]) or "line"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def parse_tasks(lines: Iterable[str], source: str = "<tasks>") -> Iterator[BatchTask]:
    """Tasks from JSONL lines (blank lines and lines starting with `#` are skipped); ids must be unique."""
    seen: set[str] = set()
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TaskFileError(f"{source}:{number}: not a JSON object ({exc.msg})") from None
        if not isinstance(data, dict):
            raise TaskFileError(f"{source}:{number}: expected a JSON object with at least id and task")
        try:
            task = BatchTask.model_validate(data)
        except ValidationError as exc:
            raise TaskFileError(f"{source}:{number}: {_describe(exc)}") from None
        if task.id in seen:
            raise TaskFileError(f"{source}:{number}: the id {task.id!r} was already used; ids must be unique")
        seen.add(task.id)
        yield task


def load_tasks(path: str | Path) -> list[BatchTask]:
    """Read a TASKS.jsonl file (see the module docstring for the line shape)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise TaskFileError(f"cannot read the task file {file}: {exc.strerror or exc}") from None
    return list(parse_tasks(text.splitlines(), str(file)))


def check_tools(tasks: Sequence[BatchTask], known: Sequence[str]) -> None:
    """Raise `TaskFileError` when a task names a tool that is not among `known`."""
    for task in tasks:
        unknown = [name for name in task.tools or () if name not in known]
        if unknown:
            raise TaskFileError(
                f"task {task.id!r} names unknown tool(s) {', '.join(unknown)}; choose from {', '.join(known)}"
            )
