"""Fixtures for the model backends: the tiny random-weight Qwen2 GGUF, models on it, and servers on 127.0.0.1.

The GGUF is written once per session (about 25 MB, a few seconds). llama-cpp-python is required for the
`llama` tests: CI installs it, so a missing install skips them here with the command that fixes it.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.models.llamacpp import LlamaCppModel

LLAMA_MISSING = importlib.util.find_spec("llama_cpp") is None
SERVER_DEPS = ("fastapi", "starlette_context", "sse_starlette", "uvicorn", "pydantic_settings")
SERVER_MISSING = [name for name in SERVER_DEPS if importlib.util.find_spec(name) is None]


def requires_llama() -> None:
    if LLAMA_MISSING:
        pytest.skip("llama-cpp-python is not installed: pip install 'qwq-agent[llama]'")


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf", reason="the tiny test model is written with the gguf package (dev extra)")
    from agent.models.tiny import write_tiny_qwen2_gguf

    return write_tiny_qwen2_gguf(tmp_path_factory.mktemp("tiny") / "tiny-qwen2.gguf", seed=0)


@pytest.fixture
def make_llama(tiny_gguf: Path) -> Iterator[Callable[..., LlamaCppModel]]:
    """A factory of LlamaCppModel on the tiny GGUF: one thread, small context, bounded strings (noise model)."""
    requires_llama()
    made: list[LlamaCppModel] = []

    def make(**kwargs: Any) -> LlamaCppModel:
        options: dict[str, Any] = {
            "n_ctx": 4096,
            "n_threads": 1,
            "seed": 7,
            "max_tokens": 96,
            "max_string_length": 12,
            "n_gpu_layers": 0,
        }
        options.update(kwargs)
        model = LlamaCppModel(tiny_gguf, **options)
        made.append(model)
        return model

    yield make
    for model in made:
        model.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (for connection-refused paths)."""
    return free_port()


@pytest.fixture(scope="session")
def llama_server(tiny_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server on the tiny GGUF; yields its base URL (…/v1)."""
    requires_llama()
    if SERVER_MISSING:
        pytest.skip(
            f"llama-cpp-python's server needs {', '.join(SERVER_MISSING)}: "
            "pip install fastapi pydantic-settings starlette-context sse-starlette uvicorn"
        )
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(tiny_gguf),
        "--model_alias",
        "tiny",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "4096",
        "--n_threads",
        "1",
        "--n_threads_batch",
        "1",
        "--n_gpu_layers",
        "0",
        "--chat_format",
        "chatml",
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                pytest.fail(f"llama_cpp.server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base_url}/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server did not come up:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
