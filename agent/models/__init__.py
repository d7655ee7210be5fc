"""Model backends behind one `Model` protocol: scripted (tests), llama.cpp in-process, OpenAI-compatible HTTP.

Backends with heavy dependencies are imported on first attribute access so `import agent` stays fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.models._turns import ToolChoice
from agent.models.base import CountsTokens, KeepThinking, Model, ModelChunk, ModelRequest, Usage
from agent.models.chat_formats import ChatFormat
from agent.models.errors import (
    ContextLengthError,
    ModelAuthenticationError,
    ModelConfigurationError,
    ModelError,
    ModelRequestError,
    ModelStreamError,
    ModelUnavailableError,
)
from agent.models.sampling import SamplingConfig
from agent.models.scripted import ScriptedModel, ScriptExhaustedError, completion_text, tool_call_text

if TYPE_CHECKING:
    from agent.models.llamacpp import LlamaCppModel
    from agent.models.openai_compat import OpenAICompatModel

__all__ = [
    "ChatFormat",
    "ContextLengthError",
    "CountsTokens",
    "KeepThinking",
    "LlamaCppModel",
    "Model",
    "ModelAuthenticationError",
    "ModelChunk",
    "ModelConfigurationError",
    "ModelError",
    "ModelRequest",
    "ModelRequestError",
    "ModelStreamError",
    "ModelUnavailableError",
    "OpenAICompatModel",
    "SamplingConfig",
    "ScriptExhaustedError",
    "ScriptedModel",
    "ToolChoice",
    "Usage",
    "completion_text",
    "tool_call_text",
]

_LAZY = {
    "LlamaCppModel": "agent.models.llamacpp",
    "OpenAICompatModel": "agent.models.openai_compat",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'agent.models' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
