"""Wall time of `qwq-agent eval humaneval --check-harness` against a fresh `docker run` per check.

The harness checks every problem's canonical solution and its broken variants (6 checks per problem: 984 for
all 164), each in a fresh hardened sandbox. It runs here through the real CLI as a subprocess, at concurrency
1 and 4 (with its default warm pool of fresh containers, max(2, concurrency); `--no-pool` adds runs
without it). The baseline, measured in the same run on the same checks: one `docker run --rm -i` per check
(the docker CLI, the same image and hardening flags), the checking program on stdin, sequentially and with 4
at once. Both paths must reach the same verdicts (all canonical pass, all broken fail), else it says so.

Run: python benchmarks/eval_harness.py [--limit N] [--concurrency 1,4] [--no-pool] [--skip-baseline]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from agent.evals.checking import check_program
from agent.evals.humaneval import BROKEN_VARIANTS, broken_program
from agent.evals.problems import Problem, load_humaneval
from sandboxes import DEFAULT_IMAGE

REPO = Path(__file__).resolve().parents[1]

# The hardening `DockerSandbox` applies, as docker CLI flags, so the baseline pays for the same container.
DOCKER_RUN = [
    "docker", "run", "--rm", "-i", "--network", "none", "--cap-drop", "ALL",
    "--security-opt", "no-new-privileges", "--read-only", "--tmpfs", "/workspace:rw,exec,size=256m,mode=1777",
    "--tmpfs", "/tmp:rw,noexec,size=64m", "--user", "1000:1000", "--workdir", "/workspace",
    "--pids-limit", "256", "--memory", "1g", "--memory-swap", "1g", "--cpus", "1", "--init",
    "--log-driver", "none",
]  # fmt: skip


def harness_run(limit: int | None, concurrency: int, warm: int | None) -> tuple[float, dict[str, int]]:
    """Wall time of the CLI (process start to exit) and its verdict counts."""
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "rows.jsonl"
        cmd = [sys.executable, "-m", "agent.cli", "eval", "humaneval", "--check-harness", "--quiet"]
        cmd += ["--output", str(output), "--concurrency", str(concurrency)]
        if limit is not None:
            cmd += ["--limit", str(limit)]
        if warm is not None:
            cmd += ["--warm", str(warm)]
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        rows = [json.loads(line) for line in output.read_text().splitlines() if line.strip()]
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr, file=sys.stderr)
    return wall, verdicts(rows)


def verdicts(rows: list[dict[str, object]]) -> dict[str, int]:
    counts = {"checks": len(rows), "canonical_failed": 0, "broken_passed": 0, "errors": 0}
    for row in rows:
        counts["errors"] += bool(row.get("harness_error"))
        if row["kind"] == "canonical" and not row["passed"]:
            counts["canonical_failed"] += 1
        if row["kind"] == "broken" and row["passed"]:
            counts["broken_passed"] += 1
    return counts


def docker_run_check(problem: Problem, code: str, timeout: float = 10.0) -> bool:
    """One check in a new container from `docker run`: passed iff status 0 and the token was printed."""
    token = secrets.token_hex(16)
    program = check_program(problem, code, token)
    try:
        proc = subprocess.run(
            [*DOCKER_RUN, DEFAULT_IMAGE, "timeout", "-s", "KILL", str(timeout), "python3", "-I", "-"],
            input=program,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout + 30,
        )
    except subprocess.TimeoutExpired:
        return False
    lines = proc.stdout.strip().splitlines()
    return proc.returncode == 0 and bool(lines) and lines[-1].strip() == token


def baseline_run(problems: list[Problem], concurrency: int) -> tuple[float, dict[str, int]]:
    checks = [(p, "canonical", p.canonical_program) for p in problems]
    checks += [(p, "broken", broken_program(p, v)) for p in problems for v in BROKEN_VARIANTS]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        passed = list(pool.map(lambda c: docker_run_check(c[0], c[2]), checks))
    wall = time.perf_counter() - started
    rows: list[dict[str, object]] = [
        {"kind": kind, "passed": ok} for (_, kind, _), ok in zip(checks, passed, strict=True)
    ]
    return wall, verdicts(rows)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limit", type=int, help="first N problems only (default: all 164)")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated levels (default 1,4)")
    parser.add_argument("--no-pool", action="store_true", help="also run the harness without a warm pool")
    parser.add_argument("--skip-baseline", action="store_true")
    args = parser.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    problems = load_humaneval()[: args.limit] if args.limit else load_humaneval()
    n_checks = len(problems) * (1 + len(BROKEN_VARIANTS))
    print(
        f"{len(problems)} problems, {n_checks} checks (canonical + {', '.join(BROKEN_VARIANTS)}), each fresh"
    )
    # The machine may be shared: the load average says how much the figures below were disturbed.
    print("load average at start: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()), flush=True)

    results: list[tuple[str, int, float, dict[str, int]]] = []
    for level in levels:
        if not args.skip_baseline:
            wall, counts = baseline_run(problems, level)
            results.append(("docker run per check", level, wall, counts))
            print(f"  docker run, concurrency {level}: {wall:.1f} s {counts}", flush=True)
        wall, counts = harness_run(args.limit, level, None)
        results.append(("eval --check-harness (warm pool)", level, wall, counts))
        print(f"  harness, concurrency {level}: {wall:.1f} s {counts}", flush=True)
        if args.no_pool:
            wall, counts = harness_run(args.limit, level, 0)
            results.append(("eval --check-harness --warm 0", level, wall, counts))
            print(f"  harness without pool, concurrency {level}: {wall:.1f} s {counts}", flush=True)

    print("load average at end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    baseline = {level: wall for name, level, wall, _ in results if name.startswith("docker run")}
    print()
    print(f"{'path':<36} {'conc':>4} {'wall s':>8} {'ms/check':>9} {'vs docker run':>14}  verdicts")
    for name, level, wall, counts in results:
        ratio = f"{baseline[level] / wall:.2f}x" if level in baseline else "-"
        right = counts["canonical_failed"] == 0 and counts["broken_passed"] == 0 and counts["errors"] == 0
        verdict = "right" if right and counts["checks"] == n_checks else f"WRONG {counts}"
        print(f"{name:<36} {level:>4} {wall:>8.1f} {1000 * wall / n_checks:>9.0f} {ratio:>14}  {verdict}")


if __name__ == "__main__":
    main()
