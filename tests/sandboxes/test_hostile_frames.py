"""Forged runner frames and lone surrogates from inside a real container, under runc and runsc.

The real runner makes itself non-dumpable, so the code inside cannot reach its descriptors; a broken or
tampered-with runner could still send anything. These tests run an unguarded runner (`unguarded_runner`), whose
protocol output the model's code can write to (`/proc/1/fd/4`, the runner's copy of the container's stdout,
which Docker attaches), to play that runner. Each class of malformed frame must end in an
`ExecResult` (or, for file operations, a `SandboxFileError`) saying the sandbox was replaced, never in an
exception from the decoder; the next call must work. Text with lone surrogates must come out as U+FFFD.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from sandboxes import DockerSandbox, ExecResult, SandboxFileError
from sandboxes import docker_sandbox as docker_sandbox_module
from tools.code import format_exec_result

pytestmark = [pytest.mark.docker, pytest.mark.timeout(180)]

D800, DC80 = chr(0xD800), chr(0xDC80)
# The runner's private copy of the container's stdout (fds 3 and 4 are the first it makes).
PROTOCOL_OUT = "/proc/1/fd/4"


@pytest.fixture
def sb(unguarded_sb_on_runtime: DockerSandbox) -> DockerSandbox:
    return unguarded_sb_on_runtime


def _next_request_id() -> int:
    """The id the sandbox's next request will carry (this takes one: the next request gets the one after)."""
    return next(docker_sandbox_module._ids) + 1


def _answer(request_id: int, **changes: Any) -> dict[str, Any]:
    """A well-formed answer to a python call, as the runner would write it, with `changes` applied."""
    answer: dict[str, Any] = {
        "id": request_id,
        "ok": True,
        "stdout": "forged\n",
        "stderr": "",
        "stdout_bytes": 7,
        "stderr_bytes": 0,
        "truncated": False,
        "value": None,
        "error": None,
        "traceback": None,
        "timed_out": False,
        "cancelled": False,
        "state_lost": False,
        "lost_before": False,
        "crashed": False,
        "exit_code": None,
        "signal": None,
        "oom_killed": False,
        "duration_s": 0.01,
    }
    answer.update(changes)
    return answer


def _writer(body_expression: str) -> str:
    """Python code that writes the bytes `body_expression` evaluates to as one frame to the host."""
    return (
        "import os, struct\n"
        f"body = {body_expression}\n"
        f"fd = os.open({PROTOCOL_OUT!r}, os.O_WRONLY)\n"
        "data = memoryview(struct.pack('>I', len(body)) + body)\n"
        "while data:\n"
        "    data = data[os.write(fd, data):]\n"
        "os.close(fd)\n"
    )


def _json_body(answer: dict[str, Any]) -> str:
    return repr(json.dumps(answer).encode())


def _assert_replaced(r: ExecResult) -> None:
    assert not r.ok, r
    assert r.lost_cause == "protocol", r
    assert r.sandbox_replaced
    assert r.state_lost
    assert r.error is not None
    assert "not its protocol" in r.error
    _assert_encodes(r)


def _assert_encodes(r: ExecResult) -> None:
    r.model_dump_json().encode("utf-8")
    json.dumps(r.model_dump(), ensure_ascii=False).encode("utf-8")
    format_exec_result(r, kind="python", timeout=20, memory="256m").content.encode("utf-8")
    format_exec_result(r, kind="shell", timeout=20, memory="256m").content.encode("utf-8")


