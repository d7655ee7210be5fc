"""Every sentence the model reads: the QwQ-32B chat-format renderer and the system-prompt templates (*.j2)."""

from prompts.chat_format import KeepThinking, render
from prompts.errors import PromptTemplateError
from prompts.hf_template import render_chat_template
from prompts.templating import (
    available_notes,
    available_system_prompts,
    available_tool_texts,
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
    "render_note",
    "render_system_prompt",
    "render_tool_text",
]
