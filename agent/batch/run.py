"""One task of a batch, and `run_batch`: many tasks here with asyncio, or on a Ray cluster.

`run_task` is the whole life of one task wherever it runs: open the tools it asks for (sandbox tools get a
sandbox of their own), let the caller's `make_agent` build the agent, run it, judge the task's check, and
turn whatever happened into a `BatchResult`. Errors of one task become its result's `error`; only errors the
user must fix before anything can work (a model that cannot be loaded, no sandbox image) end the batch, as
`BatchAbortedError`, since they would fail every remaining task the same way.
"""

from __future__ import annotations

import contextlib
import inspect
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.batch.executor import ExecOptions, WorkerEnv, WorkerLostError, execute, new_batch_id
from agent.batch.names import ALL_TOOLS, DEFAULT_TOOLS, SANDBOX_TOOLS
from agent.batch.results import BatchResult
from agent.batch.tasks import BatchTask
from prompts.errors import ConfigurationError

if TYPE_CHECKING:
    from agent.loop import Agent, AgentRun
    from sandboxes import SandboxConfig
    from tools.base import Tool

__all__ = [
    "ALL_TOOLS",
    "DEFAULT_TOOLS",
    "FATAL_ERRORS",
    "SANDBOX_TOOLS",
    "BatchAbortedError",
    "BatchJob",
    "MakeAgent",
    "run_batch",
    "run_task",
]


FATAL_ERRORS = frozenset(
    {
        "ModelConfigurationError",
        "ModelAuthenticationError",
        "ConfigurationError",
        "DockerUnavailableError",
        "ImageNotFoundError",
    }
)
"""Error types (by class name, as results carry them) that stop a batch: the user must fix something first."""

MakeAgent = Callable[[BatchTask, "list[Tool[..., Any]]"], "Agent | Awaitable[Agent]"]
"""Builds the agent for one task from the tools the task asked for (already bound to its sandbox).

On Ray it is pickled and called on the worker, so it must be picklable (a module-level function or a
dataclass instance; closures work through cloudpickle) and should cache expensive objects per process.
"""


class BatchAbortedError(ConfigurationError):
    """A task failed in a way every other task would too; the message says what to fix."""

    def __init__(self, message: str, task_id: str) -> None:
        super().__init__(message)
        self.task_id = task_id


async def _open_tools(
    names: Sequence[str], env: WorkerEnv, stack: contextlib.AsyncExitStack, allow_private: bool
) -> list[Tool[..., Any]]:
    selected: list[Tool[..., Any]] = []
    if any(n in SANDBOX_TOOLS for n in names):
        from tools.code import code_tools

        sandbox = await env.sandbox()
        stack.push_async_callback(sandbox.aclose)
        selected += [t for t in code_tools(sandbox) if t.name in names]
    if "web_fetch" in names:
        from tools.web import web_tools

        selected += web_tools(allow_private=allow_private)
    return selected


async def run_task(
    task: BatchTask,
    make_agent: MakeAgent,
    env: WorkerEnv,
    *,
    default_tools: Sequence[str] = DEFAULT_TOOLS,
    allow_private: bool = False,
) -> BatchResult:
    """Run one task to its end and describe it; never raises for the task's own failures."""
    from agent.loop import StopReason

    out = BatchResult(id=task.id, started_at=time.time())
    began = time.monotonic()
    agent: Agent | None = None
    run: AgentRun | None = None
    try:
        async with contextlib.AsyncExitStack() as stack:
            names = list(default_tools if task.tools is None else task.tools)
            tools = await _open_tools(names, env, stack, allow_private)
            made = make_agent(task, tools)
            agent = await made if inspect.isawaitable(made) else made
            if task.max_steps is not None:
                agent.max_steps = task.max_steps
            if env.transcript_dir is not None:
                agent.transcript_dir = env.transcript_dir
            run = agent.iter(task.task)
            result = await run.finish()
        out.answer = result.answer
        out.stop_reason = result.stop_reason.value
        out.steps = result.steps
        out.tool_calls = result.tool_calls
        out.usage = result.usage.as_dict()
        if result.stop_reason is StopReason.MODEL_ERROR:  # the run ended because its model failed
            out.error = result.detail
            out.error_type = type(result.error).__name__ if result.error is not None else "ModelError"
        if task.check is not None:
            out.solved = result.stop_reason is StopReason.FINAL_ANSWER and task.check.passes(result.answer)
    except Exception as exc:
        out.error = str(exc) or type(exc).__name__
        out.error_type = type(exc).__name__
        out.solved = False if task.check is not None else None
        if run is not None and run.result is not None:
            out.steps = run.result.steps
            out.usage = run.result.usage.as_dict()
    if run is not None and run.transcript_path is not None and run.transcript_path.is_file():
        out.transcript = str(run.transcript_path)
    out.wall_s = time.monotonic() - began
    out.worker = env.info()
    return out


