"""The exceptions of the tools package, in the two families of the house style.

Model-fixable problems (`ToolArgumentsError`, `UnknownToolError`) carry a `.message` written for the model: it
is fed back as an observation so the model can correct its next call. `ToolError` is what a tool's own code
raises to report a failure to the model without a traceback. `ToolDefinitionError` is for the developer: a
function that cannot become a tool, an invalid JSON Schema, duplicate names. It is raised at construction,
never during a run.

The built-in tool families raise their own, in the same two families (the whole tree: `agent.errors`):

    QwqAgentError (prompts.errors)
    ├── ConfigurationError              the user / developer must fix something
    │   ├── ToolDefinitionError         a tool definition (also a ValueError)
    │   └── MCPConfigError              an MCP configuration (also a ValueError)
    └── RunError                        at run time
        ├── ToolArgumentsError          the model must fix its call (.message is for the model)
        │   └── UnknownToolError
        ├── ToolError                   a tool reports a failure to the model in its own words
        ├── FetchError                  tools.web.fetch refused or failed (.message is for the model)
        └── MCPServerError              an MCP server could not be started, reached or listed

`tools.web.FetchError` and `tools.mcp.MCPConfigError` / `MCPServerError` are these same classes.
"""

from __future__ import annotations

from collections.abc import Sequence

from prompts.errors import ConfigurationError, RunError
from tools.serialize import replace_surrogates

__all__ = [
    "FetchError",
    "MCPConfigError",
    "MCPServerError",
    "ToolArgumentsError",
    "ToolDefinitionError",
    "ToolError",
    "UnknownToolError",
]


class ToolDefinitionError(ConfigurationError, ValueError):
    """A tool was defined wrongly; the developer must change the code (never shown to the model)."""


class ToolArgumentsError(RunError):
    """The model called a tool with arguments that do not fit its schema.

    `message` is the text shown to the model; `problems` lists the individual findings (one per argument path)
    so that callers who want a different layout do not have to parse the message.
    """

    def __init__(self, message: str, *, tool_name: str = "", problems: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.tool_name = tool_name
        self.problems: tuple[str, ...] = tuple(problems)


class UnknownToolError(ToolArgumentsError):
    """The model called a tool that does not exist.

    A subclass of `ToolArgumentsError` on purpose: the contract says `Toolbox.validate` raises
    `ToolArgumentsError` for anything the model must fix, so one `except` clause in the loop covers both.
    """

    def __init__(
        self, message: str, *, tool_name: str, available: Sequence[str], suggestion: str | None
    ) -> None:
        super().__init__(message, tool_name=tool_name)
        self.available: tuple[str, ...] = tuple(available)
        self.suggestion = suggestion


class ToolError(RunError):
    """Raise inside a tool to report a failure to the model in your own words.

    `Toolbox.call` turns it into an error result whose text is exactly `str(exc)`: no exception type, no
    source location. Use it for expected failures (file not found, page refused) where the message says it
    all.
    """


class FetchError(RunError):
    """A fetch was refused or failed; `str(error)` is a sentence the model can act on.

    HTTP error statuses are not FetchErrors: a 404 or 500 page is returned as a `FetchResult` with that
    status, since its text often says what went wrong. The message can quote what a server sent, so lone
    surrogates are replaced here: the sentence always encodes as UTF-8.
    """

    def __init__(self, message: str, *, url: str = "") -> None:
        message = replace_surrogates(message)
        super().__init__(message)
        self.message = message
        self.url = url


class MCPConfigError(ConfigurationError, ValueError):
    """The MCP configuration is malformed; the message says which server and which field."""


class MCPServerError(RunError, RuntimeError):
    """An MCP server could not be started, reached or listed; the message says which and why."""