# One case per class: each is a frame that claims to answer the call that writes it.
FORGED: dict[str, Callable[[int], str]] = {
    "duration-abc": lambda rid: _json_body(_answer(rid, duration_s="abc")),
    "duration-list": lambda rid: _json_body(_answer(rid, duration_s=[1])),
    "duration-400-digits": lambda rid: _json_body(_answer(rid, duration_s=10**400)),
    "count-400-digits": lambda rid: _json_body(_answer(rid, stdout_bytes=10**400)),
    "exit-code-string": lambda rid: _json_body(_answer(rid, crashed=True, exit_code="3")),
    "signal-out-of-range": lambda rid: _json_body(_answer(rid, crashed=True, signal=10**6)),
    "flag-not-bool": lambda rid: _json_body(_answer(rid, timed_out="yes")),
    "stdout-number": lambda rid: _json_body(_answer(rid, stdout=12)),
    "value-object": lambda rid: _json_body(_answer(rid, value={"a": 1})),
    "infinity": lambda rid: _json_body(_answer(rid)).replace("0.01", "1e999"),
    "nan": lambda rid: _json_body(_answer(rid)).replace("0.01", "NaN"),
    "nested-200k": lambda rid: "b'[' * 200_000 + b']' * 200_000",
    "nested-200k-in-a-field": lambda rid: f'b\'{{"id": {rid}, "ok": true, "stdout": \' + b\'[\' * 200_000',
    "huge-string": lambda rid: _json_body(_answer(rid, stdout="x" * 2_000_000)),
    "invalid-utf8": lambda rid: _json_body(_answer(rid)) + ".replace(b'forged', b'\\xff\\xfe\\xfd')",
    "extra-field": lambda rid: _json_body(_answer(rid, extra=1)),
    "missing-field": lambda rid: _json_body({k: v for k, v in _answer(rid).items() if k != "stderr"}),
    "not-an-object": lambda rid: repr(json.dumps([rid, True]).encode()),
    "no-id": lambda rid: _json_body({k: v for k, v in _answer(rid).items() if k != "id"}),
    "id-of-another-request": lambda rid: _json_body(_answer(rid + 5)),
    "id-400-digits": lambda rid: _json_body(_answer(10**400)),
}


@pytest.mark.parametrize("case", sorted(FORGED))
def test_a_forged_python_answer_gets_the_sandbox_replaced(
    sb: DockerSandbox, case: str, healthy: Callable[[DockerSandbox], None]
) -> None:
    sb.run_python("x = 1")
    first = sb.container_id
    code = _writer(FORGED[case](_next_request_id())) + "import time; time.sleep(3)"
    r = sb.run_python(code)
    _assert_replaced(r)
    assert sb.container_id != first
    assert sb.run_python("x").error == "NameError: name 'x' is not defined"
    healthy(sb)


@pytest.mark.parametrize("case", ["duration-400-digits", "nested-200k", "invalid-utf8"])
def test_a_forged_shell_answer_gets_the_sandbox_replaced(
    sb: DockerSandbox, case: str, healthy: Callable[[DockerSandbox], None]
) -> None:
    rid = _next_request_id()
    sb.write_file(
        "forge.py", _writer(FORGED[case](rid + 1))
    )  # the write takes this id; the shell call the next
    r = sb.run_shell("python3 forge.py; sleep 3")
    _assert_replaced(r)
    healthy(sb)


@pytest.mark.parametrize("operation", ["read", "write", "reset"])
def test_a_forged_frame_during_a_file_operation_is_a_file_error(
    sb: DockerSandbox, operation: str, healthy: Callable[[DockerSandbox], None]
) -> None:
    # A thread left running by a cell writes the frame while the host waits for the file operation's answer
    # (threads survive between calls; processes do not).
    sb.write_file("a.txt", "text")
    code = _writer("b'[' * 200_000")
    thread = "import threading, time\ndef forge():\n    time.sleep(1)\n" + "".join(
        f"    {line}\n" for line in code.splitlines()
    )
    r = sb.run_python(thread + "threading.Thread(target=forge, daemon=True).start()")
    assert r.ok, r
    time.sleep(2)  # the forged frame is now waiting on the host's socket, ahead of the next answer
    operations: dict[str, Callable[[], object]] = {
        "read": lambda: sb.read_file("a.txt"),
        "write": lambda: sb.write_file("b.txt", "x"),
        "reset": sb.reset,
    }
    with pytest.raises(SandboxFileError) as caught:
        operations[operation]()
    assert caught.value.lost_cause == "protocol"
    healthy(sb)


