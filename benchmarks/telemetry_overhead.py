"""What tracing costs per step: the same scripted run untraced, and traced into the SDK's in-memory exporter.

A run of `--steps` steps, each one model turn with two tool calls (real, trivial tools), on a ScriptedModel:
the framework's own time is all there is. Untraced, the loop's tracing hooks are a shared null object (and
OpenTelemetry is not even imported, checked below); traced, every step makes four spans. Figures: time per
step in each mode (median of `--repeat` runs) and the difference.

Run: python benchmarks/telemetry_overhead.py [--steps 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent import Agent  # noqa: E402
from agent.models import ScriptedModel, completion_text, tool_call_text  # noqa: E402


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def outputs(steps: int) -> list[str]:
    turns = [
        completion_text(
            f"step {i}", tool_call_text("add", {"a": i, "b": 1}), tool_call_text("add", {"a": 1, "b": i})
        )
        for i in range(steps - 1)
    ]
    return [*turns, completion_text("done", content="done")]


def per_step(steps: int, repeat: int, provider: Any) -> float:
    times = []
    for _ in range(repeat):
        agent = Agent(ScriptedModel(outputs(steps)), [add], max_steps=steps, tracer_provider=provider)
        began = time.perf_counter()
        result = agent.run_sync("add things")
        times.append(time.perf_counter() - began)
        assert result.steps == steps
    return statistics.median(times) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"load average: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environment["PYTHONPATH"] = str(REPO)
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from agent import Agent; from agent.models import ScriptedModel; "
            "Agent(ScriptedModel(['x\\n</think>\\n\\nok'])).run_sync('hi'); "
            "print(any(m.startswith('opentelemetry') for m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        env=environment,
        check=True,
    )
    print(f"untraced run imported opentelemetry: {probe.stdout.strip()}")
    per_step(20, 1, None)  # warm up imports and caches
    untraced = per_step(args.steps, args.repeat, None)
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    traced = per_step(args.steps, args.repeat, provider)
    spans = len(exporter.get_finished_spans()) // args.repeat
    print(f"untraced: {untraced * 1e6:8.0f} µs per step")
    print(
        f"traced:   {traced * 1e6:8.0f} µs per step ({spans} spans per run)  "
        f"+{(traced - untraced) * 1e6:.0f} µs per step (+{(traced / untraced - 1) * 100:.0f}%)"
    )


if __name__ == "__main__":
    main()
