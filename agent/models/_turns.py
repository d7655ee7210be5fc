"""The QwQ turn policy: what every backend (and the parser) agrees a model turn looks like.

One place for the tags of QwQ-32B's output format, for `ToolChoice` and what each choice forces, for the
thinking-budget rule and for the two pieces of text a backend writes into a turn on the model's behalf: the
sentence that closes reasoning when its budget is spent, and the opening of a call that `tool_choice` forces.
Both backends used to hold their own copies; a change to the format is now a change here.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "CALL_CLOSE",
    "CALL_OPEN",
    "CALL_WRAPPERS",
    "END_TOKENS",
    "GRAMMAR_CALL_CLOSE",
    "RESPONSE_OPEN",
    "THINK_CLOSE",
    "THINK_OPEN",
    "THINK_OPEN_LINE",
    "CallOpening",
    "ToolChoice",
    "closing_text",
    "detect_call_opening",
    "effective_thinking_budget",
    "open_call_text",
    "tag_completed",
]

THINK_OPEN: Final = "<think>"
THINK_OPEN_LINE: Final = "<think>\n"
"""How QwQ's generation prompt ends: the model's output starts inside its reasoning."""
THINK_CLOSE: Final = "</think>"
CALL_OPEN: Final = "<tool_call>"
CALL_CLOSE: Final = "</tool_call>"
GRAMMAR_CALL_CLOSE: Final = "\n" + CALL_CLOSE
"""What constrained decoding makes the model write after a call's JSON."""
RESPONSE_OPEN: Final = "<tool_response>"
"""The model has started to invent a tool's answer: the turn is cut here."""
END_TOKENS: Final = ("<|im_end|>", "<|im_start|>", "<|endoftext|>")
"""Special tokens that end a turn when a server leaves them in the text."""

_Mode = Literal["auto", "none", "required", "named"]


@dataclass(frozen=True, slots=True)
class ToolChoice:
    """Whether and which tools a turn may or must call: "auto", "none", "required", or one tool's name.

    Built with `ToolChoice.of(value)` from the strings users write; the backends and the loop ask it
    questions (`forced`, `allows_calls`, `only`) instead of comparing strings.
    """

    mode: _Mode = "auto"
    name: str | None = None

    @classmethod
    def of(cls, value: str | ToolChoice) -> ToolChoice:
        if isinstance(value, ToolChoice):
            return value
        if not isinstance(value, str) or not value:
            raise ValueError(f"tool_choice must be 'auto', 'none', 'required' or a tool name; got {value!r}")
        if value in ("auto", "none", "required"):
            return cls(mode=value)  # type: ignore[arg-type]
        return cls(mode="named", name=value)

    @property
    def forced(self) -> bool:
        """The turn must call a tool ("required" or a named tool)."""
        return self.mode in ("required", "named")

    @property
    def allows_calls(self) -> bool:
        return self.mode != "none"

    @property
    def only(self) -> str | None:
        """The one tool a named choice allows, else None."""
        return self.name if self.mode == "named" else None

    def without_tools(self, has_tools: bool) -> ToolChoice:
        """With no tools offered nothing can be called, whatever was asked."""
        return self if has_tools else ToolChoice("none")

    def __str__(self) -> str:
        return self.name if self.mode == "named" and self.name is not None else self.mode


def effective_thinking_budget(requested: int | None, default: int | None) -> int | None:
    """The request's thinking budget wins over the backend's default; None means unbounded."""
    return requested if requested is not None else default


def _lead(text: str) -> str:
    """The newlines that put what follows `text` on a paragraph of its own."""
    if text.endswith("\n\n"):
        return ""
    return "\n" if text.endswith("\n") else "\n\n"


def closing_text(text_so_far: str) -> str:
    """What ends reasoning whose budget is spent: the note `thinking_budget`, then `</think>`."""
    import prompts

    sentence = prompts.render_note("thinking_budget").strip()
    return f"{_lead(text_so_far)}{sentence}\n{THINK_CLOSE}\n\n"


def open_call_text(text_so_far: str, opener: str = CALL_OPEN) -> str:
    """What a backend writes to open a call that `tool_choice` forces, on a paragraph of its own."""
    return ("" if text_so_far.endswith("\n\n") else "\n\n") + opener


