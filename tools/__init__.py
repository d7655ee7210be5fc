"""Tools the model can call: the `@tool` decorator, `Tool`, `Toolbox` (validation and dispatch), and
built-ins.

Built-in tool families live in submodules (`tools.code`, `tools.web`, `tools.mcp`) and are imported
explicitly; this package's import pulls in only the core.
"""

from tools.base import Tool, tool
from tools.errors import ToolArgumentsError, ToolDefinitionError, ToolError, UnknownToolError
from tools.serialize import to_text, truncate_middle
from tools.toolbox import Toolbox
from tools.types import ToolCall, ToolResult

__all__ = [
    "Tool",
    "ToolArgumentsError",
    "ToolCall",
    "ToolDefinitionError",
    "ToolError",
    "ToolResult",
    "Toolbox",
    "UnknownToolError",
    "to_text",
    "tool",
    "truncate_middle",
]
