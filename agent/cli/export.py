"""`qwq-agent export RUNS_DIR_OR_RESULTS -o train.jsonl --format chatml|sharegpt`: runs as training data.

See `agent.batch.export` for what a row holds. Exit codes: 0 rows were written (possibly none, when the
filters left nothing: the summary says why); 2 usage error (a source that is not transcripts or results,
`--solved-only` without results).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "main"]


_DESCRIPTION = (
    "Write each finished run as training data: the exact text the model saw and produced "
    "(chatml), or its messages (ShareGPT). The final turn keeps its reasoning."
)
_EXAMPLES = (
    "qwq-agent export results.jsonl -o train.jsonl --solved-only",
    "qwq-agent export runs/ -o train.jsonl --format sharegpt --stop-reason final_answer --max-steps 8",
)


def add_parser(sub: Any, name: str, help_text: str) -> None:
    from agent.cli.common import command_parser

    parser = command_parser(sub, name, help_text, _DESCRIPTION, _EXAMPLES)
    parser.add_argument(
        "source",
        type=Path,
        help="a directory of transcripts, one transcript, or a results file of `batch` or `eval`",
    )
    parser.add_argument("--output", "-o", type=Path, required=True, help="JSONL file to write (replaced)")
    parser.add_argument("--format", choices=("chatml", "sharegpt"), default="chatml")
    parser.add_argument(
        "--chat-format",
        default="qwq",
        metavar="NAME",
        help="the model's chat format for chatml text (default: qwq)",
    )
    parser.add_argument(
        "--solved-only", action="store_true", help="only runs whose check passed (needs a results file)"
    )
    parser.add_argument(
        "--stop-reason",
        metavar="REASONS",
        help="only runs that stopped for one of these reasons, e.g. final_answer (comma-separated)",
    )
    parser.add_argument("--max-steps", type=int, metavar="N", help="only runs of at most N steps")


def main(args: argparse.Namespace) -> int:
    from agent.batch.export import RENDERERS, ExportError, ExportFilter, ExportStats, export_runs

    renderer = RENDERERS.get(args.chat_format)
    if renderer is None:
        print(
            f"qwq-agent export: unknown --chat-format {args.chat_format!r}; choose from {', '.join(RENDERERS)}",
            file=sys.stderr,
        )
        return 2
    if args.max_steps is not None and args.max_steps < 1:
        print("qwq-agent export: --max-steps must be at least 1", file=sys.stderr)
        return 2
    reasons = frozenset(r.strip() for r in (args.stop_reason or "").split(",") if r.strip())
    keep = ExportFilter(solved_only=args.solved_only, stop_reasons=reasons, max_steps=args.max_steps)
    stats = ExportStats()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_name(args.output.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8") as out:
            for row in export_runs(
                args.source, format=args.format, keep=keep, renderer=renderer, stats=stats
            ):
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    except ExportError as exc:
        partial.unlink(missing_ok=True)
        print(f"qwq-agent export: {exc}", file=sys.stderr)
        return 2
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(args.output)
    skipped = ", ".join(f"{n} {reason}" for reason, n in sorted(stats.skipped.items()))
    print(
        f"exported {stats.exported} run(s) to {args.output} ({args.format})"
        + (f"; skipped: {skipped}" if skipped else ""),
        file=sys.stderr,
    )
    return 0
