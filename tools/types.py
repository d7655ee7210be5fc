"""Plain data that crosses the boundary between the loop and the tools: a parsed call and its result.

They live in `tools` (not `agent`) because `Toolbox.call` consumes them and dependencies point from `agent`
to `tools`, never back.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ToolCall", "ToolResult"]


class ToolCall(BaseModel):
    """One function call the model asked for.

    `id` is assigned by the loop (the QwQ format has no call ids; results follow the order of the calls), so
    two calls parsed from the same text compare equal whatever ids they later get only if ids are left empty.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    id: str = ""


class ToolResult(BaseModel):
    """What a tool call produced, already serialised to the text the model will read."""

    model_config = ConfigDict(frozen=True)

    content: str
    is_error: bool = False
