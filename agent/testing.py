"""Test doubles and sample tools, for users' tests and ours.

`ScriptedModel` replays given completion texts; `completion_text` and `tool_call_text` write them the way
QwQ-32B does. `add` and `shout` are small typed tools with documented arguments, used by the test suite and
the benchmarks alike (their schemas exercise integers, strings, defaults and booleans). `page` returns a
long, varied text (3 kB by default) and `long_run_script` scripts a run that reads many pages: the long runs
that `agent.context` keeps inside the context, in tests and in `benchmarks/context.py`.
"""

from __future__ import annotations

from agent.models.scripted import ScriptedModel, completion_text, tool_call_text
from tools.base import tool

__all__ = [
    "ScriptedModel",
    "add",
    "completion_text",
    "long_run_script",
    "page",
    "shout",
    "tool_call_text",
]

_WORDS = [
    "the",
    "agent",
    "reads",
    "a",
    "page",
    "of",
    "results",
    "and",
    "writes",
    "down",
    "what",
    "it",
    "found",
    "before",
    "it",
    "goes",
    "on",
    "to",
    "the",
    "next",
    "one",
    "while",
    "the",
    "report",
    "describes",
    "how",
    "the",
    "system",
    "behaves",
    "under",
    "load",
    "which",
    "parts",
    "were",
    "measured",
    "and",
    "which",
    "questions",
    "remain",
    "open",
    "for",
    "the",
    "people",
    "who",
    "maintain",
    "it",
]


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first addend
        b: the second addend
    """
    return a + b


@tool
def shout(text: str, times: int = 1, loud: bool = False) -> str:
    """Repeat a text.

    Args:
        text: what to repeat
        times: how often
        loud: upper-case it
    """
    return (text.upper() if loud else text) * max(times, 0)


@tool
def page(number: int, size: int = 3000) -> str:
    """Read one page of a long report.

    Args:
        number: which page
        size: how many characters
    """
    words = [f"Page {number}:"]
    length = len(words[0])
    i = number
    while length < size:
        i = (i * 7 + 3) % len(_WORDS)
        words.append(_WORDS[i] if i % 17 else f"{_WORDS[i]}_{number}")
        length += len(words[-1]) + 1
    return " ".join(words)[:size]


def long_run_script(steps: int, *, size: int = 3000, answer: str = "All pages read.") -> list[str]:
    """Completions for a run of `steps` model turns: each reads the next page with `page`, the last answers."""
    turns = [
        completion_text(f"I read page {n} next.", tool_call_text("page", {"number": n, "size": size}))
        for n in range(1, steps)
    ]
    return [*turns, completion_text("Every page is read.", content=answer)]
