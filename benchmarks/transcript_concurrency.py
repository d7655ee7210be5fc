"""Many agents on one event loop, with and without transcripts: steps per second and the loop's worst stall.

Every finished step must be on disk (written and fsynced) before the agent's next model request, so a killed
run resumes with every finished step. An fsync costs milliseconds on a real disk; done on the event loop it
stalls every other agent for that long, once per step of every agent. This measures what the transcript
costs when K agents share one loop: K concurrent `ScriptedModel` agents (one tool call per step, then an
answer), each writing its transcript, against the same agents without transcripts in the same run.

Stall: a probe task sleeps 5 ms over and over and records how late it wakes up; the maximum and the 99th
percentile of that lateness are printed. A loop that never blocks keeps both near zero.

Run: python benchmarks/transcript_concurrency.py [--agents 50] [--steps 20] [--repeat 3] [--dir DIR]
(transcripts go to a temporary directory under DIR, default the system's temp directory; use a directory on
the disk your runs use, since fsync costs depend on it.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from agent import Agent
from agent.models import ScriptedModel
from tools import tool

PROBE_INTERVAL = 0.005


@tool
def note(text: str) -> str:
    """Write a note down.

    Args:
        text: what to note
    """
    return f"noted: {text}"


def outputs(steps: int) -> list[str]:
    calls = [
        "Let me note this.\n</think>\n\n<tool_call>\n"
        + json.dumps({"name": "note", "arguments": {"text": f"item {i}"}})
        + "\n</tool_call>"
        for i in range(steps - 1)
    ]
    return [*calls, "All noted.\n</think>\n\ndone"]


async def probe(stop: asyncio.Event, lateness: list[float]) -> None:
    """Sleep `PROBE_INTERVAL` repeatedly; each wake-up's delay beyond it is time the loop was blocked."""
    while not stop.is_set():
        began = time.perf_counter()
        await asyncio.sleep(PROBE_INTERVAL)
        lateness.append(time.perf_counter() - began - PROBE_INTERVAL)


async def one_round(agents: int, steps: int, transcript_dir: Path | None) -> tuple[float, float, float]:
    """(steps per second, max stall s, p99 stall s) for `agents` concurrent runs of `steps` steps."""
    runs = [
        Agent(
            ScriptedModel(outputs(steps), chunk_size=64),
            tools=[note],
            max_steps=steps,
            stuck_after=steps + 1,
            transcript_dir=transcript_dir,
        )
        for _ in range(agents)
    ]
    lateness: list[float] = []
    stop = asyncio.Event()
    prober = asyncio.create_task(probe(stop, lateness))
    await asyncio.sleep(0)
    began = time.perf_counter()
    results = await asyncio.gather(*(agent.run("note every item") for agent in runs))
    elapsed = time.perf_counter() - began
    stop.set()
    await prober
    assert all(r.steps == steps and r.answer == "done" for r in results), [r.stop_reason for r in results]
    if transcript_dir is not None:
        written = sum(1 for r in results if r.transcript_path is not None and r.transcript_path.is_file())
        assert written == agents, f"{written} transcripts for {agents} runs"
    ordered = sorted(lateness) or [0.0]
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return agents * steps / elapsed, max(ordered), p99


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=50)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary transcripts go")
    args = parser.parse_args()
    asyncio.run(one_round(2, 3, None))  # warm imports and caches
    figures: dict[str, list[tuple[float, float, float]]] = {"without transcripts": [], "with transcripts": []}
    for _ in range(args.repeat):
        figures["without transcripts"].append(asyncio.run(one_round(args.agents, args.steps, None)))
        where = Path(tempfile.mkdtemp(prefix="qwq-bench-", dir=args.dir))
        try:
            figures["with transcripts"].append(asyncio.run(one_round(args.agents, args.steps, where)))
        finally:
            shutil.rmtree(where, ignore_errors=True)
    print(
        f"{args.agents} concurrent agents x {args.steps} steps, {args.repeat} rounds, "
        f"transcripts under {args.dir or tempfile.gettempdir()}"
    )
    medians: dict[str, float] = {}
    for label, rounds in figures.items():
        rate = statistics.median(r[0] for r in rounds)
        medians[label] = rate
        print(
            f"{label:>20}: {rate:8.0f} steps/s (median; min {min(r[0] for r in rounds):.0f}), "
            f"loop stall max {max(r[1] for r in rounds) * 1000:6.1f} ms, "
            f"p99 {statistics.median(r[2] for r in rounds) * 1000:5.1f} ms"
        )
    ratio = medians["with transcripts"] / medians["without transcripts"]
    print(f"transcripts keep {ratio:.0%} of the throughput without them")


if __name__ == "__main__":
    main()
