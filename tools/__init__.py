"""Tools the model can call: the `@tool` decorator, `Tool`, `Toolbox` (validation and dispatch), and built-ins."""

from tools.types import ToolCall, ToolResult

__all__ = ["ToolCall", "ToolResult"]
