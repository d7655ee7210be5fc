"""`qwq-agent batch TASKS.jsonl -o RESULTS.jsonl`: many tasks, here or on a Ray cluster, one result row each.

Each input line is `{"id", "task", optional "tools", "max_steps", "metadata", "check"}` (`agent.batch.tasks`);
each output row has the id, answer, stop reason, steps, tool calls, usage, wall time, transcript path and the
error if any (`agent.batch.results`). This process alone writes RESULTS.jsonl, row by row, synced, so a
killed batch loses only the tasks in flight and `--resume` continues it.

Exit codes: 0 every task ran (whatever its answers); 1 some task ended with an error (see its row); 2 usage or
configuration error (the message says what to do); 130 interrupted (running tasks were cancelled and their
sandboxes removed; continue with `--resume`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

    from agent.batch.results import BatchResult

__all__ = ["BatchProgress", "add_parser", "batch_id_for", "execution_options", "main"]


_DESCRIPTION = (
    "Run every task of a JSONL file (here, or as Ray tasks on a cluster) and write one result row per task."
)
_EXAMPLES = (
    "qwq-agent batch tasks.jsonl -o results.jsonl --base-url http://127.0.0.1:8000/v1 -j 16",
    "qwq-agent batch tasks.jsonl -o results.jsonl --ray auto --resume",
)
_TASK_LINES = (
    "task lines: "
    '{"id": "t1", "task": "...", "tools": ["python"], "max_steps": 10, "metadata": {}, '
    '"check": {"answer_contains": "42"}}'
)


def add_parser(sub: Any, name: str, help_text: str) -> None:
    from agent.batch.names import ALL_TOOLS, DEFAULT_TOOLS
    from agent.cli.common import add_keep_thinking_argument, add_model_arguments, command_parser

    parser = command_parser(sub, name, help_text, _DESCRIPTION, _EXAMPLES, more=_TASK_LINES)
    parser.add_argument("tasks", type=Path, help="JSONL file, one task per line")
    parser.add_argument(
        "--output", "-o", type=Path, required=True, help="JSONL file of results (one per task)"
    )
    parser.add_argument(
        "--concurrency",
        "-j",
        type=int,
        metavar="N",
        help="tasks at once (default: 4 here; on Ray, as many as the cluster's CPUs hold)",
    )
    parser.add_argument("--resume", action="store_true", help="keep --output's rows and skip their ids")
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run each task as a Ray task on the cluster at ADDRESS (HOST:PORT, ray://HOST:PORT or auto)",
    )
    parser.add_argument(
        "--max-retries",
        type=int,
        default=2,
        metavar="N",
        help="Ray: times a task is retried elsewhere when its worker or node dies (default 2)",
    )
    parser.add_argument(
        "--num-cpus",
        type=float,
        default=1.0,
        metavar="CPUS",
        help="Ray: CPUs one task reserves on its node; fractions run more tasks per node (default 1)",
    )
    parser.add_argument(
        "--resources",
        metavar="JSON",
        help="Ray: custom resources one task needs, e.g. '{\"sandbox\": 1}' (nodes started with --resources)",
    )
    parser.add_argument(
        "--tools",
        default=",".join(DEFAULT_TOOLS),
        help=f"tools of tasks that name none: comma-separated from {', '.join(ALL_TOOLS)}, or 'none' "
        f"(default: {','.join(DEFAULT_TOOLS)})",
    )
    parser.add_argument("--allow-private", action="store_true", help="let web_fetch reach private addresses")
    parser.add_argument("--system-prompt", help="replace the default system prompt with this text")
    add_keep_thinking_argument(parser)
    parser.add_argument("--token-budget", type=int, metavar="TOKENS", help="generated tokens per task")
    parser.add_argument(
        "--transcript-dir", type=Path, default=Path("runs"), help="where run transcripts go (default: ./runs)"
    )
    parser.add_argument("--image", help="sandbox image (default: the one `qwq-agent sandbox build` makes)")
    parser.add_argument(
        "--warm", type=int, metavar="N", help="sandboxes kept started ahead here (default: min(-j, 8))"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar, only the summary")
    add_model_arguments(parser)


def batch_id_for(output: Path) -> str:
    """A batch's id, the same for every run on one results file: a resumed batch sweeps what a killed
    driver's workers left, since its sandboxes carry the same label."""
    key = f"{socket.gethostname()}:{output.resolve()}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def execution_options(args: argparse.Namespace) -> dict[str, Any]:
    """Where and how `batch` and `eval --ray` run their jobs: keyword arguments of `run_batch` and `ExecOptions`."""
    return {
        "ray_address": args.ray,
        "max_retries": args.max_retries,
        "num_cpus": args.num_cpus,
        "batch_id": batch_id_for(args.output),
        "image": args.image,
        "transcript_dir": args.transcript_dir,
    }


