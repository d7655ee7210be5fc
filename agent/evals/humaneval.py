"""HumanEval with an agent: each problem solved in a sandbox of its own, then checked in a fresh one.

Two modes share one checking path (`agent.evals.checking.Checker`):
- agent: the agent solves the problem (`agent.evals.solve`), its solution file is checked; one row of kind
  "agent" per problem.
- harness (`--check-harness`): the canonical solution (prompt + canonical_solution; must pass) and
  deliberately broken ones (must fail) are checked; rows of kind "canonical" and "broken". This tests the
  harness itself: a checker that passes broken code or fails the reference is wrong, whatever the agent does.

Rows are appended to the output file one by one and flushed, so a killed evaluation loses at most the problems
in flight and `resume` continues it. A row whose check could not run at all (the engine failed, the model
server went away) has `harness_error: true`; `resume` runs those problems again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agent.evals.checking import Checker, CheckResult
from agent.evals.problems import Problem, load_humaneval
from agent.evals.solve import SolveOptions, solve, solve_in_sandbox
from prompts.errors import RunError

if TYPE_CHECKING:
    from agent.models.base import Model
    from sandboxes import SandboxConfig
    from sandboxes.pool import SandboxPool

__all__ = [
    "BROKEN_VARIANTS",
    "DEFAULT_MAX_MODEL_FAILURES",
    "EvalStoppedError",
    "EvalSummary",
    "ResultsFile",
    "broken_program",
    "load_humaneval",
    "run_agent_eval",
    "run_harness_check",
    "summarize",
]

Kind = Literal["agent", "canonical", "broken"]
RowCallback = Callable[[dict[str, Any]], None]

BROKEN_VARIANTS: dict[str, str] = {
    "raise": "the entry point replaced by one that raises NotImplementedError",
    "constant": "the entry point replaced by one that returns None",
    "exit": "the canonical solution preceded by sys.exit(0), so the process ends with status 0 before any test",
    "frame": "a wrong entry point, and code that reaches up the stack with sys._getframe to steal the token "
    "and to replace the test with one that checks nothing",
    "always-equal": "the entry point returns an object whose __eq__ (and every comparison) is always True",
}

# Code of the hostile variants (run in the check's sandbox, not text for the model). Each would pass a checker
# that runs the solution in the test's own process and compares what it returns as it is.
_FRAME_ATTACK = """
import os as _os
import sys as _sys


def _reach_up():
    frame = _sys._getframe(1)
    while frame is not None:
        names = {**frame.f_globals, **frame.f_locals}
        for value in (*frame.f_code.co_consts, *names.values()):
            if isinstance(value, str) and len(value) == 32 and set(value) <= set("0123456789abcdef"):
                _os.write(1, ("\\n" + value + "\\n").encode())
                _os._exit(0)
        frame.f_globals["exec"] = lambda *args, **kwargs: None
        frame = frame.f_back


check = lambda candidate: None
_reach_up()
"""
_ALWAYS_EQUAL = """
class _AlwaysEqual:
    __hash__ = object.__hash__

    def __eq__(self, other):
        return True

    __le__ = __lt__ = __ge__ = __gt__ = __eq__

    def __ne__(self, other):
        return False

    def __sub__(self, other):
        return self

    __add__ = __radd__ = __rsub__ = __mul__ = __rmul__ = __sub__

    def __abs__(self):
        return self

    def __bool__(self):
        return True
