"""Ray mode of `agent.batch.executor`: each job is one Ray task on some node of a cluster.

Driver side (`execute_on_ray`): connects to the cluster, keeps up to `concurrency` tasks in flight, and
yields each result the moment its task ends. A task whose worker process or node dies is retried by Ray
itself, up to `max_retries` times, on whatever node has room; its ObjectRef resolves once, so the driver
records it once, never twice. When the iterator is closed early (Ctrl-C) the driver cancels every task in
flight (first politely, so jobs close their sandboxes; then by force) and runs a sweep task on every live
node that removes the containers labelled with this batch's id, which a killed worker may have left.

Worker side (`_run_job`): one asyncio event loop per worker process, kept across tasks, so objects a job
caches per process (an in-process model loaded once, not per task) stay usable. Transcripts written in the
task's temporary directory are sent back with the result and written by the driver, so they end up next to
RESULTS.jsonl whatever node ran the task.

`ray` is imported inside functions only: importing this module costs nothing without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from agent.batch.executor import BATCH_LABEL, ExecOptions, Job, WorkerEnv, WorkerLostError
from prompts.errors import ConfigurationError

__all__ = ["connect", "execute_on_ray", "ray_available", "sweep_cluster"]

T = TypeVar("T")

# Seconds the driver waits for politely cancelled tasks to unwind (and close their sandboxes) before it
# kills their workers.
_CANCEL_GRACE_S = 10.0
_SWEEP_TIMEOUT_S = 60.0
_worker_loop: asyncio.AbstractEventLoop | None = None


class RayUnavailableError(ConfigurationError):
    """Ray is not installed, or the cluster cannot be reached (the message says what to do)."""


def ray_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailableError(
            f"Ray is not installed ({exc}): pip install 'qwq-agent[ray]' on the driver and on every node"
        ) from exc
    return ray


def connect(address: str) -> Any:
    """Connect this process to the cluster at `address` ("auto", "HOST:PORT" or "ray://HOST:PORT") once."""
    ray = _import_ray()
    if ray.is_initialized():
        return ray
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise RayUnavailableError(
            f"cannot connect to the Ray cluster at {address!r} ({exc}). Start one with `ray start --head` "
            "(and `ray start --address HEAD:6379` on the other nodes), then pass --ray HEAD:6379 or --ray auto"
        ) from exc
    return ray


def _explain(exc: BaseException, retries: int) -> BaseException:
    """The exception a finished ObjectRef raised, as the error a result row records."""
    ray = _import_ray()
    if isinstance(exc, ray.exceptions.RayTaskError):
        # The job itself raised (jobs catch their own errors, so this is unusual): report its cause.
        cause = exc.as_instanceof_cause()
        return cause if isinstance(cause, BaseException) else exc
    if isinstance(exc, ray.exceptions.RayError):
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return WorkerLostError(
            f"the worker running this task died ({type(exc).__name__}: {first_line[:300]}); "
            f"it was tried {retries + 1} time(s) in all (--max-retries {retries})"
        )
    return exc


async def execute_on_ray(
    items: Sequence[T], job: Job, options: ExecOptions
) -> AsyncGenerator[tuple[T, dict[str, Any] | BaseException], None]:
    """`executor.execute` on a Ray cluster (see the module docstring)."""
    assert options.ray_address is not None
    if not items:
        return  # nothing to run: no reason to connect
    ray = connect(options.ray_address)
    remote = ray.remote(_run_job).options(
        num_cpus=options.num_cpus,
        resources=dict(options.resources) or None,
        max_retries=options.max_retries,
        retry_exceptions=False,
        scheduling_strategy="SPREAD",
    )
    env = WorkerEnv(
        sandbox_config=options.labelled_config(),
        image=options.image,
        transcript_dir=options.transcript_dir,
    )
    job_ref = ray.put(job)
    ship = options.transcript_dir is not None
    window = options.concurrency or _cluster_room(ray, options.num_cpus)
    queue = list(reversed(items))
    in_flight: dict[asyncio.Future[Any], tuple[T, Any]] = {}
    try:
        while queue or in_flight:
            while queue and len(in_flight) < window:
                item = queue.pop()
                ref = remote.remote(job_ref, item, env, ship)
                in_flight[asyncio.wrap_future(ref.future())] = (item, ref)
            done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            for future in done:
                item, _ref = in_flight.pop(future)
                try:
                    row, files = future.result()
                except Exception as exc:
                    yield item, _explain(exc, options.max_retries)
                    continue
                yield item, _receive(row, files, options.transcript_dir)
    finally:
        refs = [ref for _, ref in in_flight.values()]
        for future in in_flight:
            future.cancel()
        if refs:
            await asyncio.to_thread(_cancel, ray, refs)
        # Also after a normal end: a killed worker (or a killed earlier driver of this batch) may have left a
        # container that its engine has not removed yet.
        await asyncio.to_thread(sweep_cluster, options.batch_id)


def _cluster_room(ray: Any, num_cpus: float) -> int:
    """How many tasks of `num_cpus` the cluster's CPUs hold at once (at least 1)."""
    # From the node table: `cluster_resources()` can lag behind nodes that joined a moment ago.
    cpus = sum(float(n.get("Resources", {}).get("CPU", 0.0)) for n in ray.nodes() if n.get("Alive")) or 1.0
    return max(1, int(cpus / num_cpus) if num_cpus > 0 else int(cpus))


