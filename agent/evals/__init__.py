"""Solving and evaluating coding problems with an agent in a sandbox.

`agent.evals.solve` runs the agent on one problem in a sandbox workspace and takes out the solution file it
wrote; `agent.evals.checking` runs a problem's official tests on a solution in a fresh sandbox (never on the
host); `agent.evals.humaneval` loads the HumanEval problems and drives a whole evaluation (agent runs, or the
canonical and deliberately broken solutions that test the harness itself). Nothing here is imported by
`import agent`: the CLI imports these modules only when `solve` or `eval` runs.
"""

from __future__ import annotations

__all__: list[str] = []
