"""Constrained tool calls: the fraction of valid calls the noise model makes with and without the grammar.

100 turns of LlamaCppModel on the tiny random-weight GGUF with tool_choice="required" and a small thinking
budget, so every turn opens a `<tool_call>` right after its (noise) reasoning. With the grammar the call body is
sampled under the GBNF built from the tools' schemas; without it (the baseline, `constrain_tool_calls=False`)
the body is free noise. A turn counts as valid when the parser reads at least one call, no malformed block,
and the Toolbox accepts every call's arguments. Also printed: generation speed inside call bodies against free
text, the cost of applying the grammar to the 151k-token vocabulary at every step.

Run: python benchmarks/llama_constrained.py [--runs 100]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from agent.messages import UserMessage
from agent.models import LlamaCppModel, ModelRequest
from agent.models.tiny import write_tiny_qwen2_gguf
from agent.parsing import parse_completion
from agent.testing import add
from tools import ToolArgumentsError, Toolbox, tool


@tool
def search(query: str, limit: int = 5, exact: bool = False) -> str:
    """Search notes.

    Args:
        query: what to look for
        limit: how many results
        exact: match the whole query
    """
    return query


TOOLS = [add, search]


@dataclass
class Tally:
    turns: int = 0
    valid_turns: int = 0
    calls: int = 0  # <tool_call> blocks opened after the reasoning
    valid_calls: int = 0  # parsed and accepted by the Toolbox
    cut_calls: int = 0  # still open when the token cap ended the turn
    tokens: int = 0
    seconds: float = 0.0
    grammar_tokens: int = 0
    fast_tokens: int = 0


async def turn(model: LlamaCppModel, tally: Tally) -> None:
    request = ModelRequest(
        messages=[UserMessage(content="Add 2 and 3, or search for it.")],
        tools=TOOLS,
        tool_choice="required",
        thinking_budget=4,
    )
    text = ""
    start = time.perf_counter()
    finish = ""
    async for chunk in model.stream(request):
        text += chunk.text
        finish = chunk.finish_reason or finish
    tally.seconds += time.perf_counter() - start
    stats = model.last_stats
    tally.turns += 1
    tally.tokens += stats.completion_tokens
    tally.grammar_tokens += stats.grammar_tokens
    tally.fast_tokens += stats.grammar_fast_tokens
    answer = text.split("</think>", 1)[-1]
    opened = answer.count("<tool_call>")
    completion = parse_completion(text)
    # A block the token cap ended before its JSON was complete is the cap's doing, not the sampler's (the
    # parser still reads a call whose JSON was complete when only the closing tag was cut).
    cut = max(0, opened - len(completion.tool_calls)) if finish == "length" else 0
    toolbox = Toolbox(TOOLS)
    good = 0
    for call in completion.tool_calls:
        try:
            toolbox.validate(call.name, call.arguments)
            good += 1
        except ToolArgumentsError:
            pass
    tally.calls += opened
    tally.cut_calls += cut
    tally.valid_calls += good
    tally.valid_turns += int(good > 0 and good == opened - cut)


def measure(path: Path, runs: int, constrained: bool) -> Tally:
    model = LlamaCppModel(
        path,
        n_ctx=4096,
        n_threads=1,
        n_gpu_layers=0,
        seed=11,
        max_tokens=160,
        max_string_length=16,
        constrain_tool_calls=constrained,
    )
    tally = Tally()
    for _ in range(runs):
        asyncio.run(turn(model, tally))
    model.close()
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = write_tiny_qwen2_gguf(Path(tmp) / "tiny.gguf")
        results = {
            "with the grammar": measure(path, args.runs, True),
            "without (baseline)": measure(path, args.runs, False),
        }
    print(f"{args.runs} turns per setting, tool_choice='required', noise model, 160-token cap")
    for label, t in results.items():
        complete = t.calls - t.cut_calls
        print(
            f"{label:>19}: valid calls {t.valid_calls}/{complete} complete = {t.valid_calls / max(complete, 1):.2f} "
            f"({t.cut_calls} more cut by the token cap); turns with only valid calls {t.valid_turns}/{t.turns}; "
            f"{t.tokens / t.seconds:.0f} tokens/s"
        )
    g = results["with the grammar"]
    print(
        f"grammar tokens: {g.grammar_tokens}, of which {g.fast_tokens} took the fast path (the freely sampled token "
        "already fit; a noise model rarely agrees, QwQ nearly always does)"
    )


if __name__ == "__main__":
    main()
