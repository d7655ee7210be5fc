"""llama-cpp-python's OpenAI-compatible server, loading models as `LlamaCppModel` does.

`python -m agent.models.llama_server --model MODEL.gguf [any option of python -m llama_cpp.server]`

On CPUs with AMX, llama-cpp-python 0.3.36's own server (`python -m llama_cpp.server`) crashes on its first
request with any quantized GGUF, as `Llama()` does (see `agent.models._llama_runtime`): measured here with
Qwen2.5-Coder 0.5B and 1.5B, where the server died and every client saw "connection refused". This entry
point runs the same server with llama.cpp's extra buffer types decided as `LlamaCppModel(extra_buffer_types=
None)` decides them: off where the CPU has AMX, on elsewhere. Everything else is llama-cpp-python's.
"""

from __future__ import annotations

import runpy
import sys

from agent.models._llama_runtime import default_extra_buffer_types, model_params


def main(argv: list[str] | None = None) -> None:
    """Run the server with `argv` (default: this process's arguments) until it is stopped."""
    sys.argv = ["llama_cpp.server", *(sys.argv[1:] if argv is None else argv)]
    with model_params(default_extra_buffer_types()):
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
