"""Turn whatever callers hand us into one internal shape: typed messages, OpenAI dicts, tools of any kind.

`prompts` may not import `agent` or `tools` (dependencies point the other way), so messages are read by duck
typing: a mapping, or anything with `model_dump()` returning one. Tools are anything with `to_openai()` or an
OpenAI tool dict. Everything is converted once, up front, into the frozen dataclasses below so that the
renderers never look at raw dicts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Call",
    "Turn",
    "normalize_messages",
    "normalize_tools",
    "template_messages",
]

_ROLES = ("system", "user", "assistant", "tool", "note")

# Where reasoning may arrive, in order of preference: the typed AssistantMessage dumps `thinking`;
# OpenAI-style servers (vLLM, SGLang, DeepSeek's API) use `reasoning_content`; newer ones use `reasoning`.
_THINKING_KEYS = ("thinking", "reasoning_content", "reasoning")


@dataclass(frozen=True, slots=True)
class Call:
    """One tool call as the chat format writes it: a name and (normally) an argument object."""

    name: str
    # A dict in every sane case; a str only when the caller gave a string that does not decode to an object,
    # which is then written as a JSON string, exactly as HF's template would (see `_arguments`).
    arguments: Any


@dataclass(frozen=True, slots=True)
class Turn:
    """One message, normalised. `thinking` is only non-empty when the caller gave reasoning separately."""

    role: str
    content: str
    thinking: str = ""
    tool_calls: tuple[Call, ...] = ()
    raw: str | None = None
    # Kept only to hand templates the ids/names they may print (`render_chat_template`); QwQ ignores them.
    name: str = ""
    tool_call_id: str = ""
    call_ids: tuple[str, ...] = ()
    # The framework's own note (role "note" on input): where tool results go, unless a renderer says otherwise.
    note: bool = False

    @property
    def original(self) -> str:
        """The content string the official template would see: what the model generated after `<think>\\n`.

        QwQ's template knows no separate reasoning field; it finds reasoning by splitting `content` on
        `</think>`. A message whose reasoning was given apart is therefore re-joined the way QwQ writes it.
        """
        if self.thinking:
            return f"{self.thinking}\n</think>\n\n{self.content}"
        return self.content


def _as_mapping(item: Any, what: str) -> Mapping[str, Any]:
    # Plain dicts first: the ABC check below is slow, and this runs for every message at every step.
    if type(item) is dict or isinstance(item, Mapping):
        return item
    dump = getattr(item, "model_dump", None)
    if callable(dump):
        dumped = dump()
        if isinstance(dumped, Mapping):
            return dumped
    raise TypeError(f"{what} must be a dict or have model_dump() returning one; got {type(item).__name__}")


def _text(value: Any, where: str) -> str:
    """Content as a string: None is empty (OpenAI's tool-call turns), lists of text parts are joined."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Sequence):
        # OpenAI's content-parts form; QwQ is text-only, so anything but text is a caller error.
        parts: list[str] = []
        for part in value:
            part_map = _as_mapping(part, f"a content part of {where}")
            if part_map.get("type", "text") != "text" or not isinstance(part_map.get("text"), str):
                raise TypeError(f"{where}: only text content parts can be rendered for QwQ; got {part_map!r}")
            parts.append(part_map["text"])
        return "".join(parts)
    raise TypeError(f"{where}: content must be a string, None or text parts; got {type(value).__name__}")


def _arguments(value: Any) -> Any:
    """Arguments as an object, never encoded twice.

    OpenAI wire format carries arguments as a JSON string; the chat template writes them with `tojson`, so a
    string would come out quoted and escaped (`"{\\"a\\": 1}"`), which the model never saw. A string that
    decodes to an object is decoded. A string that does not (truncated JSON, a bare number) is kept as the
    string: nothing is invented, and the result is what HF's own renderer gives for that input. Missing or
    empty arguments mean a call without arguments: `{}`.
    """
    if type(value) is dict:
        # The usual case, checked first (the Mapping check below is slow). Not copied: rendering only reads.
        return value
    if value is None:
        return {}
    if isinstance(value, str):
        if not value.strip():
            return {}
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, dict) else value
    if isinstance(value, Mapping):
        return dict(value)
    return value