"""


DEFAULT_MAX_MODEL_FAILURES = 3


class EvalStoppedError(RunError, RuntimeError):
    """The evaluation stopped early: the model failed on that many problems in a row (a server that is down
    would otherwise cost its retries on every remaining problem). The rows written so far are kept."""


def broken_program(problem: Problem, variant: str) -> str:
    """A deliberately wrong solution. Built on the canonical one, so only the intended defect differs."""
    program = problem.canonical_program
    entry = problem.entry_point
    if variant == "raise":
        return f"{program}\n\ndef {entry}(*args, **kwargs):\n    raise NotImplementedError\n"
    if variant == "constant":
        return f"{program}\n\ndef {entry}(*args, **kwargs):\n    return None\n"
    if variant == "exit":
        return f"import sys\nsys.exit(0)\n{program}"
    if variant == "frame":
        return f"{program}\n\ndef {entry}(*args, **kwargs):\n    return None\n{_FRAME_ATTACK}"
    if variant == "always-equal":
        return f"{program}\n{_ALWAYS_EQUAL}\n\ndef {entry}(*args, **kwargs):\n    return _AlwaysEqual()\n"
    raise ValueError(f"unknown broken variant {variant!r}; choose from {', '.join(BROKEN_VARIANTS)}")


def row_key(row: dict[str, Any]) -> tuple[str, str, str]:
    return (str(row.get("task_id")), str(row.get("kind")), str(row.get("variant") or ""))


class ResultsFile:
    """The JSONL output: read for `resume`, appended to row by row, each row flushed at once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        """Rows written so far; a line cut off by a kill mid-write is ignored."""
        if not self.path.exists():
            return []
        rows = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def open_for_append(self) -> None:
        """Make sure the next row starts on a line of its own even after a cut-off last line."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open("rb") as f:
                f.seek(-1, 2)
                last = f.read(1)
            if last != b"\n":
                with self.path.open("a", encoding="utf-8") as f:
                    f.write("\n")

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            f.flush()


def done_keys(rows: Iterable[dict[str, Any]]) -> set[tuple[str, str, str]]:
    """Checks already settled: rows without a harness error."""
    return {row_key(r) for r in rows if not r.get("harness_error")}


async def _run_pool(jobs: Sequence[Callable[[], Any]], concurrency: int) -> None:
    """Run the async jobs with at most `concurrency` at once, in order of the list."""
    queue: asyncio.Queue[Callable[[], Any]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker() -> None:
        while True:
            try:
                job = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await job()

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(concurrency, len(jobs)))):
                group.create_task(worker())
    except BaseExceptionGroup as failed:
        # A job raises only for what ends the whole evaluation (see `_fatal`): surface that error itself.
        raise failed.exceptions[0] from None


def _fatal(exc: BaseException | None) -> bool:
    """Errors that would fail every remaining problem the same way (a model that cannot be loaded or
    reached with these settings) stop the evaluation instead of filling the file with error rows."""
    from agent.models.errors import ModelConfigurationError

    return isinstance(exc, ModelConfigurationError)


def _check_row(problem: Problem, kind: Kind, variant: str | None, check: CheckResult) -> dict[str, Any]:
    expected = kind != "broken"
    return {
        "task_id": problem.task_id,
        "kind": kind,
        "variant": variant,
        "passed": check.passed,
        "expected_pass": expected,
        "ok": check.passed == expected,
        "error": check.error,
        "duration_s": round(check.duration_s, 3),
        "run_s": round(check.run_s, 3),
        "timed_out": check.timed_out,
    }


def _harness_error_row(
    problem: Problem, kind: Kind, variant: str | None, exc: BaseException
) -> dict[str, Any]:
    return {
        "task_id": problem.task_id,
        "kind": kind,
        "variant": variant,
        "passed": False,
        "expected_pass": kind != "broken",
        "ok": False,
        "error": f"{type(exc).__name__}: {exc}",
        "harness_error": True,
    }


async def run_harness_check(
    problems: Sequence[Problem],
    checker: Checker,
    results: ResultsFile,
    *,
    concurrency: int = 1,
    variants: Sequence[str] = tuple(BROKEN_VARIANTS),
    skip: set[tuple[str, str, str]] | None = None,
    on_row: RowCallback | None = None,
) -> list[dict[str, Any]]:
    """Check each problem's canonical solution and its broken variants, each in a fresh sandbox."""
    skip = skip or set()
    rows: list[dict[str, Any]] = []
    jobs: list[Callable[[], Any]] = []

    def job(problem: Problem, kind: Kind, variant: str | None) -> Callable[[], Any]:
        async def run() -> None:
            try:
                code = problem.canonical_program if variant is None else broken_program(problem, variant)
                row = _check_row(problem, kind, variant, await checker.check(problem, code))
            except Exception as exc:
                row = _harness_error_row(problem, kind, variant, exc)
            results.append(row)
            rows.append(row)
            if on_row is not None:
                on_row(row)

        return run

    for problem in problems:
        checks: list[tuple[Kind, str | None]] = [("canonical", None)]
        checks += [("broken", v) for v in variants]
        for kind, variant in checks:
            if (problem.task_id, kind, variant or "") not in skip:
                jobs.append(job(problem, kind, variant))
    await _run_pool(jobs, concurrency)
    return rows


