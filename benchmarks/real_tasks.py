"""Real models on small tool tasks: this project against Qwen-Agent and smolagents, side by side.

Each task of `_real_tasks_list.py` (arithmetic that needs code, string processing, a file written and read
back, a two-step task, dates) runs once per framework on the same real GGUF, with the same sampling and a
fixed seed. Per task: solved (the checker accepts the answer AND a tool call actually ran), tool calls, turns
(model calls), tokens (prompt + completion, summed over the model calls, as the backend or server reported
them) and seconds.

Frameworks:
* `ours`: `Agent` + `LlamaCppModel` in-process, the model's own chat format (`chat_format="auto"`), its
  calls constrained by grammar once they start; the `python` tool of `tools.code` in a Docker sandbox
  (`--ours-tool local`: the same local-subprocess tool the peers get).
* `ours-server`: `Agent` + `OpenAICompatModel` in completions mode against the same llama-cpp-python server
  the peers use, rendering the GGUF's own template, calls constrained with the server's `grammar` field.
* `qwen-agent`: Qwen-Agent 0.0.34, `FnCallAgent` with the nous function-calling prompt.
* `smolagents`: smolagents 1.26, `ToolCallingAgent` with `OpenAIServerModel`.
The peers run in their own virtual environment (`--peers-python`), through `_real_tasks_peers.py`, against
llama-cpp-python's server on 127.0.0.1, started as `python -m agent.models.llama_server` (its own entry point
crashes on AMX CPUs), with the GGUF's own template unless `--server-chat-format`. Their `python` tool runs
code in a local subprocess with a timeout: they have no sandbox of ours.

One model process at a time: the in-process model is closed before the server starts, and the server is
stopped before the next model. Rows are appended to `--results` (JSON lines) as they finish, so a partial run
still prints (`--table-only FILE`).

Run: python benchmarks/real_tasks.py [--model 0.5b] [--model 1.5b] [--framework ours ...] [--task ID ...]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# This checkout's code, not whichever one is installed: the table names this checkout's commit. (Run as a
# script, only benchmarks/ is on the path, and `import agent` found the editable install's checkout.)
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _real_tasks_list import TASKS, Task

REPO = Path(__file__).resolve().parent.parent
MODELS_DIR = Path(os.environ.get("QWQ_AGENT_TEST_MODELS", Path.home() / ".cache/qwq-agent/test-models"))
MODEL_FILES = {
    "1.5b": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    "0.5b": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
}
FRAMEWORKS = ("ours", "ours-server", "qwen-agent", "smolagents")
SERVER_FRAMEWORKS = ("ours-server", "qwen-agent", "smolagents")
PEERS = ("qwen-agent", "smolagents")
ROW_MARK = "@@row "  # as in _real_tasks_peers.py (not imported: that module is the peers' venv's)
PEERS_SCRIPT = Path(__file__).resolve().parent / "_real_tasks_peers.py"
Row = dict[str, Any]


# ---------------------------------------------------------------- ours


def _ours_local_tool() -> tuple[Any, Any]:
    """The peers' tool (local subprocess), as one of our tools: for a like-for-like tool comparison."""
    from _real_tasks_peers import CODE_DESCRIPTION, TOOL_DESCRIPTION, LocalPython

    from tools import Tool

    runner = LocalPython()
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "description": CODE_DESCRIPTION}},
        "required": ["code"],
    }
    return Tool.from_schema("python", TOOL_DESCRIPTION, schema, runner.run), None


async def _ours_sandbox_tool() -> tuple[Any, Any]:
    from sandboxes import DockerSandbox
    from tools.code import code_tools

    sandbox = DockerSandbox()
    await sandbox.astart()
    (python,) = [t for t in code_tools(sandbox, timeout=30) if t.name == "python"]
    return python, sandbox


