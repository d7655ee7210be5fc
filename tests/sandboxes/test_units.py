"""Pieces of the sandbox that need no engine: output capping, path confinement, framing, config defaults."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time

import pytest

from sandboxes import SandboxConfig
from sandboxes._channel import Channel, ChannelClosed, ProtocolError
from sandboxes._runner import Capture, Refused, confine


def test_capture_keeps_head_and_tail_and_counts_everything() -> None:
    cap = Capture(10)
    for chunk in (b"abc", b"defgh", b"x" * 1000, b"12345"):
        cap.feed(chunk)
    assert cap.total == 1013
    assert cap.truncated
    assert cap.text() == "abcde\n[... 1003 bytes of output omitted ...]\n12345"


def test_capture_small_output_is_untouched() -> None:
    cap = Capture(100)
    cap.feed("héllo\n".encode())
    assert not cap.truncated
    assert cap.text() == "héllo\n"


@pytest.mark.parametrize(
    ("path", "expected"),
    [("a.txt", "/workspace/a.txt"), ("/workspace/d/e", "/workspace/d/e"), ("./x/../y", "/workspace/y")],
)
def test_confine_accepts_workspace_paths(path: str, expected: str) -> None:
    assert confine(path) == expected


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "/workspace/../etc", "/", "/workspacex/a"])
def test_confine_refuses_everything_else(path: str) -> None:
    with pytest.raises(Refused, match="only files under /workspace") as refused:
        confine(path)
    assert refused.value.reason == "outside_workspace"


def test_confine_refuses_empty_and_nul() -> None:
    for path in ("", "a\x00b"):
        with pytest.raises(Refused, match="non-empty") as refused:
            confine(path)
        assert refused.value.reason == "bad_path"


def _mux(stream: int, payload: bytes) -> bytes:
    return struct.pack(">BxxxL", stream, len(payload)) + payload


def _frame(obj: object) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


def test_channel_demultiplexes_and_reassembles_frames() -> None:
    host, container = socket.socketpair()
    with host, container:
        channel = Channel(host)
        data = _frame({"id": 1, "ok": True}) + _frame({"id": 2, "x": "y" * 5000})
        # split across docker chunks and stderr noise, sent byte-unaligned
        wire = _mux(1, data[:7]) + _mux(2, b"noise") + _mux(1, data[7:3000]) + _mux(1, data[3000:])
        for i in range(0, len(wire), 999):
            container.sendall(wire[i : i + 999])
        assert channel.recv(time.monotonic() + 5) == {"id": 1, "ok": True}
        assert channel.recv(time.monotonic() + 5)["x"] == "y" * 5000
        channel.send({"op": "ping"})
        (size,) = struct.unpack(">I", container.recv(4))
        assert json.loads(container.recv(size)) == {"op": "ping"}
        container.close()
        with pytest.raises(ChannelClosed):
            channel.recv(time.monotonic() + 5)


def test_channel_rejects_garbage() -> None:
    host, container = socket.socketpair()
    with host, container:
        channel = Channel(host)
        container.sendall(_mux(1, struct.pack(">I", 3) + b"{x}"))
        with pytest.raises(ProtocolError):
            channel.recv(time.monotonic() + 5)


def test_defaults_are_the_hardened_ones() -> None:
    cfg = SandboxConfig()
    assert cfg.network is False
    assert cfg.read_only_root is True
    assert cfg.user == "1000:1000"
    assert cfg.environment == {}
    with pytest.raises(ValueError, match="extra"):
        SandboxConfig(privileged=True)  # type: ignore[call-arg]


def test_importing_sandboxes_does_not_import_docker() -> None:
    code = "import sys, sandboxes, tools.code; print('docker' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_unreachable_engine_says_what_to_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from agent.cli import main
    from sandboxes import DockerSandbox, DockerUnavailableError, _engine

    monkeypatch.setattr(_engine, "_client", None)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    with pytest.raises(DockerUnavailableError, match="qwq-agent sandbox doctor"), DockerSandbox():
        pass
    assert main(["sandbox", "doctor"]) == 1
    out = capsys.readouterr().out
    # A socket path that does not exist is a typo to fix, not an engine to start: said before connecting.
    assert "[!!] DOCKER_HOST=unix:///nonexistent/docker.sock names the socket" in out
    assert "unset DOCKER_HOST" in out
    # An address that is well formed but where nothing answers: the engine is not reachable.
    monkeypatch.setattr(_engine, "_client", None)
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:9")
    assert main(["sandbox", "doctor"]) == 1
    out = capsys.readouterr().out
    assert "[!!] Docker engine not reachable" in out
    assert "nothing answers at DOCKER_HOST=tcp://127.0.0.1:9" in out
    monkeypatch.setattr(_engine, "_client", None)  # do not keep the broken client for later tests


@pytest.mark.parametrize(
    ("code", "repaired"),
    [
        (
            "import hashlib; return hashlib.sha256(b'x').hexdigest()",
            "import hashlib; hashlib.sha256(b'x').hexdigest()",
        ),
        ("x = 'éé'\nreturn  len(x)\n", "x = 'éé'\nlen(x)\n"),
        ("return(5)", "(5)"),
        # nothing to take: no return, a bare one, one inside a function or block, two, code that does not parse
        ("print('return')", None),
        ("return", None),
        ("def f():\n    return 1\nf()", None),
        ("if True:\n    return 3", None),
        ("return 1\nreturn 2", None),
        ("return 1 +", None),
    ],
)
def test_final_return_as_value(code: str, repaired: str | None) -> None:
    from tools.code import final_return_as_value

    assert final_return_as_value(code) == repaired
