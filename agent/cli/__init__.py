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
COMMANDS["report"] = ("agent.cli.report", "write an HTML report of a run transcript, an eval or a batch")
COMMANDS["batch"] = ("agent.cli.batch", "run a JSONL file of tasks, here or on a Ray cluster (--ray)")
COMMANDS["export"] = ("agent.cli.export", "turn run transcripts into training data (chatml or ShareGPT)")


class _VersionAction(argparse.Action):
    """`--version`: the version is read from the package metadata only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help
        )

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        import agent

        print(f"qwq-agent {agent.__version__}")
        parser.exit()


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported, the others are listed by name and help text.

    This keeps `qwq-agent --help` (and every command) from importing the modules of all the others.
    """
    parser = argparse.ArgumentParser(
        prog="qwq-agent",
        description="Agents driven by QwQ-32B: reasoning, validated tool calls, a hardened Docker sandbox.",
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
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
    """Run one command. Whatever goes wrong, the user gets one line saying what, never a traceback.

    Exit codes: 0 success; 1 something failed at run time; 2 something the user must fix (usage, configuration);
    130 interrupted. Commands map their own errors; anything they did not expect lands here as exit 1, with
    the traceback shown only when QWQ_AGENT_DEBUG=1.
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("qwq-agent: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `qwq-agent ... | head`: the reader left; nothing more to say
        _silence_stdout()
        return 1
    except Exception as exc:
        import os

        if os.environ.get("QWQ_AGENT_DEBUG", "") not in ("", "0"):
            raise
        text = " ".join(str(exc).split()) or "(no message)"
        print(
            f"qwq-agent: unexpected error: {type(exc).__name__}: {text[:500]}\n"
            "  (this is a bug in qwq-agent: please report it; QWQ_AGENT_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail on the closed pipe again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def _main(argv: Sequence[str] | None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in arguments if not a.startswith("-")), None)
    from prompts.errors import ConfigurationError

    try:
        parser = build_parser(command if command in COMMANDS else None)
    except ConfigurationError as exc:
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
