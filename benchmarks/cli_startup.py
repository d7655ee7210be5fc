"""Start-up time of `qwq-agent --help` (and `run --help`) against a bare Python start, measured in one run.

The target is under 0.3 s for `qwq-agent --help`; the interpreter's own start is printed beside it because on
a loaded machine it alone can take a good part of that, and the difference is what this project controls.

Run: python benchmarks/cli_startup.py [--runs 15]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time


def timed(command: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    entry = shutil.which("qwq-agent")
    cli = [entry] if entry else [sys.executable, "-m", "agent.cli"]
    cases = {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "qwq-agent --help": [*cli, "--help"],
        "qwq-agent run --help": [*cli, "run", "--help"],
    }
    timed(cases["qwq-agent --help"], 2)  # warm the file cache
    results = {name: timed(command, args.runs) for name, command in cases.items()}
    base = statistics.median(results["python -c pass (baseline)"])
    for name, times in results.items():
        median = statistics.median(times)
        print(
            f"{name:28s} median {median * 1000:7.1f} ms  min {min(times) * 1000:7.1f} ms  "
            f"(+{(median - base) * 1000:6.1f} ms over bare python)"
        )
    verdict = statistics.median(results["qwq-agent --help"])
    print(
        f"target qwq-agent --help < 300 ms: {'met' if verdict < 0.3 else 'NOT met'} ({verdict * 1000:.0f} ms)"
    )


if __name__ == "__main__":
    main()
