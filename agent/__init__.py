"""The reasoning loop and everything it needs: messages, events, the output parser, model backends, the CLI.

`from agent import Agent` is the entry point for library users. Names are resolved on first access so that
`qwq-agent --help` (which imports this package) does not pay for pydantic, jinja2 and the tools.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent._lazy import lazy_attribute

if TYPE_CHECKING:
    from agent.context import ContextPolicy
    from agent.loop import Agent, RunResult, RunUsage, StopReason
    from agent.messages import AssistantMessage, Message, SystemMessage, ToolMessage, UserMessage

__all__ = [
    "Agent",
    "AssistantMessage",
    "ContextPolicy",
    "Message",
    "RunResult",
    "RunUsage",
    "StopReason",
    "SystemMessage",
    "ToolMessage",
    "UserMessage",
    "__version__",
]

_LAZY = {
    "Agent": "agent.loop",
    "ContextPolicy": "agent.context",
    "RunResult": "agent.loop",
    "RunUsage": "agent.loop",
    "StopReason": "agent.loop",
    "AssistantMessage": "agent.messages",
    "Message": "agent.messages",
    "SystemMessage": "agent.messages",
    "ToolMessage": "agent.messages",
    "UserMessage": "agent.messages",
}


def _version() -> str:
    """The installed distribution's version; in a source tree that was never installed, pyproject.toml's."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qwq-agent")
    except PackageNotFoundError:
        pass
    import tomllib
    from pathlib import Path

    try:
        project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text(encoding="utf-8"))
        return str(project["project"]["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return "0+unknown"


def __getattr__(name: str) -> Any:
    if name == "__version__":  # read from the package metadata on first use, not at import time
        return _version()
    return lazy_attribute(__name__, _LAZY, name)
