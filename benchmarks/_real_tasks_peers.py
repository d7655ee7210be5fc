"""Peer runner of `benchmarks/real_tasks.py`: the same tasks through Qwen-Agent and smolagents.

Runs ONLY in the peers' own virtual environment (never a dependency of this project):

    python -m venv /work/venvs/peers
    /work/venvs/peers/bin/pip install qwen-agent==0.0.34 'smolagents==1.26.*' openai numpy soundfile python-dateutil
    /work/venvs/peers/bin/python benchmarks/_real_tasks_peers.py --framework smolagents \
        --server http://127.0.0.1:8765 --seed 1 [--task ID ...]

`real_tasks.py` starts llama-cpp-python's OpenAI-compatible server and invokes this file as a subprocess; it
prints one JSON object per task on stdout, after `ROW_MARK`.

Fairness notes, also printed by `real_tasks.py`:
* Tool: both peers get one tool, `python`, that runs the code in a fresh local subprocess of this venv's
  interpreter (cwd: a temporary directory kept for the whole task, so files persist between calls), with a
  timeout; the value of a trailing expression is printed, as our sandbox's `python` tool reports it. The
  peers have no sandbox of ours, so this runs on the host.
* Tokens and turns are counted by a small proxy between the peer and the server: every request is sent to
  the server without streaming (streamed requests are answered as one SSE chunk), and the server's own
  `usage` (prompt and completion tokens of each call) is summed. So all frameworks are measured alike.
* Sampling: the same temperature, top-p, top-k, seed and per-turn token cap as ours.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _real_tasks_list import TASKS, Task

TOOL_DESCRIPTION = (
    "Run Python 3 code and return what it prints (stdout and stderr); the value of a last bare expression "
    "is printed too. Each call starts a fresh interpreter; files written in the working directory persist."
)
CODE_DESCRIPTION = "The Python code to run."
TOOL_TIMEOUT_S = 30.0
MAX_OUTPUT_CHARS = 4000
ROW_MARK = "@@row "  # the peers print on stdout too; result lines carry this prefix

# Runs the code, printing the value of a trailing expression (like a notebook cell / our sandbox tool).
_RUNNER = r"""
import ast, sys
src = open(sys.argv[1], encoding="utf-8").read()
tree = ast.parse(src)
last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
if last is not None:
    tree.body.pop()
ns = {"__name__": "__main__"}
exec(compile(tree, "<code>", "exec"), ns)
if last is not None:
    value = eval(compile(ast.Expression(last.value), "<code>", "eval"), ns)
    if value is not None:
        print(repr(value))
"""


class Counters:
    """What the proxy saw: one entry per model call."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def snapshot(self) -> tuple[int, int, int]:
        with self.lock:
            return self.calls, self.prompt_tokens, self.completion_tokens


class LocalPython:
    """The peers' `python` tool: a fresh subprocess per call, in the task's working directory."""

    def __init__(self) -> None:
        self.calls = 0
        self.errors = 0
        self.workdir = Path(tempfile.mkdtemp(prefix="peer-task-"))

    def run(self, code: str) -> str:
        self.calls += 1
        script = self.workdir / ".cell.py"
        script.write_text(code, encoding="utf-8")
        try:
            done = subprocess.run(
                [sys.executable, "-I", "-c", _RUNNER, str(script)],
                cwd=self.workdir,
                capture_output=True,
                text=True,
                timeout=TOOL_TIMEOUT_S,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
        except subprocess.TimeoutExpired:
            self.errors += 1
            return f"Timed out after {TOOL_TIMEOUT_S:g} s."
        out = done.stdout + (("\n" if done.stdout else "") + done.stderr if done.stderr else "")
        if done.returncode:
            self.errors += 1
        out = out.strip() or "(no output)"
        if len(out) > MAX_OUTPUT_CHARS:
            half = MAX_OUTPUT_CHARS // 2
            out = out[:half] + "\n...\n" + out[-half:]
        return out


def _sse(completion: dict[str, Any]) -> bytes:
    """A non-streamed (chat or text) completion re-sent as one streamed chunk and [DONE]."""
    choice = completion["choices"][0]
    if "text" in choice:  # /v1/completions
        out: dict[str, Any] = {
            "index": 0,
            "text": choice["text"],
            "finish_reason": choice.get("finish_reason"),
        }
        kind = "text_completion"
    else:
        message = dict(choice.get("message") or {})
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
        if message.get("tool_calls"):
            delta["tool_calls"] = [dict(call, index=i) for i, call in enumerate(message["tool_calls"])]
        out = {"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason")}
        kind = "chat.completion.chunk"
    chunk = {
        "id": completion.get("id", "proxy"),
        "object": kind,
        "created": completion.get("created", int(time.time())),
        "model": completion.get("model", "local"),
        "choices": [out],
        "usage": completion.get("usage"),
    }
    return b"data: " + json.dumps(chunk).encode() + b"\n\ndata: [DONE]\n\n"


