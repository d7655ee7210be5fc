"""Render any model's own chat template (as GGUF files and tokenizer_config.json carry it) like Hugging Face.

Templates are untrusted text from model files, so they run in jinja2's immutable sandbox. The environment
reproduces what `transformers`' `apply_chat_template` sets up, since template authors test against that:
`trim_blocks`/`lstrip_blocks`, the `loopcontrols` extension, a `tojson` that keeps key order and neither
escapes HTML nor non-ASCII, `raise_exception`, `strftime_now`, and a `{% generation %}` block that renders
its body unchanged.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal, NoReturn

import jinja2
from jinja2 import meta, nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment

from prompts._json import to_json
from prompts._normalize import normalize_messages, normalize_tools, template_messages
from prompts._tool_prompt import fold_tools
from prompts.errors import PromptTemplateError

__all__ = ["render_chat_template", "template_supports_tools"]


class _GenerationBlock(Extension):
    """`{% generation %}...{% endgeneration %}`: HF uses it to mark assistant tokens for training masks.

    Rendering text does not need the marks, only that templates using the tag compile; the body is spliced in
    as if the tags were not there.
    """

    tags = {"generation"}  # noqa: RUF012 (jinja reads this class attribute; its type is set by Extension)

    def parse(self, parser: Parser) -> list[nodes.Node]:
        next(parser.stream)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


class _Namespace(jinja2.utils.Namespace):
    """`namespace()` that refuses underscore attributes, which are the usual way out of a sandbox."""

    def __init__(*args: Any, **kwargs: Any) -> None:
        # Same positional trick as jinja's Namespace, so that `namespace(self=...)` keeps working.
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"a chat template may not set {name!r} on a namespace")


def _raise_exception(message: str) -> NoReturn:
    # Templates call this to reject a conversation they cannot format ("roles must alternate", ...).
    raise PromptTemplateError(f"the chat template rejected the conversation: {message}")


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


@functools.cache
def _environment() -> ImmutableSandboxedEnvironment:
    # Built on first use, not at import time: importing `prompts` must stay free of side effects.
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[_GenerationBlock, loopcontrols],
    )
    env.filters["tojson"] = to_json
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _Namespace
    return env


@functools.lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    # An agent renders the same template once per step; compiling is far slower than rendering.
    try:
        return _environment().from_string(template)
    except jinja2.TemplateSyntaxError as err:
        message = f"the chat template does not compile: line {err.lineno}: {err.message}"
        raise PromptTemplateError(message) from err


@functools.lru_cache(maxsize=32)
def template_supports_tools(template: str) -> bool:
    """Whether a chat template renders a tool list itself (it reads the `tools` variable)."""
    env = _environment()
    try:
        return "tools" in meta.find_undeclared_variables(env.parse(template))
    except jinja2.TemplateSyntaxError as err:
        raise PromptTemplateError(
            f"the chat template does not compile: line {err.lineno}: {err.message}"
        ) from err


def render_chat_template(
    template: str,
    messages: Iterable[Any],
    tools: Iterable[Any] | None = None,
    *,
    add_generation_prompt: bool = True,
    tool_prompt: bool | None = None,
    notes_as: Literal["tool", "user"] = "tool",
    **extra: Any,
) -> str:
    """Render `template` (a model's jinja chat template) for `messages` and `tools`, as Hugging Face would.

    Messages and tools are accepted and normalised as `prompts.render` accepts them: the template sees plain
    OpenAI dicts, tool-call arguments as objects, and reasoning inside `content` before `</think>` (which is
    where QwQ's, Qwen3's and DeepSeek-R1's templates look for it). `extra` reaches the template as variables
    (`bos_token`, `enable_thinking`, ...). Raises `PromptTemplateError` when the template does not compile,
    calls `raise_exception`, or fails while rendering.

    Templates without tool support (plain ChatML, say) would drop the tools, the calls and the results.
    With `tool_prompt=True`, or by default when tools are given and the template does not read `tools`,
    the conversation is folded first: the tool list and the `<tool_call>` convention join the system
    message (`prompts/templates/formats/tool_use.j2`), calls are written into the assistant turns as
    `<tool_call>` blocks, and each run of results becomes one user turn of `<tool_response>` blocks.

    The framework's notes (role "note") go where tool results do, or with `notes_as="user"` are user
    messages, as chat APIs receive them. Models that answer without reasoning want the latter: Qwen2.5-Coder
    0.5B ignored a sentence inside `<tool_response>` that it followed as a user message (0 and 5 of 5
    samples, measured). Reasoning models want the former: Qwen3's template keeps the reasoning of the turns
    after the last user message, and a note there would drop the reasoning of the calls before it.
    """
    compiled = _compile(template)
    variables: dict[str, Any] = {"documents": None, **extra}
    tool_dicts = normalize_tools(tools) if tools is not None else None
    turns = normalize_messages(messages)
    if notes_as == "user":
        turns = [dataclasses.replace(t, role="user", note=False) if t.note else t for t in turns]
    if tool_prompt is None:
        tool_prompt = bool(tool_dicts) and not template_supports_tools(template)
    if tool_prompt:
        rendered_messages = fold_tools(turns, tool_dicts or [])
        tool_dicts = None
    else:
        rendered_messages = template_messages(turns)
    try:
        return compiled.render(
            messages=rendered_messages,
            tools=tool_dicts,
            add_generation_prompt=add_generation_prompt,
            **variables,
        )
    except PromptTemplateError:
        raise
    except jinja2.TemplateError as err:
        raise PromptTemplateError(f"the chat template failed while rendering: {err}") from err
