"""Your own tools: typed functions, sync or async, turned into tools the model calls with `@tool`.

The signature is the contract: `@tool` builds the JSON Schema the model sees from the type hints, takes the
descriptions from the docstring, and validates every call before your function runs; a call with wrong
arguments never reaches it, the model is told what to fix instead. Raise `ToolError` for a failure the model
should read; return anything (str, numbers, dicts, pydantic models are turned into text).

    python examples/custom_tool.py models/qwq-32b-q4_k_m.gguf          # in-process (llama-cpp-python)
    python examples/custom_tool.py http://127.0.0.1:8000/v1            # an OpenAI-compatible server

No Docker needed: these tools run in this process (see docs/security.md for what that means).
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Literal

from agent import Agent
from agent.models import LlamaCppModel, Model, OpenAICompatModel
from tools import ToolError, tool


@tool
def convert_temperature(value: float, unit: Literal["C", "F"]) -> float:
    """Convert a temperature between degrees Celsius and Fahrenheit.

    Args:
        value: the temperature to convert
        unit: the unit `value` is given in; the result is in the other unit
    """
    return round(value * 9 / 5 + 32, 2) if unit == "C" else round((value - 32) * 5 / 9, 2)


_ELEVATIONS_M = {"la paz": 3640, "denver": 1609, "quito": 2850, "amsterdam": -2}


@tool(timeout=10)
async def city_elevation(city: str) -> dict[str, str | int]:
    """Look up the elevation of a city above sea level, in metres.

    Args:
        city: the city's English name, e.g. "Quito"
    """
    await asyncio.sleep(0.1)  # stands in for an HTTP request or a database query
    metres = _ELEVATIONS_M.get(city.strip().lower())
    if metres is None:
        raise ToolError(f"no elevation known for {city!r}; known cities: {', '.join(sorted(_ELEVATIONS_M))}")
    return {"city": city, "elevation_m": metres}


def make_model(spec: str, threads: int | None = None, seed: int | None = None) -> Model:
    """An http(s) URL is an OpenAI-compatible server; anything else a GGUF file run in-process."""
    if spec.startswith(("http://", "https://")):
        return OpenAICompatModel(base_url=spec, seed=seed)
    return LlamaCppModel(model_path=spec, n_ctx=16384, n_threads=threads, seed=seed)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("model", help="a GGUF file, or the base URL of an OpenAI-compatible server")
    parser.add_argument(
        "task",
        nargs="?",
        default="Water boils about 1 degree Celsius lower per 300 m of altitude. At what temperature, "
        "in Fahrenheit, does it boil in Quito?",
    )
    parser.add_argument("--max-steps", type=int, default=8, help="model turns (default 8)")
    parser.add_argument("--threads", type=int, help="CPU threads for a GGUF model")
    parser.add_argument("--seed", type=int, help="sampling seed, for repeatable runs")
    parser.add_argument("--max-tokens", type=int, help="cap on generated tokens per turn")
    parser.add_argument("--thinking-budget", type=int, help="cap on reasoning tokens per turn")
    parser.add_argument("--tool-choice", default="auto", help="auto, required, none, or a tool name")
    args = parser.parse_args()

    # What the model is shown for each tool (the OpenAI function format, inside QwQ's system turn).
    print(json.dumps(city_elevation.to_openai()["function"], indent=2))

    agent = Agent(
        make_model(args.model, args.threads, args.seed),
        [convert_temperature, city_elevation],
        max_steps=args.max_steps,
        max_tokens_per_step=args.max_tokens,
        thinking_budget=args.thinking_budget,
        tool_choice=args.tool_choice,
    )
    result = await agent.run(args.task)

    for message in result.messages:
        if message.role == "tool":
            print(f"[{message.name or 'note'}] {message.content}")
    print("answer:", result.answer or "(none)")
    print("stop reason:", result.stop_reason.value)
    print(f"steps: {result.steps}, tool calls: {result.tool_calls}")


if __name__ == "__main__":
    asyncio.run(main())
