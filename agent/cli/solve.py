"""`qwq-agent solve PROBLEM`: the agent solves one coding problem in a sandbox and leaves a solution file.

PROBLEM is a Markdown or text file, a HumanEval-style JSON file or object (`prompt`, and optionally
`entry_point`, `test`, `task_id`), or the statement itself. The agent writes /workspace/solution.py, tests it
and runs it; then this command runs the file once more itself, and, when the problem has an official test,
checks it in a fresh sandbox. `--output` copies the solution to the host.

Exit codes: 0 a solution file exists, runs, and passes the official test if there is one; 1 otherwise (the
report says why); 2 usage or configuration error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.cli.view import View
    from agent.evals.checking import CheckResult
    from agent.evals.problems import Problem
    from agent.evals.solve import SolveOutcome
    from agent.models.base import Model

__all__ = ["add_parser", "main"]


_DESCRIPTION = "Solve a coding problem: the agent writes, tests and runs a solution file in a sandbox."
_EXAMPLES = (
    "qwq-agent solve problem.md --model qwq-32b-q4_k_m.gguf -o solution.py",
    "qwq-agent solve task.json --base-url http://127.0.0.1:8000/v1 --model-name qwq-32b",
    'qwq-agent solve "Write a function that returns the n-th prime; print the 100th." -o prime.py',
)


def add_parser(sub: Any, name: str, help_text: str) -> None:
    from agent.cli import common

    parser = common.command_parser(sub, name, help_text, _DESCRIPTION, _EXAMPLES)
    parser.add_argument(
        "problem", help="a .md/.txt file, a HumanEval-style .json file or object, or the text"
    )
    parser.add_argument("--output", "-o", type=Path, metavar="FILE", help="copy the final solution file here")
    parser.add_argument("--image", help="sandbox image (default: the one `qwq-agent sandbox build` makes)")
    common.add_sandbox_arguments(parser)
    parser.add_argument("--transcript-dir", type=Path, default=Path("runs"), help="default: ./runs")
    common.add_keep_thinking_argument(parser)
    parser.add_argument(
        "--token-budget", type=int, metavar="TOKENS", help="generated tokens for the whole run"
    )
    parser.add_argument(
        "--check-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="for the official test (default 10)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--quiet", "-q", action="store_true", help="print only the final answer and the report"
    )
    output.add_argument("--json", action="store_true", help="print events and the result as JSON lines")
    parser.add_argument("--hide-thinking", action="store_true", help="do not show the reasoning")
    common.add_model_arguments(parser)


def _report(outcome: SolveOutcome, check: CheckResult | None, output: Path | None) -> tuple[list[str], bool]:
    """Lines for the user and whether the outcome counts as solved."""
    from agent.evals.solve import SOLUTION_FILE

    lines = []
    result = outcome.result
    if result is not None:
        lines.append(
            f"run: {result.stop_reason.value}, {result.steps} steps, {result.tool_calls} tool calls, "
            f"{result.usage.prompt_tokens + result.usage.completion_tokens:,} tokens, {outcome.duration_s:.1f} s"
        )
    if outcome.solution is None:
        lines.append(f"solution: none (the agent left no {SOLUTION_FILE} in the workspace)")
        return lines, False
    lines.append(f"solution: {SOLUTION_FILE}, {len(outcome.solution.splitlines())} lines")
    lines.append(f"ran by the agent after its last change: {'yes' if outcome.ran_by_agent else 'no'}")
    run = outcome.final_run
    if run is not None:
        verdict = "ok" if run.ok else f"FAILED ({run.error})"
        lines.append(f"final run (python3 {SOLUTION_FILE}): {verdict}, {run.duration_s:.2f} s")
        tail = (run.stdout.strip() or run.stderr.strip())[-400:]
        if tail:
            lines.extend("  | " + line for line in tail.splitlines()[-8:])
    solved = outcome.verified
    if check is not None:
        verdict = "passed" if check.passed else f"FAILED ({check.error})"
        lines.append(f"official test (fresh sandbox): {verdict}")
        solved = solved and check.passed
    if output is not None:
        lines.append(f"copied to {output}")
    return lines, solved


async def _solve(args: argparse.Namespace, problem: Problem, model: Model, view: View) -> int:
    from agent.cli.common import sandbox_config, solve_options
    from agent.evals.checking import Checker
    from agent.evals.solve import solve
    from agent.loop import StopReason

    try:
        outcome = await solve(
            problem,
            model,
            solve_options(args),
            image=args.image,
            on_event=view.handle,
            config=sandbox_config(args),
        )
    finally:
        view.close()
    check = None
    if outcome.solution is not None and problem.checkable:
        checker = Checker(image=args.image, timeout=args.check_timeout, config=sandbox_config(args))
        check = await checker.check(problem, outcome.solution)
    if outcome.solution is not None and args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(outcome.solution, encoding="utf-8")
    lines, solved = _report(outcome, check, args.output if outcome.solution is not None else None)
    if outcome.result is not None and outcome.result.transcript_path is not None:
        lines.append(f"transcript: {outcome.result.transcript_path}")
    if args.json:
        print(
            json.dumps(
                {
                    "type": "solve_result",
                    "solved": solved,
                    "solution_found": outcome.solution is not None,
                    "final_run_ok": outcome.verified,
                    "ran_by_agent": outcome.ran_by_agent,
                    "official_test_passed": None if check is None else check.passed,
                    "error": (check.error if check is not None and not check.passed else outcome.error),
                    "output": str(args.output) if args.output and outcome.solution is not None else None,
                }
            ),
            flush=True,
        )
    else:
        for line in lines:
            view.note(line)
    result = outcome.result
    if result is not None and result.stop_reason is StopReason.MODEL_ERROR:
        from agent.cli.common import one_line
        from agent.models.errors import ModelConfigurationError

        print(f"qwq-agent solve: the model failed: {one_line(result.detail)}", file=sys.stderr)
        return 2 if isinstance(result.error, ModelConfigurationError) else 1
    return 0 if solved else 1


def _transcript_since(directory: Path | None, started: float) -> Path | None:
    """The transcript this run wrote, if any: the newest in `directory` created since `started`."""
    if directory is None or not directory.is_dir():
        return None
    fresh = [p for p in directory.glob("*.jsonl") if p.stat().st_mtime >= started - 1]
    return max(fresh, key=lambda p: p.stat().st_mtime, default=None)


def main(args: argparse.Namespace) -> int:
    from agent.cli.common import build_model, ensure_sandbox_image, load_now, run_in_view
    from agent.cli.view import make_view
    from agent.evals.problems import load_problem

    view = make_view(quiet=args.quiet, json_lines=args.json, show_thinking=not args.hide_thinking)
    started = time.time()

    def body() -> int:
        # Problem and model first: a typo in either is reported before any container or image work.
        problem = load_problem(args.problem)
        model = build_model(args)
        load_now(model, view.note)
        ensure_sandbox_image(args.image, view.note)
        return asyncio.run(_solve(args, problem, model, view))

    def interrupted() -> str:
        written = _transcript_since(args.transcript_dir, started)
        if written is None:
            return "interrupted: the sandbox was removed; no step had finished, so no transcript was written"
        return f"interrupted: the sandbox was removed; the finished steps are in {written}"

    return run_in_view("solve", view, body, interrupted)