def _receive(row: dict[str, Any], files: dict[str, bytes], transcript_dir: Path | None) -> dict[str, Any]:
    """Write the transcripts a task sent back into the driver's transcript directory; point the row at them."""
    if transcript_dir is None or not files:
        return row
    transcript_dir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (transcript_dir / name).write_bytes(data)
    sent = row.get("transcript")
    if isinstance(sent, str) and Path(sent).name in files:
        row["transcript"] = str(transcript_dir / Path(sent).name)
    return row


def _cancel(ray: Any, refs: list[Any]) -> None:
    """Cancel tasks: politely first (the job unwinds and closes its sandboxes), then by killing the worker."""
    for ref in refs:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=False)
    with contextlib.suppress(Exception):
        _, still = ray.wait(refs, num_returns=len(refs), timeout=_CANCEL_GRACE_S)
        for ref in still:
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        ray.wait(still, num_returns=len(still), timeout=_CANCEL_GRACE_S)


def sweep_cluster(batch_id: str) -> dict[str, list[str]]:
    """On every live node, remove the sandbox containers labelled with `batch_id` (and dead owners' ones).

    Returns node id -> short ids removed there. Nodes whose sweep fails (no Docker there) are skipped.
    """
    ray = _import_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    sweep = ray.remote(_sweep_node)
    refs = {
        node["NodeID"]: sweep.options(
            num_cpus=0,
            max_retries=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
        ).remote(batch_id)
        for node in ray.nodes()
        if node.get("Alive")
    }
    removed: dict[str, list[str]] = {}
    for node_id, ref in refs.items():
        try:
            removed[node_id] = ray.get(ref, timeout=_SWEEP_TIMEOUT_S)
        except Exception:
            removed[node_id] = []
    return removed


# ---------------------------------------------------------------------------------------------- worker side


def _sweep_node(batch_id: str) -> list[str]:
    """Runs on one node: remove this batch's sandboxes and those whose owning process has died."""
    from sandboxes._engine import (
        find_containers,
        get_client,
        remove_container,
        remove_dead_leftovers,
    )

    client = get_client()
    removed = []
    for container in find_containers(client):
        if container.labels.get(BATCH_LABEL) == batch_id:
            remove_container(client, container.id)
            removed.append(container.short_id)
    removed += remove_dead_leftovers(client)
    return removed


def _loop() -> asyncio.AbstractEventLoop:
    global _worker_loop
    if _worker_loop is None or _worker_loop.is_closed():
        _worker_loop = asyncio.new_event_loop()
    return _worker_loop


def _run_job(job: Job, item: Any, env: WorkerEnv, ship: bool) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The Ray task: run one job on this worker's event loop; returns its row and the transcripts it wrote."""
    import ray

    node = ray.get_runtime_context().get_node_id()
    scratch = Path(tempfile.mkdtemp(prefix="qwq-batch-")) if ship else None
    here = WorkerEnv(
        sandbox_config=env.sandbox_config,
        image=env.image,
        transcript_dir=scratch if ship else env.transcript_dir,
        node=node,
    )
    loop = _loop()
    task = loop.create_task(job(item, here))
    try:
        row = loop.run_until_complete(task)
        files = {p.name: p.read_bytes() for p in sorted(scratch.iterdir())} if scratch is not None else {}
        return row, files
    except BaseException:
        # ray.cancel raises KeyboardInterrupt here: let the job unwind (close its sandboxes), then go.
        task.cancel()
        with contextlib.suppress(BaseException):
            loop.run_until_complete(asyncio.wait_for(task, _CANCEL_GRACE_S))
        raise
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