def start_proxy(upstream: str, counters: Counters) -> ThreadingHTTPServer:
    """Forward /v1/* to the server, without streaming, and count the server's usage of each call."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            with urllib.request.urlopen(upstream + self.path, timeout=60) as response:
                body = response.read()
            self._reply(200, "application/json", body)

        def do_POST(self) -> None:
            payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            stream = bool(payload.pop("stream", False))
            payload.pop("stream_options", None)
            request = urllib.request.Request(
                upstream + self.path,
                data=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json"},
            )
            try:
                with urllib.request.urlopen(request, timeout=1800) as response:
                    body = response.read()
            except urllib.error.HTTPError as exc:
                self._reply(exc.code, "application/json", exc.read())
                return
            completion = json.loads(body)
            usage = completion.get("usage") or {}
            with counters.lock:
                counters.calls += 1
                counters.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                counters.completion_tokens += int(usage.get("completion_tokens") or 0)
            if stream:
                self._reply(200, "text/event-stream", _sse(completion))
            else:
                self._reply(200, "application/json", body)

        def _reply(self, status: int, kind: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_qwen_agent(task: Task, base_url: str, args: argparse.Namespace, tool: LocalPython) -> str:
    os.environ["QWEN_AGENT_MAX_LLM_CALL_PER_RUN"] = str(args.max_turns)
    from qwen_agent import settings  # type: ignore[import-not-found]
    from qwen_agent.agents import FnCallAgent  # type: ignore[import-not-found]
    from qwen_agent.tools.base import TOOL_REGISTRY, BaseTool  # type: ignore[import-not-found]

    settings.MAX_LLM_CALL_PER_RUN = args.max_turns

    class PythonExec(BaseTool):  # type: ignore[misc]
        name = "python"
        description = TOOL_DESCRIPTION
        parameters = {  # noqa: RUF012 - Qwen-Agent's own class-attribute convention
            "type": "object",
            "properties": {"code": {"type": "string", "description": CODE_DESCRIPTION}},
            "required": ["code"],
        }

        def call(self, params: str | dict[str, Any], **kwargs: Any) -> str:
            parsed = self._verify_json_format_args(params)
            return tool.run(str(parsed["code"]))

    TOOL_REGISTRY["python"] = PythonExec
    llm = {
        "model": "local",
        "model_type": "oai",
        "model_server": base_url + "/v1",
        "api_key": "EMPTY",
        "generate_cfg": {
            "fncall_prompt_type": "nous",
            "temperature": args.temperature,
            "top_p": args.top_p,
            "top_k": args.top_k,
            "seed": args.seed,
            "max_tokens": args.max_tokens,
        },
    }
    bot = FnCallAgent(function_list=[PythonExec()], llm=llm)
    responses: list[Any] = []
    for batch in bot.run(messages=[{"role": "user", "content": task.prompt}]):
        responses = batch  # each yield is the whole list of new messages so far
    finals = [m for m in responses if m.get("role") == "assistant" and not m.get("function_call")]
    content = finals[-1].get("content") if finals else ""
    if isinstance(content, list):
        content = "".join(str(item.get("text", "")) for item in content)
    return str(content or "")


def run_smolagents(task: Task, base_url: str, args: argparse.Namespace, tool: LocalPython) -> str:
    from smolagents import OpenAIServerModel, Tool, ToolCallingAgent  # type: ignore[import-not-found]

    class PythonExec(Tool):  # type: ignore[misc]
        name = "python"
        description = TOOL_DESCRIPTION
        inputs = {"code": {"type": "string", "description": CODE_DESCRIPTION}}  # noqa: RUF012 - smolagents' convention
        output_type = "string"

        def forward(self, code: str) -> str:
            return tool.run(code)

    model = OpenAIServerModel(
        model_id="local",
        api_base=base_url + "/v1",
        api_key="EMPTY",
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        max_tokens=args.max_tokens,
        extra_body={"top_k": args.top_k},
        flatten_messages_as_text=True,  # llama-cpp-python's server takes string contents only
    )
    agent = ToolCallingAgent(tools=[PythonExec()], model=model, max_steps=args.max_turns, verbosity_level=1)
    return str(agent.run(task.prompt))


RUNNERS = {"qwen-agent": run_qwen_agent, "smolagents": run_smolagents}


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the real-task list through one peer framework.")
    parser.add_argument("--framework", choices=sorted(RUNNERS), required=True)
    parser.add_argument(
        "--server", required=True, help="llama-cpp-python server root, e.g. http://127.0.0.1:8765"
    )
    parser.add_argument("--task", action="append", help="task id (repeatable); default: all")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=320)
    parser.add_argument("--max-turns", type=int, default=5)
    args = parser.parse_args()
    counters = Counters()
    proxy = start_proxy(args.server.rstrip("/"), counters)
    base_url = f"http://127.0.0.1:{proxy.server_address[1]}"
    chosen = [t for t in TASKS if not args.task or t.id in args.task]
    for task in chosen:
        tool = LocalPython()
        before = counters.snapshot()
        start = time.perf_counter()
        error = ""
        try:
            answer = RUNNERS[args.framework](task, base_url, args, tool)
        except Exception as exc:  # a peer's crash is a result too
            answer = ""
            error = f"{type(exc).__name__}: {exc}"
            traceback.print_exc(file=sys.stderr)
        seconds = time.perf_counter() - start
        shutil.rmtree(tool.workdir, ignore_errors=True)
        calls, prompt, completion = (a - b for a, b in zip(counters.snapshot(), before, strict=True))
        correct = task.checker(answer)
        row = {
            "framework": args.framework,
            "task": task.id,
            "correct": correct,
            "solved": correct and tool.calls > 0,
            "tool_calls": tool.calls,
            "tool_errors": tool.errors,
            "turns": calls,
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "seconds": round(seconds, 1),
            "answer": answer[-300:],
            "error": error,
        }
        print(ROW_MARK + json.dumps(row), flush=True)
    proxy.shutdown()


if __name__ == "__main__":
    main()
