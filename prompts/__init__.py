"""Every sentence the model reads: the QwQ-32B chat-format renderer and the system-prompt templates (*.j2)."""

from prompts.chat_format import KeepThinking, render
from prompts.errors import PromptTemplateError
from prompts.hf_template import render_chat_template, template_supports_tools
from prompts.templating import (
    available_notes,
    available_system_prompts,
    render_format,
    render_note,
    render_system_prompt,
)

__all__ = [
    "KeepThinking",
    "PromptTemplateError",
    "available_notes",
    "available_system_prompts",
    "render",
    "render_chat_template",
    "render_format",
    "render_note",
    "render_system_prompt",
    "template_supports_tools",
]