async def _run_ours_task(model: Any, task: Task, args: argparse.Namespace, framework: str) -> Row:
    from agent import Agent
    from agent.messages import ToolMessage

    python, sandbox = _ours_local_tool() if args.ours_tool == "local" else await _ours_sandbox_tool()
    try:
        # The run's own wall-clock budget (not asyncio.wait_for): it stops the generation thread cleanly, so the
        # next task never shares the llama.cpp context with a still-running one.
        agent = Agent(
            model=model,
            tools=[python],
            max_steps=args.max_turns,
            max_tokens_per_step=args.max_tokens,
            timeout=args.task_timeout,
            transcript_dir=args.transcripts,
        )
        start = time.perf_counter()
        result = await agent.run(task.prompt)
        seconds = time.perf_counter() - start
    finally:
        if sandbox is not None:
            await sandbox.aclose()
    errors = sum(1 for m in result.messages if isinstance(m, ToolMessage) and m.is_error)
    row = _row(
        framework,
        task,
        result.answer,
        result.tool_calls,
        errors,
        result.steps,
        result.usage.prompt_tokens,
        result.usage.completion_tokens,
        seconds,
        "" if result.error is None else f"{type(result.error).__name__}: {result.error}",
    )
    row["stop_reason"] = str(result.stop_reason)
    return row


def _sampling(args: argparse.Namespace) -> Any:
    from agent.models import SamplingConfig

    return SamplingConfig(temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, min_p=0.0)


def run_ours_inprocess(
    path: Path, tasks: Sequence[Task], args: argparse.Namespace, emit: Callable[[Row], None]
) -> None:
    from agent.models import LlamaCppModel

    loader = LlamaCppModel(path, n_ctx=args.n_ctx, n_threads=args.threads, n_gpu_layers=0, seed=args.seed)
    loader.load()
    try:
        for task in tasks:
            # A fresh wrapper per task on the loaded weights: each task starts from the same seed.
            model = LlamaCppModel(
                llama=loader.llama,
                n_ctx=args.n_ctx,
                seed=args.seed,
                max_tokens=args.max_tokens,
                sampling=_sampling(args),
            )
            emit(asyncio.run(_run_ours_task(model, task, args, "ours")))
    finally:
        loader.close()


def run_ours_server(
    path: Path, server: str, tasks: Sequence[Task], args: argparse.Namespace, emit: Callable[[Row], None]
) -> None:
    from _real_tasks_peers import Counters, start_proxy
    from llama_cpp import Llama

    from agent.models import OpenAICompatModel

    vocab = Llama(str(path), vocab_only=True, verbose=False)
    template = vocab.metadata.get("tokenizer.chat_template")
    del vocab
    # llama-cpp-python's server sends no usage when streaming: count through the peers' proxy, like theirs.
    counters = Counters()
    proxy = start_proxy(server, counters)
    base_url = f"http://127.0.0.1:{proxy.server_address[1]}/v1"
    for task in tasks:
        model = OpenAICompatModel(
            base_url=base_url,
            mode="completions",
            chat_format="auto",
            chat_template=template,
            constrain="grammar",
            seed=args.seed,
            max_tokens=args.max_tokens,
            sampling=_sampling(args),
            read_timeout=args.task_timeout,
        )
        before = counters.snapshot()
        row = asyncio.run(_run_ours_task(model, task, args, "ours-server"))
        _, prompt, completion = (a - b for a, b in zip(counters.snapshot(), before, strict=True))
        row.update(prompt_tokens=prompt, completion_tokens=completion)
        emit(row)
    proxy.shutdown()


def _row(
    framework: str,
    task: Task,
    answer: str,
    calls: int,
    errors: int,
    turns: int,
    prompt: int,
    completion: int,
    seconds: float,
    error: str,
) -> Row:
    correct = task.checker(answer)
    return {
        "framework": framework,
        "task": task.id,
        "correct": correct,
        "solved": correct and calls > 0,
        "tool_calls": calls,
        "tool_errors": errors,
        "turns": turns,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "seconds": round(seconds, 1),
        "answer": answer[-300:],
        "error": error,
    }


