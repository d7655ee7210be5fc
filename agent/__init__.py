"""The reasoning loop and everything it needs: messages, events, the output parser, model backends, the CLI.

`from agent import Agent` is the entry point for library users. Names are resolved on first access so that
`qwq-agent --help` (which imports this package) does not pay for pydantic, jinja2 and the tools.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.loop import Agent, RunResult, RunUsage, StopReason
    from agent.messages import AssistantMessage, Message, SystemMessage, ToolMessage, UserMessage

__all__ = [
    "Agent",
    "AssistantMessage",
    "Message",
    "RunResult",
    "RunUsage",
    "StopReason",
    "SystemMessage",
    "ToolMessage",
    "UserMessage",
]

_LAZY = {
    "Agent": "agent.loop",
    "RunResult": "agent.loop",
    "RunUsage": "agent.loop",
    "StopReason": "agent.loop",
    "AssistantMessage": "agent.messages",
    "Message": "agent.messages",
    "SystemMessage": "agent.messages",
    "ToolMessage": "agent.messages",
    "UserMessage": "agent.messages",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'agent' has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)
