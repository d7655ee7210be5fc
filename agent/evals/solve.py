"""The solve loop: an agent works on one problem in a sandbox workspace and leaves a solution file.

What counts as the solution: the file `/workspace/solution.py` (name configurable) as the agent last left it
in its workspace; the system prompt (`prompts/templates/solve.j2`) tells the model exactly that. Not the final
answer's text, not the last code it ran: a file is unambiguous, the model can test the very thing that is
graded, and the prompt can tell it to keep it complete. A run that leaves no such file has no solution.

After the agent stops, the loop itself runs the file once more in the same workspace (`python3 solution.py`,
with a timeout), so the result always says whether the final version runs, whatever the agent claimed; and
`ran_by_agent` says whether the agent ran it after its last write (from the tool calls; a heuristic).
"""

from __future__ import annotations

import asyncio
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.context import ContextPolicy
from agent.evals.problems import Problem

if TYPE_CHECKING:
    from agent.events import Event
    from agent.loop import RunResult
    from agent.models.base import KeepThinking, Model
    from sandboxes import DockerSandbox, ExecResult, SandboxConfig

__all__ = [
    "SOLUTION_FILE",
    "SolveOptions",
    "SolveOutcome",
    "ran_after_last_write",
    "solve",
    "solve_in_sandbox",
    "solve_sync",
    "system_prompt",
    "task_text",
]

SOLUTION_FILE = "solution.py"
_CODE_TOOLS = ("python", "shell")


@dataclass(frozen=True)
class SolveOptions:
    """Budgets and places of one solve run (the defaults suit a HumanEval-sized problem).

    A field named as an `Agent` setting is that setting, passed on as it is (`agent_settings`);
    `solution_file` and `final_run_timeout` are the solve loop's own.
    """

    max_steps: int = 20
    timeout: float | None = None
    thinking_budget: int | None = None
    token_budget: int | None = None
    transcript_dir: Path | None = None
    solution_file: str = SOLUTION_FILE
    final_run_timeout: float = 30.0
    keep_thinking: KeepThinking = "none"
    context: ContextPolicy | None = field(default_factory=ContextPolicy)  # masked results: in its sandbox

    def agent_settings(self) -> dict[str, Any]:
        """The fields that are `Agent` settings, by name: matched by name rather than listed, so that an
        option added here reaches the agent without a second list to keep up to date."""
        from agent.loop import Agent

        settings = {f.name for f in fields(Agent) if f.init}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name in settings}


@dataclass
class SolveOutcome:
    """What a solve run left: the run, the solution text (None: no file), and the loop's own run of it."""

    problem: Problem
    result: RunResult | None
    solution: str | None
    final_run: ExecResult | None
    ran_by_agent: bool
    duration_s: float
    error: str | None = None

    @property
    def verified(self) -> bool:
        """The solution file exists and ran to its end without an error when the loop ran it itself."""
        return self.final_run is not None and self.final_run.ok


def system_prompt(solution_file: str = SOLUTION_FILE) -> str:
    """The solve-mode system prompt; it names the same file the loop takes out, so the two cannot drift."""
    import prompts
    from sandboxes import WORKSPACE

    return prompts.render_system_prompt("solve", workspace=WORKSPACE, solution_file=solution_file)


def task_text(problem: Problem) -> str:
    """The user turn: the statement as written, or the code to complete in a Python code block."""
    if problem.is_code:
        return f"```python\n{problem.prompt.rstrip()}\n```"
    return problem.prompt


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def ran_after_last_write(result: RunResult, solution_file: str) -> bool:
    """Whether a python or shell call mentioning the solution came after the last `write_file` of it."""
    from agent.messages import AssistantMessage

    stem = solution_file.rsplit("/", 1)[-1].removesuffix(".py")
    ran = False
    for message in result.messages:
        if not isinstance(message, AssistantMessage):
            continue
        for call in message.tool_calls:
            texts = _strings(call.arguments)
            if call.name == "write_file" and any(t.rstrip().endswith(solution_file) for t in texts):
                ran = False
            elif call.name in _CODE_TOOLS and any(stem in t for t in texts):
                ran = True
    return ran


async def solve_in_sandbox(
    problem: Problem,
    model: Model,
    sandbox: DockerSandbox,
    options: SolveOptions | None = None,
    *,
    on_event: Callable[[Event], None] | None = None,
) -> SolveOutcome:
    """Run the agent on `problem` with the code tools bound to `sandbox` (started), then take the file out.

    Errors of the model or the engine propagate; a run that merely stops on a budget still yields whatever
    solution file it left.
    """
    from agent.loop import Agent
    from sandboxes import SandboxFileError
    from tools.code import code_tools

    options = options or SolveOptions()
    started = time.monotonic()
    settings = options.agent_settings()
    if options.context is not None:  # masked results are kept in the run's own sandbox
        settings["context"] = replace(options.context, sandbox=sandbox)
    agent = Agent(model, code_tools(sandbox), system_prompt=system_prompt(options.solution_file), **settings)
    run = agent.iter(task_text(problem))
    async for event in run:
        if on_event is not None:
            on_event(event)
    result = run.result
    solution: str | None = None
    final_run: ExecResult | None = None
    error: str | None = None
    try:
        solution = (await sandbox.aread_file(options.solution_file)).decode("utf-8", errors="replace")
    except SandboxFileError:
        error = f"no solution file: the agent did not leave {options.solution_file} in the workspace"
    if solution is not None:
        final_run = await sandbox.arun_shell(
            f"python3 {shlex.quote(options.solution_file)}", timeout=options.final_run_timeout
        )
        if not final_run.ok:
            error = f"the solution file does not run: {final_run.error or 'failed'}"
    return SolveOutcome(
        problem=problem,
        result=result,
        solution=solution,
        final_run=final_run,
        ran_by_agent=result is not None and ran_after_last_write(result, options.solution_file),
        duration_s=time.monotonic() - started,
        error=error,
    )


async def solve(
    problem: Problem,
    model: Model,
    options: SolveOptions | None = None,
    *,
    image: str | None = None,
    on_event: Callable[[Event], None] | None = None,
    config: SandboxConfig | None = None,
) -> SolveOutcome:
    """`solve_in_sandbox` in a new sandbox of its own (`config`: its limits and runtime), removed afterwards."""
    from sandboxes import DockerSandbox

    async with DockerSandbox(image=image, config=config) as sandbox:
        return await solve_in_sandbox(problem, model, sandbox, options, on_event=on_event)


def solve_sync(problem: Problem, model: Model, options: SolveOptions | None = None) -> SolveOutcome:
    """`solve` for scripts without an event loop."""
    return asyncio.run(solve(problem, model, options))