# ---------------------------------------------------------------- the server and the peers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(path: Path, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    # llama_cpp.server itself crashes on AMX CPUs with quantized models: this entry point loads them as
    # LlamaCppModel does (this checkout's, through PYTHONPATH), and is otherwise the same server
    command = ["nice", "-n", "10", sys.executable, "-m", "agent.models.llama_server", "--model", str(path)]
    command += ["--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(args.n_ctx)]
    command += [
        "--n_threads",
        str(args.threads),
        "--n_threads_batch",
        str(args.threads),
        "--n_gpu_layers",
        "0",
    ]
    if args.server_chat_format:
        command += ["--chat_format", args.server_chat_format]
    log = open(args.server_log, "ab")  # noqa: SIM115 - the server writes into it until it is stopped
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]  # no empty entry: that is the cwd
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {process.returncode}; see {args.server_log}")
        try:
            with urllib.request.urlopen(root + "/v1/models", timeout=5):
                return process, root
        except OSError:
            time.sleep(1)
    process.kill()
    raise RuntimeError(f"llama_cpp.server did not answer within 300 s; see {args.server_log}")


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_peer(
    peer: str, server: str, tasks: Sequence[Task], args: argparse.Namespace, emit: Callable[[Row], None]
) -> None:
    command = [
        "nice",
        "-n",
        "10",
        args.peers_python,
        str(PEERS_SCRIPT),
        "--framework",
        peer,
        "--server",
        server,
    ]
    command += ["--seed", str(args.seed), "--temperature", str(args.temperature), "--top-p", str(args.top_p)]
    command += [
        "--top-k",
        str(args.top_k),
        "--max-tokens",
        str(args.max_tokens),
        "--max-turns",
        str(args.max_turns),
    ]
    for task in tasks:
        command += ["--task", task.id]
    with open(args.server_log, "ab") as log:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith(ROW_MARK):
                emit(json.loads(line.removeprefix(ROW_MARK)))
            else:  # the peer's own log goes with the server's
                log.write(line.encode())
        process.wait()


# ---------------------------------------------------------------- the table


def _cell(row: Row | None) -> str:
    if row is None:
        return f"{'-':>3} {'':>5} {'':>5} {'':>7} {'':>6}"
    ok = "yes" if row["solved"] else ("ans" if row["correct"] else "no")
    tokens = row["prompt_tokens"] + row["completion_tokens"]
    return f"{ok:>3} {row['tool_calls']:>5} {row['turns']:>5} {tokens:>7} {row['seconds']:>6.0f}"


def print_table(rows: Sequence[Row], out: Any = sys.stdout) -> None:
    models = list(dict.fromkeys(r["model"] for r in rows))
    for model in models:
        mine = [r for r in rows if r["model"] == model]
        frameworks = [f for f in FRAMEWORKS if any(r["framework"] == f for r in mine)]
        tasks = [t.id for t in TASKS if any(r["task"] == t.id for r in mine)]
        last = {(r["framework"], r["task"]): r for r in mine}
        width = 30
        print(
            f"\nmodel {model}   (ok: yes = solved, ans = right answer but no tool ran, no = wrong)", file=out
        )
        print(f"{'task':<15}" + "".join(f"| {f:<{width - 2}}" for f in frameworks), file=out)
        print(
            f"{'':<15}" + "".join(f"| {'ok calls turns  tokens   secs':<{width - 2}}" for _ in frameworks),
            file=out,
        )
        print("-" * (15 + width * len(frameworks)), file=out)
        for task in tasks:
            print(
                f"{task:<15}" + "".join(f"| {_cell(last.get((f, task))):<{width - 2}}" for f in frameworks),
                file=out,
            )
        print("-" * (15 + width * len(frameworks)), file=out)
        totals = []
        for f in frameworks:
            done = [last[(f, t)] for t in tasks if (f, t) in last]
            solved = sum(r["solved"] for r in done)
            calls = sum(r["tool_calls"] for r in done)
            turns = sum(r["turns"] for r in done)
            tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in done)
            secs = sum(r["seconds"] for r in done)
            totals.append(f"{solved:>2}/{len(done):<2}{calls:>4} {turns:>5} {tokens:>7} {secs:>6.0f}")
        print(f"{'total':<15}" + "".join(f"| {c:<{width - 2}}" for c in totals), file=out)
        split = []
        for f in frameworks:
            done = [last[(f, t)] for t in tasks if (f, t) in last]
            p = sum(r["prompt_tokens"] for r in done)
            c = sum(r["completion_tokens"] for r in done)
            split.append(f"prompt {p}, completion {c}")
        print(f"{'tokens':<15}" + "".join(f"| {s:<{width - 2}}" for s in split), file=out)


# ---------------------------------------------------------------- main


