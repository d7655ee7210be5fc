"""Model backends behind one `Model` protocol: scripted (tests), llama.cpp in-process, OpenAI-compatible HTTP.

Backends with heavy dependencies are imported on first attribute access so `import agent` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent._lazy import lazy_attribute
from agent.models import errors
from agent.models._turns import ToolChoice
from agent.models.base import CountsTokens, KeepThinking, Model, ModelChunk, ModelRequest, Usage
from agent.models.chat_formats import ChatFormat
from agent.models.errors import *  # noqa: F403 (re-exported: `errors.__all__` names them)
from agent.models.sampling import SamplingConfig
from agent.models.scripted import (
    FunctionModel,
    ScriptedModel,
    ScriptExhaustedError,
    completion_text,
    tool_call_text,
)

if TYPE_CHECKING:
    from agent.models.llamacpp import LlamaCppModel
    from agent.models.openai_compat import OpenAICompatModel

__all__ = [
    "ChatFormat",
    "CountsTokens",
    "FunctionModel",
    "KeepThinking",
    "LlamaCppModel",
    "Model",
    "ModelChunk",
    "ModelRequest",
    "OpenAICompatModel",
    "SamplingConfig",
    "ScriptExhaustedError",
    "ScriptedModel",
    "ToolChoice",
    "Usage",
    "completion_text",
    "tool_call_text",
]
__all__ += errors.__all__

_LAZY = {
    "LlamaCppModel": "agent.models.llamacpp",
    "OpenAICompatModel": "agent.models.openai_compat",
}


def __getattr__(name: str) -> Any:
    return lazy_attribute(__name__, _LAZY, name)
