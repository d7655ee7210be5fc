"""Running many jobs: here with asyncio, or as Ray tasks over a cluster, behind one async iterator.

A *job* is a picklable async callable `job(item, env) -> row` (a JSON-able dict). `execute` runs it on every
item and yields `(item, row)` as each finishes, or `(item, exception)` when it could not run at all (on Ray:
the worker died more often than `max_retries` allows). Rows are yielded to the caller, which alone writes
them: on Ray that caller is the driver, so the results file stays one valid file however many nodes work.

The `WorkerEnv` a job receives says where it runs and gives it sandboxes: from a warm `SandboxPool` here, or
started fresh on the Ray node's own Docker engine (`DOCKER_HOST` when set on that node). Every sandbox carries
the batch's label, which is how a cancelled batch finds and removes what its killed workers left behind.

Ray is imported only in Ray mode (`agent.batch.ray_backend`); local mode needs nothing beyond the project.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncGenerator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from prompts.errors import RunError

if TYPE_CHECKING:
    from sandboxes import DockerSandbox, SandboxConfig, SandboxPool

__all__ = [
    "BATCH_LABEL",
    "PROCESS_STATS",
    "ExecOptions",
    "Job",
    "WorkerEnv",
    "WorkerLostError",
    "execute",
    "new_batch_id",
]

T = TypeVar("T")
Job = Callable[[Any, "WorkerEnv"], Coroutine[Any, Any, dict[str, Any]]]

BATCH_LABEL = "qwq-agent.batch"
"""Docker label on every sandbox a batch starts; its value is the batch id."""

PROCESS_STATS: dict[str, int] = {"models_built": 0}
"""Per-process counters shown in each result's `worker` field (a model is built once per worker process)."""


class WorkerLostError(RunError):
    """A job could not finish because the process or node running it died, more often than retries allow."""


def new_batch_id() -> str:
    return uuid.uuid4().hex[:12]


@dataclass
class WorkerEnv:
    """Where a job runs and what it may use there. Picklable (without `pool`), so Ray ships it to workers."""

    sandbox_config: SandboxConfig
    image: str | None = None
    transcript_dir: Path | None = None
    node: str | None = None
    pool: SandboxPool | None = field(default=None, repr=False)

    async def sandbox(self) -> DockerSandbox:
        """A started sandbox for one job, which closes it: from the warm pool here, else a fresh one."""
        if self.pool is not None:
            return await self.pool.aacquire()
        from sandboxes import DockerSandbox

        return await DockerSandbox(self.image, self.sandbox_config).astart()

    def info(self) -> dict[str, Any]:
        """Where this job runs: host, process, Ray node (if any), and models built in this process so far."""
        where: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
        if self.node is not None:
            where["node"] = self.node
        where["models_built"] = PROCESS_STATS["models_built"]
        return where


@dataclass(frozen=True)
class ExecOptions:
    """How to run a batch. `concurrency`: jobs at once (on Ray: jobs submitted and not yet finished; None
    there means as many as the cluster has room for). `warm`: sandboxes kept started ahead (local mode).
    `num_cpus`/`resources`: what one Ray task reserves on its node (fractions let a node run more at once).
    """

    concurrency: int | None = 4
    ray_address: str | None = None
    max_retries: int = 2
    num_cpus: float = 1.0
    resources: dict[str, float] = field(default_factory=dict)
    batch_id: str = field(default_factory=new_batch_id)
    image: str | None = None
    sandbox_config: SandboxConfig | None = None
    warm: int = 0
    transcript_dir: Path | None = None

    def labelled_config(self) -> SandboxConfig:
        from sandboxes import SandboxConfig

        config = self.sandbox_config or SandboxConfig()
        return config.model_copy(update={"labels": {**config.labels, BATCH_LABEL: self.batch_id}})


async def execute(
    items: Sequence[T], job: Job, options: ExecOptions
) -> AsyncGenerator[tuple[T, dict[str, Any] | BaseException], None]:
    """Run `job` on every item (locally, or on Ray when `options.ray_address` is set), yielding as each ends.

    Closing the iterator early (Ctrl-C, `break`, an exception in the caller) cancels what still runs and
    removes its sandboxes, on every node.
    """
    if options.ray_address is not None:
        from agent.batch.ray_backend import execute_on_ray

        runner = execute_on_ray(items, job, options)
    else:
        runner = _execute_locally(items, job, options)
    try:
        async for pair in runner:
            yield pair
    finally:
        await runner.aclose()


async def _execute_locally(
    items: Sequence[T], job: Job, options: ExecOptions
) -> AsyncGenerator[tuple[T, dict[str, Any] | BaseException], None]:
    if not items:
        return
    pool = None
    if options.warm > 0:
        from sandboxes import SandboxPool

        pool = SandboxPool(options.warm, options.labelled_config(), image=options.image)
    env = WorkerEnv(
        sandbox_config=options.labelled_config(),
        image=options.image,
        transcript_dir=options.transcript_dir,
        pool=pool,
    )
    pending = iter(items)
    finished: asyncio.Queue[tuple[T, dict[str, Any] | BaseException]] = asyncio.Queue()

    async def worker() -> None:
        for item in pending:  # one shared iterator: each item is taken by exactly one worker
            try:
                outcome: dict[str, Any] | BaseException = await job(item, env)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                outcome = exc
            finished.put_nowait((item, outcome))

    workers: list[asyncio.Task[None]] = []
    try:
        if pool is not None:
            pool.start()
        width = max(1, min(options.concurrency or 1, len(items)))
        workers = [asyncio.create_task(worker()) for _ in range(width)]
        for _ in range(len(items)):
            yield await finished.get()
    finally:
        for task in workers:
            task.cancel()
        # The jobs' `async with` blocks close their sandboxes as the cancellation unwinds them.
        await asyncio.gather(*workers, return_exceptions=True)
        if pool is not None:
            await pool.aclose()