def test_a_well_formed_forged_answer_is_taken_as_the_codes_own_output(
    sb: DockerSandbox, healthy: Callable[[DockerSandbox], None]
) -> None:
    # The code can only fool itself: a frame that follows the protocol is its answer, lone surrogates cleaned.
    rid = _next_request_id()
    answer = _answer(rid, stdout=f"forged {D800} {DC80}\n", value=f"'{D800}'")
    r = sb.run_python(_writer(repr(json.dumps(answer).encode())) + "import time; time.sleep(1)")
    assert r.ok
    assert not r.sandbox_replaced
    assert r.stdout == "forged \ufffd \ufffd\n"
    assert r.value == "'\ufffd'"
    _assert_encodes(r)
    healthy(sb)  # the real answer to the forged call comes late and is skipped


# ----------------------------------------------------------------------------------------------- surrogates

# The cells write `\\ud800` escapes, which Python turns into lone surrogates inside the sandbox.
SURROGATE_CELLS = {
    "exception": r"raise ValueError('a \ud800 b \udc80')",
    "exception-message-only": r"raise Exception('\udc80')",
    "value-repr": "class X:\n    def __repr__(self):\n        return 'v \\ud800 \\udc80'\nX()",
    "print": r"print('p \ud800 \udc80')",
    "stderr": r"import sys; sys.stderr.write('e \ud800 \udc80')",
    "raw-bytes": r"import os; os.write(1, b'o \xed\xa0\x80 \xed\xb2\x80'); os.write(2, b'\xed\xa0\x80')",
    "literal-surrogate-in-code": f"x = '{D800}'",
    "listing-file-names": "open('\\udc80.txt', 'w').close()\nimport os; print(os.listdir('.')); os.listdir('.')",
}


@pytest.mark.parametrize("case", sorted(SURROGATE_CELLS))
def test_lone_surrogates_from_python_never_reach_the_host(
    sb: DockerSandbox, case: str, healthy: Callable[[DockerSandbox], None]
) -> None:
    r = sb.run_python(SURROGATE_CELLS[case])
    assert not r.sandbox_replaced, r
    _assert_encodes(r)
    text = " ".join(t or "" for t in (r.stdout, r.stderr, r.value, r.error, r.traceback))
    assert not any(0xD800 <= ord(c) <= 0xDFFF for c in text)
    if case in ("exception", "exception-message-only", "value-repr", "raw-bytes"):
        assert "\ufffd" in text, r
    healthy(sb)


def test_lone_surrogates_in_shell_and_file_names(
    sb: DockerSandbox, healthy: Callable[[DockerSandbox], None]
) -> None:
    r = sb.run_shell(
        "printf 'a\\355\\240\\200b'; touch \"$(printf 'f\\200')\"; ls; printf '\\355\\240\\200' >&2"
    )
    assert r.ok, r
    assert r.stdout.startswith("a\ufffd")
    assert "f\ufffd" in r.stdout
    assert "\ufffd" in r.stderr
    _assert_encodes(r)
    # A command that cannot be encoded for exec: the shell does not start, the sandbox stays.
    r = sb.run_shell(f"echo {D800}")
    assert not r.ok
    assert not r.sandbox_replaced
    assert r.error is not None
    assert "could not start" in r.error
    _assert_encodes(r)
    # File names: the returned path and the error messages come back clean.
    where = sb.write_file(f"w{DC80}.txt", f"content {D800}")
    assert where == "/workspace/w\ufffd.txt"
    assert sb.read_file(f"w{DC80}.txt") == "content \ufffd".encode()
    with pytest.raises(SandboxFileError) as caught:
        sb.read_file(f"missing{DC80}")
    assert str(caught.value) == "No such file or directory: missing\ufffd"
    with pytest.raises(SandboxFileError) as caught:
        sb.read_file(D800)
    str(caught.value).encode("utf-8")
    healthy(sb)
