"""`qwq-agent models check`: load a GGUF or contact a server, and report format, context and speed.

What it answers before a long run: which chat format the framework will use (QwQ-32B's exact format, or the
model's own template from its file), whether the model's turn starts inside its reasoning, how the tags
tokenize, how large the context is, how long loading takes, and how fast prompt evaluation and generation
are. Exit status: 0 all good, 1 something to look at (printed), 2 the model could not be checked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

__all__ = ["add_parser", "main", "template_report"]

_TAGS = ("<tool_call>", "</tool_call>", "<think>", "</think>", "<|im_start|>", "<|im_end|>")


def add_parser(subparsers: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(name, help=help_text, description=help_text)
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="report template, context and speed of a model or server",
        description="Load a GGUF file (--model) or contact an OpenAI-compatible server (--base-url) and report: "
        "whether its chat template produces QwQ-32B's format as the framework renders it, whether <tool_call> "
        "and <think> are single tokens, the context size, and prompt and generation speed. Exit status: 0 all "
        "good, 1 something to look at (printed as warnings), 2 the model could not be checked.",
    )
    # not `required=True`: a config file's --base-url counts too, which argparse's check would not see
    where = check.add_mutually_exclusive_group()
    where.add_argument("--model", metavar="PATH", help="a GGUF file, run in-process with llama-cpp-python")
    where.add_argument(
        "--base-url", metavar="URL", help="an OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"
    )
    check.add_argument(
        "--model-name", metavar="NAME", help="the model's name on the server (default: the first listed)"
    )
    check.add_argument("--api-mode", choices=("completions", "chat"), default="completions")
    check.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key")
    check.add_argument(
        "--n-ctx", type=int, default=4096, help="context to allocate in-process (default: 4096)"
    )
    check.add_argument(
        "--n-gpu-layers", type=int, default=-1, help="layers to offload to the GPU (default: all)"
    )
    check.add_argument("--threads", type=int, help="CPU threads in-process (default: llama.cpp's choice)")
    check.add_argument(
        "--tokens", type=int, default=64, help="tokens to generate for the speed figure (default: 64)"
    )
    check.add_argument(
        "--chat-format",
        choices=("auto", "qwq", "template"),
        default="auto",
        help="how prompts are rendered: auto (the model's template decides), qwq, template (default: auto)",
    )
    check.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.set_defaults(_models_parser=parser)
    return parser


def main(args: argparse.Namespace) -> int:
    if getattr(args, "models_command", None) != "check":
        args._models_parser.print_help()
        return 2
    if not args.model and not args.base_url:
        print(
            "qwq-agent models check: name what to check: --model FILE.gguf or --base-url URL", file=sys.stderr
        )
        return 2
    from agent.models.errors import ModelError

    try:
        report = _check_gguf(args) if args.model else asyncio.run(_check_server(args))
    except (ModelError, OSError, ValueError, ImportError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        print(f"qwq-agent models check: cannot check the model: {text}", file=sys.stderr)
        return 2
    problems: list[str] = list(report.get("problems", []))
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        for key, value in report.items():
            if key != "problems":
                print(f"{key.replace('_', ' ')}: {value}")
        for problem in problems:
            print(f"warning: {problem}")
        if not problems:
            print("ok: ready for qwq-agent")
    return 1 if problems else 0


# -- template -----------------------------------------------------------------------------------------------
def template_report(template: str | None) -> tuple[str, list[str]]:
    """How the framework will treat a model's chat template: QwQ-32B's exact format, or the template itself."""
    from agent.models.chat_formats import qwq_template_mismatch

    if not template:
        return "none in the model file (the framework renders QwQ-32B's format itself)", []
    mismatch = qwq_template_mismatch(template)
    if mismatch is None:
        return "matches QwQ-32B's format", []
    if mismatch.startswith("the template fails"):
        return "does not render", [f"the model's chat template cannot be used: {mismatch}"]
    return f"the model's own (it {mismatch}); prompts are rendered with it", []


# -- in-process ---------------------------------------------------------------------------------------------
def _check_gguf(args: argparse.Namespace) -> dict[str, Any]:
    from agent.messages import UserMessage
    from agent.models._llama_runtime import cpu_has_amx
    from agent.models.base import ModelRequest
    from agent.models.chat_formats import opens_thinking
    from agent.models.llamacpp import LlamaCppModel

    started = time.perf_counter()
    model = LlamaCppModel(
        args.model,
        n_ctx=args.n_ctx,
        n_gpu_layers=args.n_gpu_layers,
        n_threads=args.threads,
        seed=0,
        max_tokens=args.tokens,
        chat_format=args.chat_format,
    )
    model.load()
    load_s = time.perf_counter() - started
    rt = model.runtime
    assert rt is not None
    meta = rt.metadata
    arch = meta.get("general.architecture", "?")
    template_status, problems = template_report(rt.chat_template)
    chat_format = model.chat_format
    probe = model.render_prompt([UserMessage(content="Hi")])
    split = [t for t in _TAGS if rt.single_token(t) is None]
    trained = meta.get(f"{arch}.context_length")
    request = ModelRequest(
        messages=[UserMessage(content="Count from one to a hundred. " * 20)], tool_choice="none"
    )

    async def generate() -> tuple[float, float, float, int]:
        t0 = time.perf_counter()
        first = 0.0
        async for chunk in model.stream(request):
            if chunk.text and not first:
                first = time.perf_counter()
        end = time.perf_counter()
        return t0, first or end, end, model.last_stats.completion_tokens

    t0, first, end, generated = asyncio.run(generate())
    stats = model.last_stats
    extra = rt.extra_buffer_types
    model.close()
    return {
        "model": args.model,
        "architecture": arch,
        "name": meta.get("general.name", ""),
        "chat_format": chat_format.describe(),
        "template": template_status,
        "turn_opens_reasoning": opens_thinking(probe),
        "tags_split_into_several_tokens": ", ".join(split) or "none",
        "trained_context": int(trained) if trained else None,
        "context": args.n_ctx,
        "extra_buffer_types": (
            f"{'on' if extra else 'off'} (CPU {'has' if cpu_has_amx() else 'has no'} AMX)"
            if extra is not None
            else "unknown"
        ),
        "load_seconds": round(load_s, 2),
        "prompt_tokens_per_second": round(stats.evaluated_tokens / max(first - t0, 1e-9), 1),
        "generation_tokens_per_second": round(max(generated - 1, 0) / max(end - first, 1e-9), 1),
        "problems": problems,
    }


# -- server -------------------------------------------------------------------------------------------------
async def _check_server(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from agent.messages import UserMessage
    from agent.models.base import ModelRequest
    from agent.models.openai_compat import OpenAICompatModel

    kwargs: dict[str, Any] = {
        "mode": args.api_mode,
        "max_tokens": args.tokens,
        "model": args.model_name,
        "max_retries": 1,
    }
    if args.api_key_env:
        kwargs["api_key_env"] = args.api_key_env
    model = OpenAICompatModel(args.base_url, **kwargs)
    names = await model.list_models()
    if model.model is None:
        model.model = names[0] if names else None
    problems: list[str] = []
    if model.model not in names:
        problems.append(f"the server lists {names}, not {model.model!r}")
    # llama.cpp's server describes itself at /props (template and context); others do not say.
    root = model.base_url.removesuffix("/v1")
    template: str | None = None
    context: Any = None
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(f"{root}/props")
            if response.status_code == 200:
                props = response.json()
                template = props.get("chat_template")
                context = (props.get("default_generation_settings") or {}).get("n_ctx")
    except (httpx.HTTPError, ValueError):
        pass
    if template is not None:
        template_status, more = template_report(template)
        problems += more
    else:
        template_status = "not published by the server (completions mode renders QwQ-32B's format itself)"
    request = ModelRequest(messages=[UserMessage(content="Count from one to a hundred.")], tool_choice="none")
    t0 = time.perf_counter()
    first = 0.0
    usage = None
    pieces = 0
    async for chunk in model.stream(request):
        if chunk.text:
            pieces += 1
            if not first:
                first = time.perf_counter()
        if chunk.usage is not None:
            usage = chunk.usage
    end = time.perf_counter()
    generated = usage.completion_tokens if usage is not None and usage.completion_tokens else pieces
    return {
        "server": model.base_url,
        "model": model.model,
        "mode": model.mode,
        "template": template_status,
        "context": context if context is not None else "not published",
        "seconds_to_first_token": round((first or end) - t0, 3),
        "generation_tokens_per_second": round(max(generated - 1, 0) / max(end - (first or end), 1e-9), 1),
        "problems": problems,
    }
