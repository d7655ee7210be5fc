"""Running a problem's official tests on a solution, in a fresh sandbox, never on the host.

Why a fresh sandbox per check: the agent's workspace is under the model's control (it could leave a module
named like the test's imports, a `sitecustomize`, a changed file), so the solution is taken out as text and
checked in a container that has seen nothing else. The container has the sandbox's hardened defaults (no
network, read-only root, memory/pids/CPU limits) and the check has a hard timeout.

What "passed" means: the sandbox's Python worker (a process forked inside the fresh container, just as
HumanEval's own harness forks a process per check) runs the problem's prompt and the official test, and calls
the test's `check` function on a stand-in for the entry point. The solution itself runs in a second, fresh
interpreter, after the prompt (HumanEval's program is prompt + completion + test, so the imports and helper
functions the prompt defines exist even when a solution file leaves them out); each call of the stand-in is a
round trip to it, and only plain values (numbers, strings, bytes, and lists, tuples, sets and dicts of them)
come back, so the test compares with the built-in `==`. The solution can therefore neither reach the test's
state (its frames, its `check`, its token) nor pass with an object whose `__eq__` always says True
(`agent/evals/_isolation.py` says how). A check passes only if `check` returns without an exception within the
timeout **and** the test's process then writes a random token that the host chose. The token makes a program
that ends early without an error fail, as it must.

Check containers skip the engine-wide scan for leftover sandboxes that every sandbox start otherwise does:
hundreds of checks would repeat it hundreds of times (agent sandboxes and every other command still do it).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.evals.problems import Problem, ProblemError

if TYPE_CHECKING:
    from sandboxes import DockerSandbox, ExecResult, SandboxConfig
    from sandboxes.pool import SandboxPool

__all__ = ["CheckResult", "Checker", "check_program", "judge"]

_ISOLATION = Path(__file__).with_name("_isolation.py")


@cache
def _isolation_source() -> str:
    """The checking program's code (run in the sandbox, not text for the model)."""
    return _ISOLATION.read_text(encoding="utf-8")


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check. `duration_s` includes starting the fresh sandbox; `run_s` is the test run."""

    passed: bool
    error: str | None
    duration_s: float
    run_s: float = 0.0
    timed_out: bool = False
    output_tail: str = ""

    def as_row(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "error": self.error,
            "check_s": round(self.duration_s, 3),
            "timed_out": self.timed_out,
        }


def check_program(problem: Problem, solution: str, token: str) -> str:
    """The Python program that checks `solution` against `problem`'s official test (see the module doc)."""
    if not problem.checkable:
        raise ProblemError(f"{problem.task_id} has no official test to check against")
    prompt = problem.prompt if problem.is_code else ""
    source = _isolation_source()
    sources = [["prompt.py", prompt], ["solution.py", solution]]
    call = f"run_check({sources!r}, {problem.entry_point!r}, {problem.test!r}, {prompt!r}, {token!r}, {source!r})"
    return f"{source}\n\n{call}\n"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def judge(result: ExecResult, token: str, timeout: float) -> tuple[bool, str | None]:
    """Turn the sandbox's result of the checking program into (passed, error)."""
    if result.timed_out:
        return False, f"timed out after {timeout:g} s"
    if result.exit_code not in (0, None) or not result.ok:
        # A Python cell's `error` is the exception line ("AssertionError"); a process's is only its status.
        detail = result.error if result.traceback else (_last_line(result.stderr) or result.error)
        return False, (detail or "failed")[:500]
    if _last_line(result.stdout) != token:
        return False, "the program ended before the tests finished (sys.exit or os._exit in the solution?)"
    return True, None


class Checker:
    """Checks solutions, each in a new container from `image` (None: the default sandbox image).

    Inside `async with checker.warm(n)`, containers come from a `SandboxPool` that keeps `n` started ahead
    of need. A pooled container is still fresh: the pool hands each one out once and never takes it back.
    """

    def __init__(
        self,
        *,
        image: str | None = None,
        timeout: float = 10.0,
        config: SandboxConfig | None = None,
    ) -> None:
        from sandboxes import SandboxConfig

        self.image = image
        self.timeout = timeout
        self.config = (config or SandboxConfig()).model_copy(update={"cleanup_leftovers": False})
        self._pool: SandboxPool | None = None
        self._closing: set[asyncio.Task[None]] | None = None

    @contextlib.asynccontextmanager
    async def warm(self, size: int) -> AsyncIterator[Checker]:
        """Keep `size` fresh containers started ahead of the checks (0: start each when needed).

        Inside, used containers are also removed in the background rather than before the verdict is
        returned; leaving the block waits for those removals.
        """
        if self._pool is not None:
            yield self
            return
        self._closing = set()
        try:
            if size <= 0:
                yield self
                return
            from sandboxes.pool import SandboxPool

            async with SandboxPool(size, self.config, image=self.image) as pool:
                self._pool = pool
                try:
                    yield self
                finally:
                    self._pool = None
        finally:
            closing, self._closing = self._closing, None
            if closing:
                await asyncio.gather(*closing, return_exceptions=True)

    async def _release(self, sandbox: DockerSandbox) -> None:
        closing = self._closing
        if closing is None:
            await sandbox.aclose()
            return
        task = asyncio.create_task(sandbox.aclose())
        closing.add(task)
        task.add_done_callback(closing.discard)

    async def _acquire(self) -> DockerSandbox:
        if self._pool is not None:
            return await self._pool.aacquire()
        from sandboxes import DockerSandbox

        return await DockerSandbox(image=self.image, config=self.config).astart()

    async def check(self, problem: Problem, solution: str) -> CheckResult:
        """Run `problem`'s official test on `solution` in a fresh sandbox; sandbox errors are raised."""
        token = secrets.token_hex(16)
        program = check_program(problem, solution, token)
        started = time.monotonic()
        sandbox = await self._acquire()
        try:
            result = await sandbox.arun_python(program, timeout=self.timeout)
        finally:
            await self._release(sandbox)
        passed, error = judge(result, token, self.timeout)
        tail = (result.stdout[-300:] + result.stderr[-700:]).replace(token, "<token>")
        return CheckResult(
            passed=passed,
            error=error,
            duration_s=time.monotonic() - started,
            run_s=result.duration_s,
            timed_out=result.timed_out,
            output_tail=tail,
        )
