"""`qwq-agent report FILE -o OUT.html`: one self-contained HTML page of a run, an eval or a batch.

FILE is a run transcript (runs/*.jsonl) or the results of `qwq-agent eval` / `qwq-agent batch`; which one is
told from its first line. The page needs no network and runs no script, so it can be mailed or attached to a
bug report as it is. Exit codes: 0 written, 2 FILE is not a transcript or results file (the message says why).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "main"]


_EXAMPLES = (
    "qwq-agent report runs/20250101-120000-abc123.jsonl -o run.html",
    "qwq-agent report he.jsonl -o eval.html",
)


def add_parser(sub: Any, name: str, help_text: str) -> None:
    from agent.cli.common import command_parser

    parser = command_parser(sub, name, help_text, __doc__.splitlines()[0] if __doc__ else None, _EXAMPLES)
    parser.add_argument("file", type=Path, help="a run transcript, or eval/batch results (JSONL)")
    parser.add_argument(
        "--output", "-o", type=Path, help="the HTML file to write (default: FILE with .html instead)"
    )
    parser.add_argument("--title", help="page title of an eval or batch report")


def main(args: argparse.Namespace) -> int:
    from agent.reports import ReportError, write_report

    output = args.output if args.output is not None else args.file.with_suffix(".html")
    try:
        written = write_report(args.file, output, title=args.title)
    except ReportError as exc:
        print(f"qwq-agent report: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"qwq-agent report: cannot write {output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(f"report: {written}")
    return 0