def _git_commit() -> str:
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--model", action="append", choices=sorted(MODEL_FILES), help="default: 1.5b and 0.5b"
    )
    parser.add_argument(
        "--framework", action="append", choices=FRAMEWORKS, help="default: ours, qwen-agent, smolagents"
    )
    parser.add_argument("--task", action="append", help="task id (repeatable); default: all")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--by-framework", action="store_true", help="all tasks per framework (one load each)")
    parser.add_argument("--temperature", type=float, default=0.7, help="Qwen2.5-Coder's recommended 0.7")
    parser.add_argument("--top-p", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=320, help="per model call")
    parser.add_argument("--max-turns", type=int, default=5, help="model calls per task")
    parser.add_argument("--task-timeout", type=float, default=600.0)
    parser.add_argument("--n-ctx", type=int, default=8192)
    parser.add_argument(
        "--threads", type=int, default=1, help="1: two threads on a shared 2-core machine crawl"
    )
    parser.add_argument("--ours-tool", choices=("sandbox", "local"), default="sandbox")
    parser.add_argument(
        "--server-chat-format", default=None, help="llama_cpp.server --chat_format; default: the GGUF's"
    )
    parser.add_argument("--peers-python", default="/work/venvs/peers/bin/python")
    parser.add_argument("--results", default="real_tasks.jsonl", help="JSON lines, appended")
    parser.add_argument("--server-log", default="real_tasks_server.log")
    parser.add_argument("--transcripts", metavar="DIR", help="ours: write each run's JSONL transcript here")
    parser.add_argument("--table-only", metavar="FILE", help="print the table of a results file and exit")
    return parser.parse_args()


def main() -> None:
    args = _parse_args()
    if args.table_only:
        saved = [json.loads(line) for line in Path(args.table_only).read_text().splitlines() if line.strip()]
        print_table(saved)
        return
    models = args.model or ["1.5b", "0.5b"]
    frameworks = args.framework or ["ours", "qwen-agent", "smolagents"]
    tasks = [t for t in TASKS if not args.task or t.id in args.task]
    commit = _git_commit()
    print(
        f"commit {commit}; seed {args.seed}; temperature {args.temperature}, top-p {args.top_p}, top-k {args.top_k};"
    )
    print(
        f"per call <= {args.max_tokens} tokens, <= {args.max_turns} model calls per task; n_ctx {args.n_ctx}, {args.threads} threads"
    )
    print(
        f"ours' tool: {'the python tool of tools.code in a Docker sandbox' if args.ours_tool == 'sandbox' else 'local subprocess (as the peers)'}"
    )
    print("peers' tool: python in a local subprocess with a 30 s timeout (they have no sandbox of ours)")
    print(
        f"server: llama_cpp.server, chat format {args.server_chat_format or 'the GGUF template'}; tokens counted from its usage"
    )
    rows: list[Row] = []
    with open(args.results, "a", encoding="utf-8") as sink:

        def emit(row: Row, name: str) -> None:
            row = {"model": f"qwen2.5-coder-{name}", "commit": commit, "seed": args.seed, **row}
            rows.append(row)
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            print(
                f"  {row['model']} {row['framework']:<12} {row['task']:<15} {_cell(row)}  {row['error']}",
                flush=True,
            )

        # Task by task (every framework and model on task 1, then on task 2, ...) unless --by-framework: a run
        # cut short still compares the frameworks on the same tasks. The model is reloaded per batch.
        if args.by_framework:
            plan = [(name, list(tasks)) for name in models]
        else:
            plan = [(name, [task]) for task in tasks for name in models]
        for name, batch in plan:
            run_batch(
                MODELS_DIR / MODEL_FILES[name], batch, frameworks, args, functools.partial(emit, name=name)
            )
    print_table(rows)


def run_batch(
    path: Path,
    tasks: Sequence[Task],
    frameworks: Sequence[str],
    args: argparse.Namespace,
    emit: Callable[[Row], None],
) -> None:
    """The chosen frameworks on `tasks`; one model process at a time (ours in-process, then the server)."""
    if "ours" in frameworks:
        run_ours_inprocess(path, tasks, args, emit)
    if any(f in frameworks for f in SERVER_FRAMEWORKS):
        process, server = start_server(path, args)
        try:
            if "ours-server" in frameworks:
                run_ours_server(path, server, tasks, args, emit)
            for peer in PEERS:
                if peer in frameworks:
                    run_peer(peer, server, tasks, args, emit)
        finally:
            stop_server(process)


if __name__ == "__main__":
    main()
