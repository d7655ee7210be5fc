"""`qwq-agent eval humaneval --ray`: each problem is one job of the batch executor.

The job runs where the executor puts it (a Ray worker): the agent solves the problem in a sandbox on that
node, and the solution is checked with the official tests in a fresh sandbox on the same node, exactly as
`agent.evals.humaneval` does on one machine; the row it returns is the same row, plus where it ran.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.batch.executor import WorkerEnv
from agent.batch.factory import AgentFactory

if TYPE_CHECKING:
    from agent.evals.problems import Problem
    from agent.evals.solve import SolveOptions

__all__ = ["EvalJob"]


@dataclass(frozen=True)
class EvalJob:
    """Solve one problem and check its solution, both on the worker; picklable for Ray."""

    factory: AgentFactory
    options: SolveOptions
    check_timeout: float = 10.0

    async def __call__(self, problem: Problem, env: WorkerEnv) -> dict[str, Any]:
        from dataclasses import replace

        from agent.evals.checking import Checker
        from agent.evals.humaneval import _agent_row
        from sandboxes import SandboxPool

        started = time.monotonic()
        # Size 0: no warm containers, each acquire starts a fresh labelled sandbox on this node's engine.
        pool = SandboxPool(0, env.sandbox_config, image=env.image)
        checker = Checker(image=env.image, timeout=self.check_timeout, config=env.sandbox_config)
        options = self.options
        if env.transcript_dir is not None:
            options = replace(options, transcript_dir=env.transcript_dir)
        try:
            model = self.factory.model_for(problem.task_id)
            row = await _agent_row(problem, model, checker, options, env.image, pool)
        finally:
            pool.close()
        row["duration_s"] = round(time.monotonic() - started, 3)
        row["worker"] = env.info()
        return row
