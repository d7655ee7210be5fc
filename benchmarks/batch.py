"""Batch throughput and the framework's own overhead, here and on Ray; recovery from a killed Ray node.

Three measurements, each printed as figures:

1. **Overhead against concurrency (local asyncio).** Runs of 3 model turns (two calls of an in-process tool,
   then an answer) against a fake OpenAI-compatible server on 127.0.0.1 (`/v1/completions`, streamed SSE),
   which answers instantly (latency 0: what the framework itself costs per turn) or after 100 ms per turn
   (a fast real server: the overhead is the wall time beyond `waves x turns x 100 ms`). Concurrency 1, 4, 16,
   64; each run writes its transcript and its result row (synced) as `qwq-agent batch` does. Only completions
   wait for the latency: other endpoints (/props, /tokenize) answer at once, as a real server does. CPU per
   turn is given for this process (all its threads) and the server's. At 64, httpx's default transport
   (httpcore's connection pool, what the model used before `KeepAliveTransport`) is measured beside ours in
   the same run, and the CPU budget of 64 runs at 100 ms per turn is set against what a turn costs here.
2. **Ray against local.** Single-turn scripted runs with no tools (nothing but the framework), one at a time
   and at the cluster's width, on a local Ray cluster (head + one more node, `agent.batch.local_cluster`)
   and here: the difference per task is what a Ray task costs (submission, a worker, the result and the
   transcript sent back).
3. **Recovery from a killed node.** Tasks of one 1 s model turn (the fake server's latency) over a head and
   a victim node; the victim's raylet is SIGKILLed while tasks run there. Figures: how long until the server
   sees the lost tasks asked again (Ray noticed and re-ran them elsewhere), and the batch's extra wall time
   against the same batch without the kill.

Run: PYTHONPATH=. python benchmarks/batch.py [--skip-ray] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# ------------------------------------------------------------------------------------- the fake model server


def _completion_text(prompt: str, tool_turns: int) -> str:
    """A tool call while fewer than `tool_turns` results are in the prompt, then an answer."""
    done = prompt.count("<tool_response>")
    if done < tool_turns:
        call = json.dumps({"name": "lookup", "arguments": {"key": f"k{done}"}})
        return f"I look it up.\n</think>\n\n<tool_call>\n{call}\n</tool_call>"
    return "I have what I need.\n</think>\n\nThe answer is 42."


def _sse(prompt: str, text: str) -> bytes:
    """The streamed completion: 16-character pieces, then the finish with usage, then [DONE]."""
    pieces = [text[i : i + 16] for i in range(0, len(text), 16)]
    events = [
        {"object": "text_completion", "choices": [{"index": 0, "text": p, "finish_reason": None}]}
        for p in pieces
    ]
    events.append(
        {
            "object": "text_completion",
            "choices": [{"index": 0, "text": "", "finish_reason": "stop"}],
            "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(pieces)},
        }
    )
    return ("".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n").encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _json_reply(status: str, data: Any) -> bytes:
    payload = json.dumps(data).encode()
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    return head.encode() + payload


def _immediate_reply(method: str, path: str) -> bytes | None:
    """The answer to anything but a completion, at once; None for a completion.

    /props, /tokenize and the like get a 404 as vLLM gives them, never after the generation latency (which
    made every batch wait for two slow /props answers before its first turn).
    """
    if method == "GET" and path.endswith("/models"):
        return _json_reply("200 OK", {"object": "list", "data": [{"id": "fake", "object": "model"}]})
    if not path.endswith("/completions"):
        return _json_reply("404 Not Found", {"error": {"message": f"no {path} here"}})
    return None


def serve(port: int, latency: float, tool_turns: int, log: str | None) -> None:
    """An OpenAI-compatible completions endpoint answering in QwQ's format, HTTP/1.1 with keep-alive (its own
    process, so its CPU is not the client's)."""
    log_file = open(log, "a", encoding="utf-8") if log is not None else None  # noqa: SIM115 - for the process's life

    async def respond(writer: asyncio.StreamWriter, method: str, path: str, body: dict[str, Any]) -> None:
        immediate = _immediate_reply(method, path)
        if immediate is not None:
            writer.write(immediate)
            return
        prompt = str(body.get("prompt", ""))
        if log_file is not None:
            marker = re.search(r"task-\d+", prompt)
            log_file.write(f"{time.time():.4f} {marker.group(0) if marker else '-'}\n")
            log_file.flush()
        if latency:
            await asyncio.sleep(latency)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            + _chunk(_sse(prompt, _completion_text(prompt, tool_turns)))
            + b"0\r\n\r\n"
        )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # requests on one kept-alive connection, until the client closes it
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                length = 0
                for line in lines[1:]:
                    if line.lower().startswith("content-length:"):
                        length = int(line.split(":", 1)[1])
                body = json.loads(await reader.readexactly(length)) if length else {}
                await respond(writer, method, path, body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception as exc:  # a bug here must show, not look like a client-side network error
            print(f"fake server: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def fake_server(latency: float, tool_turns: int = 2, log: Path | None = None) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, __file__, "--serve", str(port), str(latency), str(tool_turns)]
    if log is not None:
        command.append(str(log))
    process = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}/v1"
    _SERVER_PIDS[url] = process.pid
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the fake server did not start") from None
                time.sleep(0.1)
        yield url
    finally:
        _SERVER_PIDS.pop(url, None)
        process.terminate()
        process.wait(10)


_SERVER_PIDS: dict[str, int] = {}


def server_cpu(url: str) -> float:
    """CPU seconds (user + system) the fake server at `url` has used so far, from /proc."""
    fields = Path(f"/proc/{_SERVER_PIDS[url]}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------- 1. local overhead


async def local_batch(
    base_url: str,
    runs: int,
    concurrency: int,
    workdir: Path,
    shared_model: bool = True,
    transcripts: bool = True,
    httpcore_pool: bool = False,
) -> Batch:
    """`runs` runs at `concurrency`, writing transcripts and synced result rows: wall time, turns, CPU.

    `shared_model`: every run uses one `OpenAICompatModel` (one connection pool); without it, each run makes
    its own model, and so its own HTTP client. `httpcore_pool`: the model's client uses httpx's default
    transport (httpcore's connection pool, as before `KeepAliveTransport`), the baseline measured alongside.
    """
    import httpx

    from agent.batch import BatchTask, ResultsFile, run_batch
    from agent.loop import Agent
    from agent.models import OpenAICompatModel
    from agent.models.openai_compat import _tls_context
    from tools import tool

    @tool
    def lookup(key: str) -> str:
        """Look a key up.

        Args:
            key: what to look up
        """
        return json.dumps({"key": key, "value": len(key)})

    def new_model() -> OpenAICompatModel:
        transport = None
        if httpcore_pool:  # exactly the client options the model used before KeepAliveTransport
            transport = httpx.AsyncHTTPTransport(
                verify=_tls_context(), limits=httpx.Limits(max_connections=None, max_keepalive_connections=64)
            )
        return OpenAICompatModel(base_url, model="fake", max_tokens=256, transport=transport)

    shared = new_model() if shared_model else None

    def make_agent(task: BatchTask, tools: list[Any]) -> Agent:
        # A model keeps one HTTP client per event loop: sharing it shares the connection pool and TLS setup.
        return Agent(shared or new_model(), [lookup], max_steps=6)

    tasks = [{"id": f"task-{i}", "task": f"Look up task {i}.", "tools": []} for i in range(runs)]
    results = ResultsFile(workdir / f"results-{concurrency}-{time.monotonic_ns()}.jsonl")
    results.open(resume=False)
    turns = 0
    server_began, cpu_began = server_cpu(base_url), time.process_time()
    began = time.perf_counter()
    runs_dir = workdir / "runs" if transcripts else None
    async for result in run_batch(tasks, make_agent, concurrency=concurrency, transcript_dir=runs_dir):
        if result.error:
            raise RuntimeError(f"{result.id}: {result.error}")
        turns += result.steps
        results.append(result.to_row())
    wall = time.perf_counter() - began
    client, server = time.process_time() - cpu_began, server_cpu(base_url) - server_began
    results.close()
    if shared is not None:
        await shared.aclose()
    return Batch(wall, turns, client, server)


@dataclass(frozen=True)
class Batch:
    """One local batch: wall seconds, model turns, and CPU seconds of this process (all its threads) and of
    the fake server over the batch."""

    wall: float
    turns: int
    client_cpu: float
    server_cpu: float

    @property
    def client_ms(self) -> float:
        return 1000 * self.client_cpu / self.turns

    @property
    def server_ms(self) -> float:
        return 1000 * self.server_cpu / self.turns


def measure_local(quick: bool) -> None:
    print("== 1. framework overhead, local asyncio (3-turn runs, fake server on 127.0.0.1)")
    levels = (1, 4, 16, 64)
    latency = 0.1
    with tempfile.TemporaryDirectory(prefix="qwq-bench-") as tmp:
        workdir = Path(tmp)
        with fake_server(0.0) as url:
            asyncio.run(local_batch(url, 8, 4, workdir))  # warm-up: imports, first connections
            b = asyncio.run(local_batch(url, 8, 1, workdir, shared_model=False))
            print(
                "a model per run (its own HTTP client, TLS context and CA bundle): "
                f"{1000 * b.wall / b.turns:.1f} ms/turn at concurrency 1"
            )
            print(
                "one model shared by all runs, server instant (CPU: ms per turn of this process / of the server):"
            )
            print(
                f"{'concurrency':>11} {'runs':>5} {'runs/s':>8} {'turns/s':>8} {'ms/turn':>8} {'client CPU':>11} {'server CPU':>11}"
            )
            for c in levels:
                runs = max(16, 2 * c) if quick else max(32, 4 * c)
                b = asyncio.run(local_batch(url, runs, c, workdir))
                print(
                    f"{c:>11} {runs:>5} {runs / b.wall:>8.1f} {b.turns / b.wall:>8.1f} "
                    f"{1000 * b.wall / b.turns:>8.2f} {b.client_ms:>11.2f} {b.server_ms:>11.2f}"
                )
            runs = 128 if quick else 256
            b = asyncio.run(local_batch(url, runs, 64, workdir, transcripts=False))
            print(
                f"{64:>11} {runs:>5} {runs / b.wall:>8.1f} {b.turns / b.wall:>8.1f} {1000 * b.wall / b.turns:>8.2f} "
                f"{b.client_ms:>11.2f} {b.server_ms:>11.2f}   <- without transcripts"
            )
            instant = {
                pool: asyncio.run(local_batch(url, 128, 64, workdir, httpcore_pool=pool))
                for pool in (True, False)
            }
        with fake_server(latency) as url:
            print(f"server answering after {latency * 1000:.0f} ms per turn (one shared model):")
            print(
                f"{'concurrency':>11} {'runs':>5} {'wall s':>7} {'ideal s':>8} {'overhead':>9} {'runs/s':>7} {'client CPU':>11}"
            )

            def row(label: str, runs: int, c: int, b: Batch, note: str = "") -> None:
                ideal = math.ceil(runs / c) * (b.turns / runs) * latency
                print(
                    f"{label:>11} {runs:>5} {b.wall:>7.2f} {ideal:>8.2f} {100 * (b.wall / ideal - 1):>8.1f}% "
                    f"{runs / b.wall:>7.1f} {b.client_ms:>11.2f}{note}"
                )

            for c in levels:
                runs = max(8, 2 * c) if quick else max(16, 4 * c)
                row(str(c), runs, c, asyncio.run(local_batch(url, runs, c, workdir)))
            runs = 128 if quick else 256
            row(
                "64",
                runs,
                64,
                asyncio.run(local_batch(url, runs, 64, workdir, transcripts=False)),
                "   <- without transcripts",
            )
            slow = {
                pool: asyncio.run(local_batch(url, 128, 64, workdir, httpcore_pool=pool))
                for pool in (True, False)
            }
        print(
            "the HTTP pool under the model at 64 runs in flight, 128 runs, measured just above in this run:"
        )
        print(
            f"{'pool':>28} {'instant: ms/turn':>17} {'client CPU':>11} {'100 ms: wall s':>15} {'client CPU':>11}"
        )
        for pool, name in ((True, "httpx default (httpcore)"), (False, "KeepAliveTransport")):
            a, b = instant[pool], slow[pool]
            print(
                f"{name:>28} {1000 * a.wall / a.turns:>17.2f} {a.client_ms:>11.2f} {b.wall:>15.2f} {b.client_ms:>11.2f}"
            )
        print(
            f"{'ratio httpcore / ours':>28} {instant[True].wall / instant[False].wall:>17.2f} "
            f"{instant[True].client_ms / instant[False].client_ms:>11.2f} {slow[True].wall / slow[False].wall:>15.2f} "
            f"{slow[True].client_ms / slow[False].client_ms:>11.2f}"
        )
        budget(instant[False], latency)


def budget(b: Batch, latency: float) -> None:
    """What 64 runs at `latency` per turn need, against the CPU a turn costs here."""
    need = 64 / latency
    per_turn = b.client_ms + b.server_ms
    print(
        f"64 runs at {latency * 1000:.0f} ms per turn need {need:.0f} turns/s: {1000 / need:.2f} ms of CPU per turn "
        f"at most, on one core, for the client's event loop alone; measured here {b.client_ms:.2f} ms (client) "
        f"+ {b.server_ms:.2f} ms (fake server) = {per_turn:.2f} ms per turn, so one client process tops out near "
        f"{1000 / b.client_ms:.0f} turns/s and both together near {2000 / per_turn:.0f} turns/s on "
        f"{os.cpu_count()} cores (load average {os.getloadavg()[0]:.1f} now)"
    )


# ------------------------------------------------------------------------------------- 2. Ray vs local


def scripted_tasks(count: int, prefix: str) -> list[dict[str, Any]]:
    from agent.models import completion_text

    answer = completion_text("Nothing to look up.", content="42")
    return [
        {
            "id": f"{prefix}-{i}",
            "task": "What is six times seven?",
            "tools": [],
            "metadata": {"script": [answer]},
        }
        for i in range(count)
    ]


async def timed_batch(
    tasks: list[dict[str, Any]], concurrency: int, address: str | None, workdir: Path, factory: Any = None
) -> tuple[float, list[Any]]:
    from agent.batch import run_batch
    from agent.batch.factory import AgentFactory

    began = time.perf_counter()
    results = [
        r
        async for r in run_batch(
            tasks,
            factory or AgentFactory(),
            concurrency=concurrency,
            ray_address=address,
            transcript_dir=workdir / "runs",
        )
    ]
    wall = time.perf_counter() - began
    errors = [r for r in results if r.error]
    if errors:
        raise RuntimeError(f"{errors[0].id}: {errors[0].error}")
    return wall, results


def measure_ray(quick: bool) -> None:
    from agent.batch.local_cluster import LocalRayCluster

    print("\n== 2. Ray against local asyncio (single-turn scripted runs, no tools)")
    n = 20 if quick else 40
    pythonpath = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p
    )
    with (
        tempfile.TemporaryDirectory(prefix="qwq-bench-") as tmp,
        LocalRayCluster(env={"PYTHONPATH": pythonpath}) as cluster,
    ):
        workdir = Path(tmp)
        started = time.perf_counter()
        address = cluster.start_head(num_cpus=1)
        cluster.add_node(num_cpus=2)
        print(f"cluster of 2 nodes (3 CPUs) started in {time.perf_counter() - started:.1f} s")
        import ray

        began = time.perf_counter()
        asyncio.run(
            timed_batch(scripted_tasks(6, "warm"), 3, address, workdir)
        )  # workers started, code imported
        print(f"first batch on the cluster (connect, start workers): {time.perf_counter() - began:.1f} s")
        # Repeated and alternated, medians kept: worker processes come and go (Ray ends idle ones, starts
        # new ones for a wider batch) and other processes on this machine take the CPUs at times.
        repeats = 3 if quick else 5
        print(
            f"{'concurrency':>11} {'local ms/task':>14} {'Ray ms/task':>12} {'Ray overhead ms/task':>21}"
            f"  (medians of {repeats})"
        )
        for width in (1, 3):
            local, remote = [], []
            for _ in range(repeats):
                local.append(asyncio.run(timed_batch(scripted_tasks(n, "l"), width, None, workdir))[0] / n)
                remote.append(
                    asyncio.run(timed_batch(scripted_tasks(n, "r"), width, address, workdir))[0] / n
                )
            here, there = statistics.median(local), statistics.median(remote)
            print(f"{width:>11} {1000 * here:>14.1f} {1000 * there:>12.1f} {1000 * (there - here):>21.1f}")
        from agent.batch.ray_backend import sweep_cluster

        began = time.perf_counter()
        sweep_cluster("benchmark")
        print(
            f"end-of-batch sweep of every node (once per batch, in the figures above): {time.perf_counter() - began:.2f} s"
        )
        ray.shutdown()


# ------------------------------------------------------------------------------------- 3. recovery


async def batch_with_kill(
    tasks: list[dict[str, Any]],
    factory: Any,
    address: str,
    kill: tuple[Any, Any] | None,
    marks: dict[str, float],
) -> float:
    """Wall time of a Ray batch. With `kill` (cluster, node): that node's raylet is SIGKILLed after the third
    result (tasks are then mid-turn there), and `marks` gets when, and when Ray declared the node dead."""
    import ray

    from agent.batch import run_batch

    cluster, node = kill if kill is not None else (None, None)
    node_id = None
    if node is not None:
        node_id = next(n["NodeID"] for n in ray.nodes() if n["NodeManagerPort"] == node.node_manager_port)

    async def declared_dead() -> None:
        while True:  # polled: the GCS's node table is the only place that says it
            if not any(n["NodeID"] == node_id and n["Alive"] for n in ray.nodes()):
                marks["declared_dead"] = time.time()
                return
            await asyncio.sleep(0.1)

    watcher: asyncio.Task[None] | None = None
    began = time.perf_counter()
    count = 0
    async for result in run_batch(tasks, factory, concurrency=3, ray_address=address, max_retries=3):
        if result.error:
            raise RuntimeError(f"{result.id}: {result.error}")
        count += 1
        if cluster is not None and count == 3:
            await asyncio.sleep(0.3)
            marks["killed"] = time.time()
            cluster.kill_raylet(node)
            watcher = asyncio.create_task(declared_dead())
    if watcher is not None:
        await watcher
    return time.perf_counter() - began


def recovery_run(n: int, health: dict[str, str], label: str) -> None:
    """One cluster (head 1 CPU + victim 2 CPUs), the batch without and then with the victim's kill."""
    from agent.batch.factory import AgentFactory
    from agent.batch.local_cluster import LocalRayCluster

    pythonpath = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p
    )
    with tempfile.TemporaryDirectory(prefix="qwq-bench-") as tmp:
        workdir = Path(tmp)
        log = workdir / "requests.log"
        with fake_server(1.0, tool_turns=0, log=log) as url:
            factory = AgentFactory(options={"base_url": url, "model_name": "fake", "max_tokens": 64})
            tasks = [{"id": f"task-{i}", "task": f"This is task-{i}.", "tools": []} for i in range(n)]
            walls = {}
            marks: dict[str, float] = {}
            with LocalRayCluster(env={"PYTHONPATH": pythonpath}, system_env=health) as cluster:
                address = cluster.start_head(num_cpus=1)
                victim = cluster.add_node(num_cpus=2)
                asyncio.run(timed_batch(scripted_tasks(6, "warm"), 3, address, workdir))
                for kill in (False, True):
                    log.write_text("")
                    walls[kill] = asyncio.run(
                        batch_with_kill(tasks, factory, address, (cluster, victim) if kill else None, marks)
                    )
        seen: dict[str, list[float]] = {}
        for line in log.read_text().splitlines():
            stamp, marker = line.split()
            seen.setdefault(marker, []).append(float(stamp))
    killed = marks["killed"]
    again = sorted(times[1] - killed for times in seen.values() if len(times) > 1)
    lost = (
        f"{len(again)} task(s) lost mid-turn, asked again {again[0]:.1f}-{again[-1]:.1f} s after the kill"
        if again
        else "no task was mid-turn there at the kill"
    )
    print(
        f"{label}: node declared dead {marks['declared_dead'] - killed:.1f} s after the kill; {lost}; "
        f"batch of {n}: {walls[False]:.1f} s without the kill, {walls[True]:.1f} s with it"
    )