@dataclass(frozen=True)
class BatchJob:
    """The executor job of a batch: `run_task` with the batch's settings, as a picklable callable."""

    make_agent: MakeAgent
    default_tools: tuple[str, ...] = DEFAULT_TOOLS
    allow_private: bool = False

    async def __call__(self, task: BatchTask, env: WorkerEnv) -> dict[str, Any]:
        result = await run_task(
            task,
            self.make_agent,
            env,
            default_tools=self.default_tools,
            allow_private=self.allow_private,
        )
        return result.to_row()


def _needs_sandbox(tasks: Iterable[BatchTask], default_tools: Sequence[str]) -> bool:
    return any(n in SANDBOX_TOOLS for t in tasks for n in (default_tools if t.tools is None else t.tools))


async def run_batch(
    tasks: Iterable[BatchTask | dict[str, Any]],
    make_agent: MakeAgent,
    *,
    concurrency: int | None = 4,
    ray_address: str | None = None,
    max_retries: int = 2,
    default_tools: Sequence[str] = DEFAULT_TOOLS,
    allow_private: bool = False,
    transcript_dir: str | Path | None = None,
    skip_ids: Iterable[str] = (),
    image: str | None = None,
    sandbox_config: SandboxConfig | None = None,
    warm: int | None = None,
    num_cpus: float = 1.0,
    resources: dict[str, float] | None = None,
    batch_id: str | None = None,
) -> AsyncGenerator[BatchResult, None]:
    """Run every task and yield its `BatchResult` as soon as it ends (in order of completion).

    Without `ray_address` the tasks run here, `concurrency` at a time, sandboxes from a warm `SandboxPool`
    (`warm` started ahead; default `min(concurrency, 8)` when any task uses sandbox tools). With
    `ray_address` ("auto", "HOST:PORT", "ray://HOST:PORT") each task is a Ray task: it runs on some node
    with that node's Docker engine, and is retried up to `max_retries` times elsewhere if its worker dies.
    `transcript_dir`: where run transcripts go (on Ray they are sent back and written here by the caller's
    process). Tasks whose id is in `skip_ids` are not run. Fatal errors raise `BatchAbortedError`.
    Close the iterator (`async with contextlib.aclosing(...)`) to stop early: running tasks are cancelled and
    their sandboxes removed, on every node.
    """
    skip = set(skip_ids)
    todo = [t if isinstance(t, BatchTask) else BatchTask.model_validate(t) for t in tasks]
    todo = [t for t in todo if t.id not in skip]
    if warm is None:
        warm = min(concurrency or 1, 8) if _needs_sandbox(todo, default_tools) else 0
    options = ExecOptions(
        concurrency=concurrency,
        ray_address=ray_address,
        max_retries=max_retries,
        num_cpus=num_cpus,
        resources=dict(resources or {}),
        batch_id=batch_id or new_batch_id(),
        image=image,
        sandbox_config=sandbox_config,
        warm=warm if ray_address is None else 0,
        transcript_dir=Path(transcript_dir) if transcript_dir is not None else None,
    )
    job = BatchJob(make_agent, tuple(default_tools), allow_private)
    results = execute(todo, job, options)
    try:
        async for task, outcome in results:
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome
                result = BatchResult(
                    id=task.id,
                    error=str(outcome) or type(outcome).__name__,
                    error_type=type(outcome).__name__,
                    solved=False if task.check is not None else None,
                )
                if not isinstance(outcome, WorkerLostError) and type(outcome).__name__ in FATAL_ERRORS:
                    raise BatchAbortedError(str(outcome), task.id)
            else:
                result = BatchResult.from_row(outcome)
            if result.error_type in FATAL_ERRORS:
                raise BatchAbortedError(result.error or result.error_type or "fatal error", task.id)
            yield result
    finally:
        await results.aclose()
