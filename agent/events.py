"""Typed events: what `StreamParser.feed` yields and what `Agent.stream` yields to a UI.

Parser-level events (deltas, parsed calls) are reused by the loop as they are, so a UI sees reasoning and
content the moment the parser does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from agent.messages import NoteMessage
from tools.types import ToolCall, ToolResult

__all__ = [
    "ContentDelta",
    "ContextCondensed",
    "Event",
    "FinalAnswer",
    "MalformedCallEvent",
    "NoteAdded",
    "ParseEvent",
    "StepEnd",
    "ThinkingDelta",
    "ToolCallFinished",
    "ToolCallParsed",
    "ToolCallStarted",
    "TurnRestarted",
    "notes_added",
]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class _TextDelta(_Event):
    type: str  # declared here so that it stays the first key, as in every event
    text: str


class ThinkingDelta(_TextDelta):
    """A piece of reasoning text, as soon as the parser knows it is reasoning."""

    type: Literal["thinking_delta"] = "thinking_delta"


class ContentDelta(_TextDelta):
    """A piece of visible text outside reasoning and outside tool-call blocks."""

    type: Literal["content_delta"] = "content_delta"


class ToolCallParsed(_Event):
    """A complete, well-formed call was read from the stream (not yet validated or run)."""

    type: Literal["tool_call_parsed"] = "tool_call_parsed"
    call: ToolCall


class MalformedCallEvent(_Event):
    """A `<tool_call>` block that could not be read; `error` is the sentence the model will see."""

    type: Literal["malformed_call"] = "malformed_call"
    raw: str
    error: str


ParseEvent = ThinkingDelta | ContentDelta | ToolCallParsed | MalformedCallEvent


class ToolCallStarted(_Event):
    type: Literal["tool_call_started"] = "tool_call_started"
    step: int
    call: ToolCall


class ToolCallFinished(_Event):
    type: Literal["tool_call_finished"] = "tool_call_finished"
    step: int
    call: ToolCall
    result: ToolResult
    duration_s: float


class NoteAdded(_Event):
    """The framework told the model something after `step`: `kind` names the note (its template in
    prompts/templates/notes), `text` is what the model reads. A UI shows it so that a person sees what the
    model was told; notes on malformed calls are not repeated here (`MalformedCallEvent` carries them)."""

    type: Literal["note_added"] = "note_added"
    step: int
    kind: str
    text: str


class TurnRestarted(_Event):
    """The model's stream broke off mid-turn (a transient failure): the turn starts again from its beginning.

    What was streamed of the broken attempt is discarded; a UI should drop the text it showed for it.
    """

    type: Literal["turn_restarted"] = "turn_restarted"
    step: int
    reason: str


class ContextCondensed(_Event):
    """Before `step`, the view the model is sent was condensed to fit its context (`agent.context`).

    `strategy`: "mask" (old tool results hidden behind a note; `masked` of them), "digest" or "summary"
    (the steps `hidden_steps` replaced by one note). Token counts are of the whole prompt.
    """

    type: Literal["context_condensed"] = "context_condensed"
    step: int
    strategy: str
    tokens_before: int
    tokens_after: int
    masked: int = 0
    hidden_steps: tuple[int, int] | None = None


class StepEnd(_Event):
    type: Literal["step_end"] = "step_end"
    step: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    duration_s: float = 0.0


class FinalAnswer(_Event):
    """The run is over; `answer` may be empty when a budget stopped it (see `stop_reason`)."""

    type: Literal["final"] = "final"
    answer: str
    stop_reason: str
    steps: int


Event = (
    ParseEvent
    | ToolCallStarted
    | ToolCallFinished
    | NoteAdded
    | TurnRestarted
    | ContextCondensed
    | StepEnd
    | FinalAnswer
)


def notes_added(step: int, messages: Sequence[object]) -> list[NoteAdded]:
    """The `NoteAdded` events for a step's messages (the loop's, live; a transcript's, on replay)."""
    return [
        NoteAdded(step=step, kind=m.kind, text=m.content)
        for m in messages
        if isinstance(m, NoteMessage) and m.kind != "malformed_call"
    ]