def tag_completed(window: str, added: int, tag: str) -> bool:
    """Whether `tag` ends within the last `added` characters of `window`.

    Tags span several tokens in many vocabularies (Qwen2.5 writes `</think>\\n` as `</`, `think`, `>\\n`),
    and the token that completes a tag may carry text after it, so detection works on decoded text: a tag
    counts once its last character has arrived, wherever in the newest piece that is.
    """
    if added <= 0:
        return False
    start = max(0, len(window) - added - len(tag) + 1)
    return window.find(tag, start) >= 0


# -- call openings ----------------------------------------------------------------------------------------------
# Real models do not always write `<tool_call>`. Qwen2.5-Coder, offered tools, wrote `<tools>{...}</tools>`,
# fenced ```json blocks and bare JSON lines; llama.cpp's Hermes-2-Pro parser accepts these wrappers too.
CALL_WRAPPERS: Final = (
    "tool_call",
    "function_call",
    "tools",
    "tool",
    "function",
    "functions",
    "response",
    "json",
    "xml",
)
"""Tag names whose `<NAME>...</NAME>` may hold a call object (the first is the format's own)."""

_WRAPPER_ALT = "|".join(CALL_WRAPPERS)
# A call object begun in the answer: an optional wrapper tag, an optional fence, then `{"name": "` and the
# part of the name written so far. Anchored at a line start so that JSON inside prose is left alone.
_OPENING = re.compile(
    r"\n[ \t]*(?:<(?P<tag>" + _WRAPPER_ALT + r")>\s*)?(?P<fence>```(?:json|xml)?[ \t]*\n\s*)?"
    r'\{\s*"name"\s*:\s*"(?P<partial>[^"\n\\]{0,64})$'
)
_FUNCTION_TAG = re.compile(r"<function=(?P<name>[^<>\s]{1,64})>$")
_OPENING_WINDOW: Final = 400


@dataclass(frozen=True, slots=True)
class CallOpening:
    """The answer just began a tool call, and how constrained decoding should continue it.

    `partial_name` is None when the call's opener (`<tool_call>`) was just completed and the body starts
    fresh; otherwise the model already wrote `{"name": "` plus `partial_name`, and the grammar continues the
    name from there. `arguments_of` names the tool of a `<function=NAME>` opener, whose body is the
    arguments object alone. `closer` is what ends the call (`\\n</tool_call>`, a fence, a tag, or nothing);
    `lead` is what the grammar writes before the body (the newline after `<tool_call>`, unless the model
    already wrote one).
    """

    closer: str
    partial_name: str | None = None
    arguments_of: str | None = None
    lead: str = ""


def detect_call_opening(
    answer: str, added: int, tool_names: Sequence[str], *, whole: bool = True, end: int | None = None
) -> CallOpening | None:
    """Whether the newest `added` characters of `answer[:end]` (text after the reasoning) opened a call.

    Only calls naming one of `tool_names` count, so a JSON example in prose is not forced into a call.
    `whole` says that `answer` starts where the answer starts (a line start); callers that keep only the
    latest part of a long answer pass False.
    """
    if added <= 0 or not tool_names:
        return None
    end = len(answer) if end is None else end
    begin = max(0, end - _OPENING_WINDOW)
    tail = ("\n" if whole and begin == 0 else "") + answer[begin:end]
    if tag_completed(tail, added, CALL_OPEN):
        after = tail[tail.rfind(CALL_OPEN) + len(CALL_OPEN) :]
        if not after.strip():
            return CallOpening(closer=GRAMMAR_CALL_CLOSE, lead="" if after else "\n")
    if '"' in tail[-added - 1 :]:
        match = _OPENING.search(tail)
        if match is not None and any(n.startswith(match["partial"]) for n in tool_names):
            tag, fence = match["tag"], match["fence"]
            # A bare JSON line ends with its line: the newline tells the grammar's end from the object's.
            closer = ("\n```" if fence else "") + (f"\n</{tag}>" if tag else "") or "\n"
            return CallOpening(closer=closer, partial_name=match["partial"])
    if tail.endswith(">"):
        match = _FUNCTION_TAG.search(tail)
        if match is not None and match["name"] in tool_names:
            return CallOpening(closer="</function>", arguments_of=match["name"])
    return None