class BatchProgress:
    """The progress bar: tasks done and failed, ETA, tokens per second, and the solved rate when checked."""

    def __init__(self, console: Console, total: int, *, enabled: bool = True) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.total = total
        self.done = 0
        self.failed = 0
        self.checked = 0
        self.solved = 0
        self.tokens = 0
        self.started = time.monotonic()
        self._progress = Progress(
            TextColumn("[bold]batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self._task = self._progress.add_task("batch", total=total, stats=self.stats())

    def stats(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        parts = [f"failed {self.failed}", f"{self.tokens / elapsed:,.0f} tok/s"]
        if self.checked:
            parts.append(f"solved {self.solved}/{self.checked} ({self.solved / self.checked:.0%})")
        return " · ".join(parts)

    def add(self, result: BatchResult) -> None:
        self.done += 1
        self.failed += result.failed
        self.tokens += int(result.usage.get("completion_tokens", 0))
        if result.solved is not None:
            self.checked += 1
            self.solved += result.solved
        self._progress.update(self._task, advance=1, stats=self.stats())

    def refresh(self) -> None:
        self._progress.update(self._task, stats=self.stats())

    def __enter__(self) -> BatchProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()


def _summary(progress: BatchProgress, stop_reasons: dict[str, int], output: Path, skipped: int) -> Any:
    from rich.table import Table

    table = Table(title="batch", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("tasks run", str(progress.done))
    if skipped:
        table.add_row("skipped (already in the results)", str(skipped))
    table.add_row("failed (error)", str(progress.failed))
    for reason, count in sorted(stop_reasons.items()):
        table.add_row(f"stop: {reason}", str(count))
    if progress.checked:
        table.add_row(
            "solved", f"{progress.solved} / {progress.checked} ({progress.solved / progress.checked:.1%})"
        )
    elapsed = time.monotonic() - progress.started
    table.add_row("completion tokens", f"{progress.tokens:,}")
    table.add_row("wall time", f"{elapsed:.1f} s")
    if progress.done:
        table.add_row("tasks per second", f"{progress.done / max(elapsed, 1e-9):.2f}")
    table.add_row("results", str(output))
    return table


async def _run(args: argparse.Namespace, console: Console) -> int:
    from agent.batch import ResultsFile, load_tasks
    from agent.batch.factory import AgentFactory, model_options, script_for
    from agent.batch.run import ALL_TOOLS, SANDBOX_TOOLS, run_batch
    from agent.batch.tasks import check_tools
    from agent.cli.common import ConfigurationError, ensure_sandbox_image, load_script, run_options

    tasks = load_tasks(args.tasks)
    default_tools = [n.strip() for n in args.tools.split(",") if n.strip() and n.strip() != "none"]
    unknown = [n for n in default_tools if n not in ALL_TOOLS]
    if unknown:
        raise ConfigurationError(f"unknown tool(s) {', '.join(unknown)}; choose from {', '.join(ALL_TOOLS)}")
    check_tools(tasks, ALL_TOOLS)
    resources: dict[str, float] = {}
    if args.resources:
        try:
            resources = {str(k): float(v) for k, v in json.loads(args.resources).items()}
        except (ValueError, AttributeError, TypeError) as exc:
            raise ConfigurationError(
                f'--resources must be a JSON object like {{"sandbox": 1}}: {exc}'
            ) from exc
    scripts = load_script(args.scripted) if args.scripted is not None else None
    factory = AgentFactory(
        options=model_options(args),
        scripts=scripts,
        system_prompt=args.system_prompt,
        **run_options(args),
    )
    if isinstance(scripts, dict):
        missing = [t.id for t in tasks if script_for(t.id, t.metadata, scripts) is None]
        if missing:
            raise ConfigurationError(f"{args.scripted} has no script for task(s) {', '.join(missing[:5])}")

    results = ResultsFile(args.output)
    done_ids = results.open(resume=args.resume)
    todo = [t for t in tasks if t.id not in done_ids]
    skipped = len(tasks) - len(todo)
    try:

        def note(line: str) -> None:
            console.print(line, highlight=False)

        if args.ray is None and todo:
            uses_sandbox = any(
                n in SANDBOX_TOOLS for t in todo for n in (default_tools if t.tools is None else t.tools)
            )
            if uses_sandbox:
                await asyncio.to_thread(ensure_sandbox_image, args.image, note)
            if factory.needs_model(todo):
                note("loading the model ..." if args.model else "checking the model ...")
                await asyncio.to_thread(factory.shared_model)
        if skipped:
            note(f"resuming: {skipped} task(s) already in {args.output}, {len(todo)} to run")
        concurrency = args.concurrency if args.concurrency is not None else (None if args.ray else 4)
        stop_reasons: dict[str, int] = {}
        any_error = False
        with BatchProgress(console, len(todo), enabled=not args.quiet) as progress:
            stream = run_batch(
                todo,
                factory,
                concurrency=concurrency,
                default_tools=default_tools,
                allow_private=args.allow_private,
                warm=args.warm,
                resources=resources,
                **execution_options(args),
            )
            async with contextlib.aclosing(stream):
                async for result in stream:
                    results.append(result.to_row())
                    progress.add(result)
                    any_error |= result.failed
                    key = result.stop_reason or "error"
                    stop_reasons[key] = stop_reasons.get(key, 0) + 1
        console.print(_summary(progress, stop_reasons, args.output, skipped))
    finally:
        results.close()
    return 1 if any_error else 0


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from agent.batch.ray_backend import RayUnavailableError
    from agent.batch.results import ResultsFileError
    from agent.batch.run import BatchAbortedError
    from agent.batch.tasks import TaskFileError
    from agent.cli.common import ConfigurationError
    from agent.models.errors import ModelError
    from sandboxes import SandboxError

    console = Console(stderr=True, highlight=False)
    if args.concurrency is not None and args.concurrency < 1:
        print("qwq-agent batch: --concurrency must be at least 1", file=sys.stderr)
        return 2
    if args.max_retries < 0 or args.num_cpus < 0:
        print("qwq-agent batch: --max-retries and --num-cpus must not be negative", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, console))
    except KeyboardInterrupt:
        console.print(
            f"interrupted: running tasks were cancelled; finished rows are in {args.output}; "
            "continue with --resume"
        )
        return 130
    except BatchAbortedError as exc:
        print(f"qwq-agent batch: stopped at task {exc.task_id!r}: {exc}", file=sys.stderr)
        print(f"rows written so far are in {args.output}; continue with --resume", file=sys.stderr)
        return 2
    except (
        ConfigurationError,
        TaskFileError,
        ResultsFileError,
        RayUnavailableError,
        ModelError,
        SandboxError,
    ) as exc:
        print(f"qwq-agent batch: {exc}", file=sys.stderr)
        return 2