async def run_agent_eval(
    problems: Sequence[Problem],
    model_for: Callable[[Problem], Model],
    checker: Checker,
    results: ResultsFile,
    options: SolveOptions,
    *,
    concurrency: int = 1,
    image: str | None = None,
    pool: SandboxPool | None = None,
    skip: set[tuple[str, str, str]] | None = None,
    on_row: RowCallback | None = None,
    max_model_failures: int | None = DEFAULT_MAX_MODEL_FAILURES,
    sandbox_config: SandboxConfig | None = None,
) -> list[dict[str, Any]]:
    """Let the agent solve each problem in its own sandbox, then check its solution file in a fresh one.

    `pool`: where the agents' sandboxes come from (warm, each used by one run only); else each is started
    when its problem begins, with `sandbox_config`. `max_model_failures`: after that many problems in a row on which the model
    failed (server down, stream cut), raise `EvalStoppedError` instead of trying the rest (None or 0: never).
    """
    from agent.models.errors import ModelError

    skip = skip or set()
    rows: list[dict[str, Any]] = []
    failures_in_a_row = 0

    def job(problem: Problem) -> Callable[[], Any]:
        async def run() -> None:
            nonlocal failures_in_a_row
            started = time.monotonic()
            try:
                row = await _agent_row(
                    problem, model_for(problem), checker, options, image, pool, sandbox_config
                )
            except Exception as exc:
                if _fatal(exc):
                    raise
                row = _harness_error_row(problem, "agent", None, exc)
                row["model_failed"] = isinstance(exc, ModelError)
            row["duration_s"] = round(time.monotonic() - started, 3)
            results.append(row)
            rows.append(row)
            if on_row is not None:
                on_row(row)
            failures_in_a_row = failures_in_a_row + 1 if row.get("model_failed") else 0
            if max_model_failures and failures_in_a_row >= max_model_failures:
                raise EvalStoppedError(
                    f"the model failed on {failures_in_a_row} problems in a row, so the evaluation stopped "
                    f"(--max-model-failures); the last error: {row.get('error')}"
                )

        return run

    jobs = [job(p) for p in problems if (p.task_id, "agent", "") not in skip]
    await _run_pool(jobs, concurrency)
    return rows


