"""Test doubles and sample tools, for users' tests and ours.

`ScriptedModel` replays given completion texts; `completion_text` and `tool_call_text` write them the way
QwQ-32B does. `add` and `shout` are small typed tools with documented arguments, used by the test suite and
the benchmarks alike (their schemas exercise integers, strings, defaults and booleans).
"""

from __future__ import annotations

from agent.models.scripted import ScriptedModel, completion_text, tool_call_text
from tools.base import tool

__all__ = ["ScriptedModel", "add", "completion_text", "shout", "tool_call_text"]


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
