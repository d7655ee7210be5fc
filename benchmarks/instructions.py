"""Instructions per step of the agent loop, counted by callgrind: a figure the machine's load cannot change.

Wall-clock timings on a shared 2-core machine swing by 2-3x with whatever else runs; instruction counts do
not (callgrind gave the same total twice here, once with the other core busy). This runs
`benchmarks/loop_overhead.py` under `valgrind --tool=callgrind` at two run lengths and reports the difference
per step, which leaves out the imports and start-up both share. `--checkout DIR` measures another checkout
(a `git worktree` of an older commit, say) with the same script, so two commits are compared like for like.

Run: python benchmarks/instructions.py [--checkout DIR ...] [--steps 20]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
COLLECTED = re.compile(r"Collected : (\d+)")


def instructions(checkout: Path, steps: int) -> int:
    """Instructions of one `loop_overhead.py` run of `steps` steps (one repeat) from `checkout`'s code."""
    command = [
        *("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"),
        *(sys.executable, str(HERE / "loop_overhead.py"), "--steps", str(steps), "--repeat", "1"),
    ]
    env = {**os.environ, "PYTHONPATH": str(checkout), "PYTHONHASHSEED": "0"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=checkout, check=False)
    found = COLLECTED.findall(proc.stderr)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"callgrind run failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return int(found[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", action="append", type=Path, help="a checkout to measure (repeatable)")
    parser.add_argument("--steps", type=int, default=20, help="the shorter run; the longer has twice as many")
    args = parser.parse_args()
    checkouts = args.checkout or [HERE.parent]
    print(f"loop_overhead.py under callgrind, {args.steps} and {2 * args.steps} steps; per step = difference")
    per_step: list[float] = []
    for checkout in checkouts:
        short, long = instructions(checkout, args.steps), instructions(checkout, 2 * args.steps)
        per_step.append((long - short) / args.steps)
        print(f"{checkout!s:<40} {per_step[-1] / 1e6:8.3f} M instructions per step")
    for checkout, value in zip(checkouts[1:], per_step[1:], strict=True):
        print(f"{checkout} against {checkouts[0]}: {value / per_step[0]:.3f}x")


if __name__ == "__main__":
    main()