def _call(item: Any, where: str) -> tuple[Call, str]:
    data = _as_mapping(item, f"a tool call of {where}")
    # OpenAI nests name and arguments under "function"; the typed ToolCall has them at the top level.
    function = data.get("function")
    source = _as_mapping(function, f"a tool call's function in {where}") if function is not None else data
    name = source.get("name")
    if not isinstance(name, str):
        raise TypeError(f"{where}: a tool call needs a string name; got {name!r}")
    call_id = data.get("id") or ""
    return Call(name=name, arguments=_arguments(source.get("arguments"))), str(call_id)


def _thinking(data: Mapping[str, Any]) -> str:
    for key in _THINKING_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value:
            return value
    return ""


def normalize_messages(messages: Iterable[Any]) -> list[Turn]:
    """Validate and convert every message; raises TypeError/ValueError naming the offending message."""
    turns: list[Turn] = []
    for index, item in enumerate(messages):
        where = f"message {index}"
        data = _as_mapping(item, where)
        role = data.get("role")
        if role not in _ROLES:
            raise ValueError(f"{where}: role must be one of {', '.join(_ROLES)}; got {role!r}")
        content = _text(data.get("content"), where)
        note = role == "note"
        if note:
            # The framework's own observations (a malformed call, a budget, a refusal) reach the model
            # where tool results do: QwQ's format has no other place for them.
            role = "tool"
        if role != "assistant":
            turns.append(
                Turn(
                    role=role,
                    content=content,
                    name=str(data.get("name") or ""),
                    tool_call_id=str(data.get("tool_call_id") or ""),
                    note=note,
                )
            )
            continue
        calls_and_ids = [_call(call, where) for call in data.get("tool_calls") or ()]
        raw = data.get("raw")
        turns.append(
            Turn(
                role=role,
                content=content,
                thinking=_thinking(data),
                tool_calls=tuple(call for call, _ in calls_and_ids),
                raw=raw if isinstance(raw, str) else None,
                call_ids=tuple(call_id for _, call_id in calls_and_ids),
            )
        )
    return turns


def normalize_tools(tools: Iterable[Any] | None) -> list[dict[str, Any]]:
    """Tools as OpenAI tool dicts `{"type": "function", "function": {...}}`, key order as given."""
    if tools is None:
        return []
    result: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        to_openai = getattr(tool, "to_openai", None)
        if callable(to_openai):
            tool = to_openai()
        if not isinstance(tool, Mapping):
            raise TypeError(
                f"tool {index} must be an OpenAI tool dict or have to_openai(); got {type(tool).__name__}"
            )
        if "function" in tool:
            result.append(dict(tool))
        elif "name" in tool:
            # A bare function schema: wrap it the way every OpenAI client would send it.
            result.append({"type": "function", "function": dict(tool)})
        else:
            raise ValueError(f"tool {index} has neither 'function' nor 'name': {dict(tool)!r}")
    return result


def template_messages(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """The messages a Hugging Face chat template receives: plain OpenAI dicts, arguments as objects.

    Reasoning travels inside `content`, before `</think>`, as the model wrote it. That is what QwQ's template
    expects, and templates that read a separate `reasoning_content` (Qwen3, DeepSeek-R1) fall back to the same
    split when the field is absent; giving both would make those print the reasoning twice. `raw` is passed on
    when known so a template may reproduce the generated text exactly; other templates ignore the key.
    """
    result: list[dict[str, Any]] = []
    for turn in turns:
        message: dict[str, Any] = {"role": turn.role, "content": turn.original}
        if turn.role == "tool":
            if turn.name:
                message["name"] = turn.name
            if turn.tool_call_id:
                message["tool_call_id"] = turn.tool_call_id
        if turn.tool_calls:
            message["tool_calls"] = [
                {
                    "id": call_id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call, call_id in zip(turn.tool_calls, turn.call_ids, strict=True)
            ]
        if turn.raw is not None:
            message["raw"] = turn.raw
        result.append(message)
    return result
