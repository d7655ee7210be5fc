"""Typed chat messages: the only form history takes inside the framework.

The history of a run is a list of these, only ever appended to. They dump (`model_dump()`) to OpenAI-style
dicts that `prompts.render` also accepts, which is how `prompts` reads them without importing `agent`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from tools.types import ToolCall

__all__ = [
    "AssistantMessage",
    "Message",
    "NoteMessage",
    "SystemMessage",
    "ToolMessage",
    "UserMessage",
    "message_from_dict",
]


class SystemMessage(BaseModel):
    model_config = ConfigDict(frozen=True)
    role: Literal["system"] = "system"
    content: str


class UserMessage(BaseModel):
    model_config = ConfigDict(frozen=True)
    role: Literal["user"] = "user"
    content: str


class AssistantMessage(BaseModel):
    """One model turn.

    `thinking` is the reasoning (without `<think>` tags), `content` the visible text without the tool-call
    blocks, `tool_calls` the executed calls. `raw`, when known, is the exact text the model generated after
    the prompt's `<think>\\n` (stop token excluded, cut at an invented `<tool_response>`): renderers that keep
    reasoning use it so the prompt grows by exactly what the model wrote, which keeps the KV cache reusable.
    """

    model_config = ConfigDict(frozen=True)
    role: Literal["assistant"] = "assistant"
    content: str = ""
    thinking: str = ""
    tool_calls: list[ToolCall] = Field(default_factory=list)
    raw: str | None = None


class ToolMessage(BaseModel):
    """The observation for one call; consecutive tool messages share one user turn, in call order."""

    model_config = ConfigDict(frozen=True)
    role: Literal["tool"] = "tool"
    content: str
    name: str = ""
    tool_call_id: str = ""
    is_error: bool = False


class NoteMessage(BaseModel):
    """What the framework itself tells the model: a malformed call, a refused call, a reminder, a stop.

    Not a tool result (no call produced it), so chat APIs get it as a user message rather than an orphan tool
    message; QwQ's format shows it where tool results go, in a `<tool_response>` block of the next user turn.
    `kind` names the note (its template in prompts/templates/notes), for transcripts and UIs.
    """

    model_config = ConfigDict(frozen=True)
    role: Literal["note"] = "note"
    content: str
    kind: str = ""


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage | NoteMessage,
    Field(discriminator="role"),
]

_MESSAGE_ADAPTER: TypeAdapter[Message] = TypeAdapter(Message)


def message_from_dict(data: dict[str, Any]) -> Message:
    """Validate a dumped message (from a transcript) back into its typed form."""
    return _MESSAGE_ADAPTER.validate_python(data)
