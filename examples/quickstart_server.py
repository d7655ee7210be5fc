"""Quickstart: QwQ-32B behind an OpenAI-compatible server, with a Python tool that runs in the Docker sandbox.

Start a server first, for example one of:

    vllm serve Qwen/QwQ-32B --port 8000                                   # GPU server
    llama-server -m qwq-32b-q4_k_m.gguf --port 8000 -c 16384             # llama.cpp

Then (needs a running Docker engine and the sandbox image: `qwq-agent sandbox build`):

    python examples/quickstart_server.py http://127.0.0.1:8000/v1 "How many primes are below 100,000?"

By default the prompt is rendered here in QwQ's exact chat format and sent to /v1/completions. Hosted APIs
only offer /v1/chat/completions: use `--api-mode chat` and put the key in OPENAI_API_KEY (or QWQ_AGENT_API_KEY):

    python examples/quickstart_server.py https://dashscope-intl.aliyuncs.com/compatible-mode/v1 \\
        --model-name qwq-32b --api-mode chat
"""

from __future__ import annotations

import argparse
import asyncio

from agent import Agent
from agent.models import OpenAICompatModel
from sandboxes import DockerSandbox
from tools.code import code_tools


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("base_url", help="the API root, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument(
        "task", nargs="?", default="How many primes are there below 100,000? Check it with code."
    )
    parser.add_argument("--model-name", help="the model's name on the server (default: the first it lists)")
    parser.add_argument("--api-mode", choices=("completions", "chat"), default="completions")
    parser.add_argument("--max-steps", type=int, default=10, help="model turns (default 10)")
    parser.add_argument("--max-tokens", type=int, help="cap on generated tokens per turn")
    parser.add_argument("--seed", type=int, help="sampling seed, for repeatable runs")
    args = parser.parse_args()

    # The API key, if the server needs one, is read from QWQ_AGENT_API_KEY or OPENAI_API_KEY.
    model = OpenAICompatModel(
        base_url=args.base_url, model=args.model_name, mode=args.api_mode, seed=args.seed
    )
    async with DockerSandbox() as sandbox:
        python = [t for t in code_tools(sandbox) if t.name == "python"]
        agent = Agent(model, python, max_steps=args.max_steps, max_tokens_per_step=args.max_tokens)
        result = await agent.run(args.task)

    print("answer:", result.answer or "(none)")
    print("stop reason:", result.stop_reason.value)
    print(f"steps: {result.steps}, tool calls: {result.tool_calls}")
    print(f"tokens: {result.usage.prompt_tokens} prompt, {result.usage.completion_tokens} completion")


if __name__ == "__main__":
    asyncio.run(main())
