"""Many agent runs at once: batches of tasks here or on a Ray cluster, and their trajectories as training data.

`run_batch(tasks, make_agent, concurrency=..., ray_address=None)` yields a `BatchResult` per task as it ends
(`agent.batch.run`); tasks come from JSONL files (`agent.batch.tasks`); results are written by one process
(`agent.batch.results`); `agent.batch.executor` runs jobs with asyncio or as Ray tasks
(`agent.batch.ray_backend`, which imports Ray only when used); `agent.batch.export` turns transcripts into
chatml or ShareGPT training rows. Nothing here is imported by `import agent`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent._lazy import lazy_attribute

if TYPE_CHECKING:
    from agent.batch.names import ALL_TOOLS, DEFAULT_TOOLS
    from agent.batch.results import BatchResult, ResultsFile, read_rows
    from agent.batch.run import BatchAbortedError, MakeAgent, run_batch, run_task
    from agent.batch.tasks import BatchTask, Check, TaskFileError, load_tasks

__all__ = [
    "ALL_TOOLS",
    "DEFAULT_TOOLS",
    "BatchAbortedError",
    "BatchResult",
    "BatchTask",
    "Check",
    "MakeAgent",
    "ResultsFile",
    "TaskFileError",
    "load_tasks",
    "read_rows",
    "run_batch",
    "run_task",
]

# Resolved on first access, so that importing a light submodule (the tool names for `--help`) stays light.
_LAZY = {
    "ALL_TOOLS": "agent.batch.names",
    "DEFAULT_TOOLS": "agent.batch.names",
    "BatchResult": "agent.batch.results",
    "ResultsFile": "agent.batch.results",
    "read_rows": "agent.batch.results",
    "BatchAbortedError": "agent.batch.run",
    "MakeAgent": "agent.batch.run",
    "run_batch": "agent.batch.run",
    "run_task": "agent.batch.run",
    "BatchTask": "agent.batch.tasks",
    "Check": "agent.batch.tasks",
    "TaskFileError": "agent.batch.tasks",
    "load_tasks": "agent.batch.tasks",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)
