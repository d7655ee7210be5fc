"""The `qwq-agent` command. Sub-commands live in sibling modules and are imported only when chosen."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main"]

# name -> (module that defines `add_parser(subparsers)` and `main(args) -> int`, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {}
COMMANDS["run"] = ("agent.cli.run", "run an agent on a task, showing its reasoning live")
COMMANDS["replay"] = (
    "agent.cli.replay",
    "show a recorded run again; --rerun checks its observations still hold",
)
COMMANDS["sandbox"] = ("agent.cli.sandbox", "build, check and clean up the Docker sandbox")
COMMANDS["solve"] = ("agent.cli.solve", "solve a coding problem: write, test and run a solution in a sandbox")
COMMANDS["eval"] = ("agent.cli.eval", "evaluate on HumanEval (pass@1); --check-harness tests the checker")
COMMANDS["models"] = ("agent.cli.models", "check a model or server: chat template, context, speed")
COMMANDS["batch"] = ("agent.cli.batch", "run a JSONL file of tasks, here or on a Ray cluster (--ray)")
COMMANDS["export"] = ("agent.cli.export", "turn run transcripts into training data (chatml or ShareGPT)")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported, the others are listed by name and help text.

    This keeps `qwq-agent --help` (and every command) from importing the modules of all the others.
    """
    parser = argparse.ArgumentParser(
        prog="qwq-agent",
        description="Agents driven by QwQ-32B: reasoning, validated tool calls, a hardened Docker sandbox.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        if name == command:
            importlib.import_module(module_name).add_parser(sub, name, help_text)
            from agent.cli.config import apply_config

            apply_config(sub.choices[name], name)
        else:
            sub.add_parser(name, help=help_text)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in arguments if not a.startswith("-")), None)
    from agent.cli.config import ConfigFileError

    try:
        parser = build_parser(command if command in COMMANDS else None)
    except ConfigFileError as exc:
        print(f"qwq-agent: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    result: int = module.main(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