async def _agent_row(
    problem: Problem,
    model: Model,
    checker: Checker,
    options: SolveOptions,
    image: str | None,
    pool: SandboxPool | None,
    sandbox_config: SandboxConfig | None = None,
) -> dict[str, Any]:
    if pool is None:
        outcome = await solve(problem, model, options, image=image, config=sandbox_config)
    else:
        sandbox = await pool.aacquire()
        try:
            outcome = await solve_in_sandbox(problem, model, sandbox, options)
        finally:
            await sandbox.aclose()
    result = outcome.result
    model_failed = result is not None and result.stop_reason.value == "model_error"
    if model_failed and result is not None and _fatal(result.error):
        assert result.error is not None
        raise result.error  # the model cannot be used with these settings: every problem would fail alike
    check: CheckResult | None = None
    if outcome.solution is not None:
        check = await checker.check(problem, outcome.solution)
    usage = result.usage if result is not None else None
    prompt_tokens = usage.prompt_tokens if usage else 0
    completion_tokens = usage.completion_tokens if usage else 0
    row: dict[str, Any] = {
        "task_id": problem.task_id,
        "kind": "agent",
        "variant": None,
        "passed": bool(check and check.passed),
        "error": check.error if check is not None else outcome.error,
        "steps": result.steps if result else 0,
        "tokens": prompt_tokens + completion_tokens,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "tool_calls": result.tool_calls if result else 0,
        "stop_reason": result.stop_reason.value if result else None,
        "solution_found": outcome.solution is not None,
        "final_run_ok": outcome.verified,
        "ran_by_agent": outcome.ran_by_agent,
        "solve_s": round(outcome.duration_s, 3),
        "check_s": round(check.duration_s, 3) if check else None,
        "timed_out": bool(check and check.timed_out),
        "transcript": str(result.transcript_path) if result and result.transcript_path else None,
        "solution": outcome.solution,
    }
    if model_failed and result is not None:
        # cut short by the model, not judged on its merits: `--resume` runs it again unless it passed anyway
        row["model_failed"] = True
        row["harness_error"] = not row["passed"]
        if not row["passed"]:
            row["error"] = f"the model failed: {result.detail}"
    return row


@dataclass
class EvalSummary:
    """Figures over the rows of one mode (agent, or harness) for the selected problems."""

    mode: Literal["agent", "harness"]
    problems: int = 0
    passed: int = 0
    harness_errors: int = 0
    steps: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    durations: list[float] = field(default_factory=list)
    canonical: tuple[int, int] = (0, 0)
    """(passed, checked) canonical solutions."""
    broken: dict[str, tuple[int, int]] = field(default_factory=dict)
    """variant -> (failed as they must, checked)."""
    wall_s: float = 0.0

    @property
    def pass_at_1(self) -> float:
        return self.passed / self.problems if self.problems else 0.0

    @property
    def harness_ok(self) -> bool:
        """Every canonical solution passed and every broken one failed (and nothing went unchecked)."""
        canonical_ok = self.canonical[0] == self.canonical[1]
        broken_ok = all(failed == total for failed, total in self.broken.values())
        return canonical_ok and broken_ok and self.harness_errors == 0


def summarize(
    rows: Iterable[dict[str, Any]], task_ids: Iterable[str], mode: Literal["agent", "harness"]
) -> EvalSummary:
    """Summary of the latest row per check among `task_ids` (a resumed file may hold older attempts)."""
    wanted = set(task_ids)
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    kinds = ("agent",) if mode == "agent" else ("canonical", "broken")
    for row in rows:
        if row.get("task_id") in wanted and row.get("kind") in kinds:
            latest[row_key(row)] = row
    summary = EvalSummary(mode=mode)
    canonical = [0, 0]
    broken: dict[str, list[int]] = {}
    for row in latest.values():
        summary.harness_errors += bool(row.get("harness_error"))
        if isinstance(row.get("duration_s"), (int, float)):
            summary.durations.append(float(row["duration_s"]))
        if row["kind"] == "agent":
            summary.problems += 1
            summary.passed += bool(row.get("passed"))
            summary.steps.append(int(row.get("steps") or 0))
            summary.prompt_tokens += int(row.get("prompt_tokens") or 0)
            summary.completion_tokens += int(row.get("completion_tokens") or 0)
        elif row["kind"] == "canonical":
            canonical[0] += bool(row.get("passed"))
            canonical[1] += 1
        else:
            counts = broken.setdefault(str(row.get("variant")), [0, 0])
            counts[0] += not row.get("passed")
            counts[1] += 1
    if mode == "harness":
        summary.problems = canonical[1]
        summary.passed = canonical[0]
    summary.canonical = (canonical[0], canonical[1])
    summary.broken = {k: (v[0], v[1]) for k, v in sorted(broken.items())}
    return summary
