"""Sandbox latency: a warm call over the attached runner vs `docker exec` vs `docker run --rm`, all in one run.

Also measures cold start (create + runner ready), acquiring from a warm `SandboxPool`, throughput of trivial
calls over 8 concurrent sandboxes, and the runtimes side by side: warm calls and cold starts under gVisor's
runsc against runc (skipped, saying so, when the engine has no runsc). Needs the engine and the image
(`qwq-agent sandbox build`).

    python benchmarks/sandbox_latency.py [--calls 500] [--exec-calls 30] [--run-calls 8] [--runtimes runc,runsc]

Targets (issue 3): warm p50 < 5 ms and >= 20x faster than exec; pool acquire < 20 ms.
Target (issue 9): runsc warm p50 < 10 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sandboxes import DockerSandbox, SandboxConfig, SandboxPool
from sandboxes._engine import get_client
from sandboxes.image import DEFAULT_IMAGE, image_exists


def _time(fn: Callable[[], object], n: int) -> list[float]:
    """Milliseconds per call of `fn`, n times."""
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _row(name: str, samples: list[float]) -> tuple[str, float]:
    p50 = statistics.median(samples)
    print(
        f"  {name:<44} n={len(samples):<5} p50={p50:9.2f} ms  p99={_pct(samples, 0.99):9.2f} ms  "
        f"min={min(samples):8.2f} ms"
    )
    return name, p50


def _runtime_figures(image: str, runtime: str, calls: int, cold: int) -> dict[str, list[float]]:
    """Warm python and shell round trips and cold starts under one runtime (milliseconds)."""
    config = SandboxConfig(runtime=runtime)
    figures: dict[str, list[float]] = {}
    cold_samples = []
    for _ in range(cold):
        start = time.perf_counter()
        sandbox = DockerSandbox(image, config=config).start()
        cold_samples.append((time.perf_counter() - start) * 1000)
        sandbox.close()
    with DockerSandbox(image, config=config) as sb:
        for _ in range(20):
            sb.run_python("print(1)")
        figures["warm run_python('print(1)')"] = _time(lambda: sb.run_python("print(1)"), calls)
        figures["warm run_shell('echo 1')"] = _time(lambda: sb.run_shell("echo 1"), max(calls // 5, 20))
        figures["write_file + read_file (1 KiB)"] = _time(
            lambda: sb.read_file(sb.write_file("f.txt", "x" * 1024)), max(calls // 5, 20)
        )
    figures["cold start (create + attach + start + ready)"] = cold_samples
    return figures


def _compare_runtimes(image: str, runtimes: list[str], calls: int, cold: int) -> dict[str, float]:
    """Print each runtime's figures beside the first's (the baseline, measured in the same run)."""
    print(f"\nruntimes side by side (baseline {runtimes[0]}; ratio = other / baseline)")
    results = {runtime: _runtime_figures(image, runtime, calls, cold) for runtime in runtimes}
    base = results[runtimes[0]]
    header = "".join(f"{r + ' p50':>12}{r + ' p99':>12}" for r in runtimes)
    ratios = "".join(f"{'p50 ' + r + '/' + runtimes[0]:>18}" for r in runtimes[1:])
    print(f"  {'':<46}{header}{ratios}")
    for name in base:
        cells = "".join(
            f"{statistics.median(results[r][name]):9.2f} ms{_pct(results[r][name], 0.99):9.2f} ms"
            for r in runtimes
        )
        ratio = "".join(
            f"{statistics.median(results[r][name]) / statistics.median(base[name]):17.1f}x"
            for r in runtimes[1:]
        )
        print(f"  {name:<46}{cells}{ratio}")
    return {r: statistics.median(results[r]["warm run_python('print(1)')"]) for r in runtimes}


async def _throughput(image: str, sandboxes: int, seconds: float) -> tuple[int, float]:
    boxes = [DockerSandbox(image) for _ in range(sandboxes)]
    await asyncio.gather(*(b.astart() for b in boxes))
    try:
        deadline = time.perf_counter() + seconds
        counts = [0] * sandboxes

        async def worker(i: int) -> None:
            while time.perf_counter() < deadline:
                result = await boxes[i].arun_python("print(1)")
                assert result.stdout == "1\n", result
                counts[i] += 1

        start = time.perf_counter()
        await asyncio.gather(*(worker(i) for i in range(sandboxes)))
        elapsed = time.perf_counter() - start
    finally:
        await asyncio.gather(*(b.aclose() for b in boxes))
    return sum(counts), elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=500, help="warm round trips to time")
    parser.add_argument("--exec-calls", type=int, default=30, help="docker exec calls to time")
    parser.add_argument("--run-calls", type=int, default=8, help="docker run --rm calls to time")
    parser.add_argument("--cold", type=int, default=5, help="cold starts to time")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the throughput test")
    parser.add_argument(
        "--runtimes",
        default="runc,runsc",
        help="runtimes to compare, the first is the baseline (default: runc,runsc); '' skips the comparison",
    )
    args = parser.parse_args()

    client = get_client()
    image = DEFAULT_IMAGE
    if not image_exists(image, client=client):
        print(f"{image} is missing: run `qwq-agent sandbox build` first", file=sys.stderr)
        return 1
    version = client.version()
    print(f"engine {version.get('Version')}, image {image}, python {sys.version.split()[0]}")

    print("\nround trip of print(1) on a started container")
    with DockerSandbox(image) as sb:
        for _ in range(20):  # warm up the interpreter, the socket and the engine's attach path
            sb.run_python("print(1)")
        warm = _row(
            "DockerSandbox.run_python (attached runner)", _time(lambda: sb.run_python("print(1)"), args.calls)
        )
        _row(
            "DockerSandbox.run_shell('echo 1')",
            _time(lambda: sb.run_shell("echo 1"), max(args.calls // 5, 20)),
        )
        container = client.containers.get(sb.container_id)
        exec_ = _row(
            "docker exec python3 -c 'print(1)' (SDK)",
            _time(lambda: container.exec_run(["python3", "-c", "print(1)"]), args.exec_calls),
        )

    run = _row(
        "docker run --rm python3 -c 'print(1)' (SDK)",
        _time(
            lambda: client.containers.run(
                image, ["python3", "-c", "print(1)"], remove=True, network_mode="none", init=True
            ),
            args.run_calls,
        ),
    )

    print("\nstarting sandboxes")
    cold_samples = []
    for _ in range(args.cold):
        start = time.perf_counter()
        sandbox = DockerSandbox(image).start()
        cold_samples.append((time.perf_counter() - start) * 1000)
        sandbox.close()
    cold = _row("cold start (create + attach + start + ready)", cold_samples)

    acquire_samples = []
    with SandboxPool(size=2, image=image) as pool:
        for _ in range(10):
            if not pool.wait_ready(timeout=120):
                raise RuntimeError("the pool did not fill")
            start = time.perf_counter()
            sandbox = pool.acquire()
            acquire_samples.append((time.perf_counter() - start) * 1000)
            sandbox.close()
    acquire = _row("SandboxPool.acquire() from a warm pool", acquire_samples)

    print("\nthroughput of arun_python('print(1)')")
    for n in (1, 8):
        calls, elapsed = asyncio.run(_throughput(image, n, args.seconds))
        print(f"  {n} concurrent sandbox(es): {calls / elapsed:,.0f} calls/s ({calls} in {elapsed:.1f} s)")

    print("\nratios (p50)")
    print(f"  docker exec / warm runner:    {exec_[1] / warm[1]:8.1f}x   (target >= 20x)")
    print(f"  docker run --rm / warm runner: {run[1] / warm[1]:7.1f}x")
    print(
        f"  warm p50 {warm[1]:.2f} ms (target < 5 ms); pool acquire p50 {acquire[1]:.3f} ms (target < 20 ms); "
        f"cold start p50 {cold[1]:.0f} ms"
    )

    wanted = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    registered = set(client.info().get("Runtimes") or {})
    missing = [r for r in wanted if r not in registered]
    if missing:
        print(
            f"\nruntimes {', '.join(missing)} not registered with the engine: not compared "
            "(`bash .ci/install_docker.sh` registers runsc)"
        )
    runtimes = [r for r in wanted if r in registered]
    if len(runtimes) >= 1:
        warm_by_runtime = _compare_runtimes(image, runtimes, args.calls, args.cold)
        if "runsc" in warm_by_runtime:
            print(f"  runsc warm p50 {warm_by_runtime['runsc']:.2f} ms (target < 10 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
