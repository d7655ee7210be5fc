"""How fast a 500-step run's HTML report is built, and how fast headless Chromium opens it.

The run is real: the loop with scripted model outputs (reasoning of 60-240 words, one or two calls per step)
and real tools writes the transcript. Build: reading the transcript and writing the page
(`agent.reports.write_report`), median of several builds. Open: `chromium --headless --dump-dom` of the page
(load, style, layout, serialise) against the same for a blank page, both measured here; the difference is
what the report costs. Targets: build under 2 s, open under 3 s.

Run: python benchmarks/report.py [--steps 500] [--builds 5] [--opens 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent import Agent  # noqa: E402
from agent.models import ScriptedModel, completion_text, tool_call_text  # noqa: E402
from agent.reports import write_report  # noqa: E402
from agent.reports.browser import dump_dom, find_chromium, screenshot  # noqa: E402

WORDS = [
    "the",
    "model",
    "weighs",
    "what",
    "the",
    "last",
    "observation",
    "said",
    "against",
    "what",
    "the",
    "task",
    "still",
    "needs",
]


def lookup(key: str) -> str:
    """Look a key up; some keys are missing."""
    if key.endswith("7"):
        raise KeyError(f"no entry {key!r}")
    return "\n".join(f"{key}: value line {i} " + "x" * (i * 7 % 60) for i in range(3 + len(key) % 30))


def measure(text: str) -> int:
    """Length of a text."""
    return len(text)


def long_run(directory: Path, steps: int) -> Path:
    outputs = []
    for step in range(1, steps):
        thinking = " ".join(WORDS[(step + i) % len(WORDS)] for i in range(60 + step * 37 % 180))
        calls = [tool_call_text("lookup", {"key": f"item-{step}"})]
        if step % 3 == 0:
            calls.append(tool_call_text("measure", {"text": thinking[:400]}))
        outputs.append(completion_text(thinking, *calls))
    outputs.append(completion_text("Everything is looked up.", content="Done: all items were read."))
    agent = Agent(ScriptedModel(outputs), [lookup, measure], max_steps=steps, transcript_dir=directory)
    result = agent.run_sync("Look up every item and report what you found.")
    assert result.steps == steps, result.stop_reason
    assert result.transcript_path is not None
    return result.transcript_path


def _children_cpu() -> float:
    """CPU seconds of finished child processes (Chromium and the processes it reaped): less at the mercy of a
    busy machine than wall time."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--builds", type=int, default=5)
    parser.add_argument("--opens", type=int, default=3)
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="qwq-report-bench-") as folder:
        work = Path(folder)
        began = time.perf_counter()
        transcript = long_run(work / "runs", args.steps)
        print(
            f"transcript: {args.steps} steps, {transcript.stat().st_size / 1e6:.1f} MB "
            f"(written by the loop in {time.perf_counter() - began:.1f} s)"
        )
        page = work / "run.html"
        builds = []
        for _ in range(args.builds):
            began = time.perf_counter()
            write_report(transcript, page)
            builds.append(time.perf_counter() - began)
        build = statistics.median(builds)
        print(
            f"build (read transcript + write page): median {build * 1000:7.0f} ms  min {min(builds) * 1000:7.0f} ms"
            f"  page {page.stat().st_size / 1e6:.1f} MB   target < 2 s: {'met' if build < 2 else 'NOT met'}"
        )
        if find_chromium() is None:
            print("open: no Chromium found (apt-get install chromium; .ci/install_chromium.sh): not measured")
            return
        blank = work / "blank.html"
        blank.write_text("<!DOCTYPE html><title>blank</title><p>blank</p>")
        dump_dom(blank)  # warm the binary and its libraries in the file cache
        opens, baseline, cpu_opens, cpu_baseline = [], [], [], []
        for _ in range(args.opens):
            began, cpu = time.perf_counter(), _children_cpu()
            dump_dom(blank)
            baseline.append(time.perf_counter() - began)
            cpu_baseline.append(_children_cpu() - cpu)
            began, cpu = time.perf_counter(), _children_cpu()
            dom = dump_dom(page)
            opens.append(time.perf_counter() - began)
            cpu_opens.append(_children_cpu() - cpu)
            assert dom.count('<article class="card step') == args.steps
        base, opened = statistics.median(baseline), statistics.median(opens)
        print(
            f"open blank page (Chromium start, baseline): median {base * 1000:7.0f} ms"
            f"  (CPU of Chromium's processes {statistics.median(cpu_baseline) * 1000:.0f} ms)"
        )
        print(
            f"open the report (load, layout, serialise):   median {opened * 1000:7.0f} ms  "
            f"min {min(opens) * 1000:7.0f} ms  (+{(opened - base) * 1000:.0f} ms over blank; CPU "
            f"{statistics.median(cpu_opens) * 1000:.0f} ms, +{(statistics.median(cpu_opens) - statistics.median(cpu_baseline)) * 1000:.0f} ms)"
            f"   target < 3 s: {'met' if opened < 3 else 'NOT met'}"
        )
        painted, blank_painted = [], []
        for _ in range(args.opens):
            began = time.perf_counter()
            screenshot(blank, work / "blank.png")
            blank_painted.append(time.perf_counter() - began)
            began = time.perf_counter()
            screenshot(page, work / "page.png")
            painted.append(time.perf_counter() - began)
        base, shown = statistics.median(blank_painted), statistics.median(painted)
        print(
            f"open and paint the first screen (--screenshot): median {shown * 1000:7.0f} ms, blank page "
            f"{base * 1000:.0f} ms (+{(shown - base) * 1000:.0f} ms)"
        )


if __name__ == "__main__":
    main()
