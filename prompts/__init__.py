"""Every sentence the model reads: the QwQ-32B chat-format renderer and the system-prompt templates (*.j2).

Names are resolved on first access, so that importing `prompts.errors` (the root of the error tree, which
every package imports) does not pay for jinja2.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prompts.chat_format import KeepThinking, render
    from prompts.errors import PromptTemplateError
    from prompts.hf_template import render_chat_template, template_supports_tools
    from prompts.templating import (
        available_notes,
        available_system_prompts,
        available_tool_texts,
        render_format,
        render_note,
        render_system_prompt,
        render_tool_text,
    )

__all__ = [
    "KeepThinking",
    "PromptTemplateError",
    "available_notes",
    "available_system_prompts",
    "available_tool_texts",
    "render",
    "render_chat_template",
    "render_format",
    "render_note",
    "render_system_prompt",
    "render_tool_text",
    "template_supports_tools",
]

_LAZY = {
    "KeepThinking": "prompts.chat_format",
    "render": "prompts.chat_format",
    "PromptTemplateError": "prompts.errors",
    "render_chat_template": "prompts.hf_template",
    "template_supports_tools": "prompts.hf_template",
    "available_notes": "prompts.templating",
    "available_system_prompts": "prompts.templating",
    "available_tool_texts": "prompts.templating",
    "render_tool_text": "prompts.templating",
    "render_format": "prompts.templating",
    "render_note": "prompts.templating",
    "render_system_prompt": "prompts.templating",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'prompts' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later lookups skip this function
    return value
