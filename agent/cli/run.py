"""`qwq-agent run "TASK"`: the main job — an agent on a task, its thinking shown live, its transcript kept.

Exit codes: 0 the model gave a final answer; 1 a budget or error stopped the run (the transcript says which;
a model or server that failed mid-run is such an error); 2 usage or configuration error, including a model or
server that cannot be used as named (the message says what to do); 130 interrupted with Ctrl-C (the finished
steps are in the transcript and the run can be continued with `--resume`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.cli.view import View
    from agent.models.base import Model
    from sandboxes import DockerSandbox, SandboxConfig
    from tools.base import Tool

__all__ = ["ALL_TOOLS", "DEFAULT_TOOLS", "add_parser", "main", "open_tools_and_sandbox"]

SANDBOX_TOOLS = ("python", "shell", "write_file", "read_file")
ALL_TOOLS = (*SANDBOX_TOOLS, "web_fetch")
DEFAULT_TOOLS = ",".join(ALL_TOOLS)


def add_parser(sub: Any, name: str, help_text: str) -> None:
    from agent.cli.common import add_keep_thinking_argument, add_model_arguments, add_sandbox_arguments

    parser = sub.add_parser(
        name,
        help=help_text,
        description="Run an agent on TASK with tools in a hardened Docker sandbox, showing its reasoning live.",
    )
    parser.add_argument("task", nargs="?", help="what to do (optional with --resume)")
    add_model_arguments(parser)
    parser.add_argument(
        "--tools",
        default=DEFAULT_TOOLS,
        help=f"comma-separated tools from {', '.join(ALL_TOOLS)}; 'none' for no tools (default: all)",
    )
    parser.add_argument(
        "--mcp-config", type=Path, help='JSON file with {"mcpServers": {...}} to add MCP tools'
    )
    parser.add_argument("--allow-private", action="store_true", help="let web_fetch reach private addresses")
    parser.add_argument("--system-prompt", help="replace the default system prompt with this text")
    parser.add_argument("--transcript-dir", type=Path, default=Path("runs"), help="default: ./runs")
    parser.add_argument("--resume", type=Path, metavar="FILE", help="continue the run recorded in FILE")
    add_keep_thinking_argument(parser)
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--quiet", "-q", action="store_true", help="print only the final answer")
    output.add_argument("--json", action="store_true", help="print events as JSON lines")
    parser.add_argument("--hide-thinking", action="store_true", help="do not show the reasoning")
    add_sandbox_arguments(parser)


def _selected_tools(spec: str) -> list[str]:
    from agent.cli.common import ConfigurationError

    if spec.strip().lower() in ("", "none"):
        return []
    names = [n.strip() for n in spec.split(",") if n.strip()]
    unknown = [n for n in names if n not in ALL_TOOLS]
    if unknown:
        raise ConfigurationError(
            f"unknown tool(s) {', '.join(unknown)} in --tools; choose from {', '.join(ALL_TOOLS)}, or 'none'"
        )
    return names


@dataclass
class _Progress:
    """What `main` needs to know about a run that was interrupted or failed: where its transcript is."""

    transcript: Path | None = None

    def saved(self) -> Path | None:
        """The transcript, if the run recorded at least one step in it (the file appears with the first)."""
        return self.transcript if self.transcript is not None and self.transcript.is_file() else None


async def open_tools_and_sandbox(
    names: list[str],
    stack: AsyncExitStack,
    view: View,
    *,
    mcp_config: Path | None = None,
    allow_private: bool = False,
    sandbox_config: SandboxConfig | None = None,
) -> tuple[list[Tool[..., Any]], DockerSandbox | None]:
    """Start what the named tools need (a sandbox, MCP servers) on `stack`, which closes them at the end.

    Also returns the sandbox it started (None without sandbox tools): masked results are saved there.
    """
    selected: list[Tool[..., Any]] = []
    sandbox: DockerSandbox | None = None
    if any(n in SANDBOX_TOOLS for n in names):
        from agent.cli.common import ensure_sandbox_image
        from sandboxes import DockerSandbox
        from tools.code import code_tools

        await asyncio.to_thread(ensure_sandbox_image, None, view.note)
        sandbox = await stack.enter_async_context(DockerSandbox(config=sandbox_config))
        selected += [t for t in code_tools(sandbox) if t.name in names]
    if "web_fetch" in names:
        from tools.web import web_tools

        selected += [t for t in web_tools(allow_private=allow_private) if t.name in names]
    if mcp_config is not None:
        from tools.mcp import MCPServers

        servers = await stack.enter_async_context(MCPServers.from_json(mcp_config))
        selected += list(servers.tools)
    return selected, sandbox


async def _run(
    args: argparse.Namespace, model: Model, names: list[str], view: View, progress: _Progress
) -> int:
    from agent.cli.common import ConfigurationError, context_policy, one_line, run_options, sandbox_config
    from agent.loop import Agent, StopReason
    from agent.models.errors import ModelConfigurationError

    async with AsyncExitStack() as stack:
        tools, sandbox = await open_tools_and_sandbox(
            names,
            stack,
            view,
            mcp_config=args.mcp_config,
            allow_private=args.allow_private,
            sandbox_config=sandbox_config(args),
        )
        try:
            agent = Agent(
                model,
                tools,
                system_prompt=args.system_prompt,
                **run_options(args),
                transcript_dir=args.transcript_dir,
                context=context_policy(args, sandbox),
            )
        except ValueError as exc:  # budgets out of range: the message names the option's rule
            raise ConfigurationError(str(exc)) from exc
        run = agent.iter_resume(args.resume, args.task) if args.resume is not None else agent.iter(args.task)
        progress.transcript = run.transcript_path
        try:
            async for event in run:
                view.handle(event)
        finally:
            view.close()
            if progress.saved() is not None:
                view.note(f"transcript: {progress.saved()}")
        result = run.result
        if result is None:
            return 1
        if result.stop_reason is StopReason.FINAL_ANSWER:
            return 0
        resume = (
            f"; continue with: qwq-agent run --resume {progress.saved()}"
            if progress.saved() is not None
            else "; no step finished, so there is nothing to resume"
        )
        if result.stop_reason is StopReason.MODEL_ERROR:
            print(f"qwq-agent run: the model failed: {one_line(result.detail)}{resume}", file=sys.stderr)
            return 2 if isinstance(result.error, ModelConfigurationError) else 1
        view.note(
            f"stopped by {result.stop_reason.value}"
            + (f" ({result.detail})" if result.detail else "")
            + resume
        )
        return 1


def main(args: argparse.Namespace) -> int:
    from agent.cli.common import build_model, load_now, run_in_view
    from agent.cli.view import make_view

    if args.task is None and args.resume is None:
        print(
            'qwq-agent run: give a TASK, e.g. qwq-agent run "What is 2**100?", or --resume FILE',
            file=sys.stderr,
        )
        return 2
    view = make_view(quiet=args.quiet, json_lines=args.json, show_thinking=not args.hide_thinking)
    progress = _Progress(transcript=args.resume)

    def body() -> int:
        names = _selected_tools(args.tools)
        model = build_model(args)
        # an in-process model is loaded before any sandbox starts: a bad GGUF is a configuration error, said once
        load_now(model, view.note)
        return asyncio.run(_run(args, model, names, view, progress))

    def interrupted() -> str:
        saved = progress.saved()
        if saved is None:
            return "interrupted before the first step finished: no transcript was written, nothing to resume"
        return (
            f"interrupted: the finished steps are in {saved}; continue with: qwq-agent run --resume {saved}"
        )

    return run_in_view("run", view, body, interrupted)