def measure_recovery(quick: bool) -> None:
    print("\n== 3. recovery from a killed node (tasks of one 1 s model turn; head 1 CPU + victim 2 CPUs)")
    n = 18 if quick else 30
    recovery_run(n, {}, "Ray's default health checks")
    fast = {
        "RAY_health_check_period_ms": "1000",
        "RAY_health_check_timeout_ms": "1000",
        "RAY_health_check_failure_threshold": "3",
    }
    recovery_run(n, fast, "health checks every 1 s, 3 misses")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--skip-ray", action="store_true", help="only the local measurement")
    parser.add_argument("--only", choices=("local", "ray", "recovery"), help="one measurement")
    parser.add_argument("--quick", action="store_true", help="fewer runs (rougher figures)")
    args = parser.parse_args()
    if args.serve:
        port, latency, turns, *log = args.serve
        serve(int(port), float(latency), int(turns), log[0] if log else None)
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    load = os.getloadavg()[0]
    print(f"machine: {os.cpu_count()} CPUs, load average {load:.1f} at start")
    if args.only in (None, "local"):
        measure_local(args.quick)
    if not args.skip_ray and args.only in (None, "ray"):
        measure_ray(args.quick)
    if not args.skip_ray and args.only in (None, "recovery"):
        measure_recovery(args.quick)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
