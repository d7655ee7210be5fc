"""System prompts, the loop's feedback notes and the tools' texts, kept as `*.j2` files under `prompts/templates/`.

Every sentence the framework feeds the model lives in those files (docs/architecture.md), so wording can be
reviewed and changed in one place. They render with StrictUndefined and an exact variable check: a template
that would silently print an empty hole, or a caller passing a misspelt variable, fails loudly instead.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from prompts.errors import PromptTemplateError

__all__ = [
    "available_notes",
    "available_system_prompts",
    "available_tool_texts",
    "render_format",
    "render_note",
    "render_system_prompt",
    "render_tool_text",
]

_TEMPLATES = Path(__file__).parent / "templates"
_NOTES = "notes"
_NOTES_FOLDER = _TEMPLATES / _NOTES
_FORMATS = "formats"
_FORMATS_FOLDER = _TEMPLATES / _FORMATS
_TOOLS = "tools"
_TOOLS_FOLDER = _TEMPLATES / _TOOLS
_SUFFIX = ".j2"


@functools.cache
def _loader() -> jinja2.FileSystemLoader:
    return jinja2.FileSystemLoader(_TEMPLATES)


@functools.cache
def _environment() -> jinja2.Environment:
    # Built on first use: importing `prompts` must not touch the file system.
    return jinja2.Environment(
        loader=_loader(),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        autoescape=False,
    )


# The template files ship with the package and do not change while it runs, so the folder listings, the
# variable sets and the compiled templates are each computed once. A note is rendered on the hot path of the
# agent loop (the parser's error sentences), where a directory listing per call would dominate.
@functools.cache
def _names(folder: Path) -> tuple[str, ...]:
    return tuple(sorted(path.name.removesuffix(_SUFFIX) for path in folder.glob(f"*{_SUFFIX}")))


@functools.cache
def _nested_names(folder: Path) -> tuple[str, ...]:
    # "family/name" for every template one folder down: one folder per tool family.
    return tuple(
        sorted(
            f"{path.parent.name}/{path.name.removesuffix(_SUFFIX)}" for path in folder.glob(f"*/*{_SUFFIX}")
        )
    )


def available_system_prompts() -> list[str]:
    """Names accepted by `render_system_prompt`, sorted."""
    return list(_names(_TEMPLATES))


def available_notes() -> list[str]:
    """Names accepted by `render_note`, sorted."""
    return list(_names(_NOTES_FOLDER))


def available_tool_texts() -> list[str]:
    """Names accepted by `render_tool_text` ("family/name"), sorted."""
    return list(_nested_names(_TOOLS_FOLDER))


@functools.cache
def _variables(path: str) -> frozenset[str]:
    # The variables a template reads, so that a misspelt keyword argument is caught rather than ignored.
    env = _environment()
    source, _, _ = _loader().get_source(env, path)
    return frozenset(meta.find_undeclared_variables(env.parse(source)))


@functools.cache
def _template(path: str) -> jinja2.Template:
    # Compiled once: `get_template` would otherwise check the file's modification time on every render.
    return _environment().get_template(path)


def _render(kind: str, name: str, names: tuple[str, ...], path: str, variables: dict[str, Any]) -> str:
    if name not in names:
        raise PromptTemplateError(f"no {kind} named {name!r}; available: {', '.join(names) or '(none)'}")
    expected = _variables(path)
    unexpected = sorted(set(variables) - expected)
    if unexpected:
        # A misspelt optional variable would otherwise be ignored without a trace.
        raise PromptTemplateError(
            f"{kind} {name!r} takes no variable {', '.join(unexpected)}; "
            f"it takes: {', '.join(sorted(expected)) or '(none)'}"
        )
    try:
        return _template(path).render(**variables)
    except jinja2.UndefinedError as err:
        raise PromptTemplateError(
            f"{kind} {name!r} is missing a variable ({err.message}); it takes: {', '.join(sorted(expected))}"
        ) from err


def render_system_prompt(name: str, /, **variables: Any) -> str:
    """Render the system prompt `prompts/templates/<name>.j2` with `variables`.

    Raises `PromptTemplateError` for an unknown name (listing the available ones), a missing variable, or a
    variable the template does not use.
    """
    return _render("system prompt", name, _names(_TEMPLATES), f"{name}{_SUFFIX}", variables)


def render_note(name: str, /, **variables: Any) -> str:
    """Render the feedback note `prompts/templates/notes/<name>.j2`: a sentence the loop shows the model.

    Same checks as `render_system_prompt`. See `available_notes()` for the names.
    """
    return _render("note", name, _names(_NOTES_FOLDER), f"{_NOTES}/{name}{_SUFFIX}", variables)


def render_format(name: str, /, **variables: Any) -> str:
    """Render `prompts/templates/formats/<name>.j2`: text that frames a conversation for a chat format.

    Same checks as `render_system_prompt`.
    """
    return _render("format text", name, _names(_FORMATS_FOLDER), f"{_FORMATS}/{name}{_SUFFIX}", variables)


def render_tool_text(name: str, /, **variables: Any) -> str:
    """Render `prompts/templates/tools/<family>/<name>.j2`: a tool's description or a sentence a built-in tool
    shows the model (an error, a note about what was cut), e.g. `render_tool_text("web/refused", ...)`.

    Same checks as `render_system_prompt`. See `available_tool_texts()` for the names.
    """
    return _render("tool text", name, _nested_names(_TOOLS_FOLDER), f"{_TOOLS}/{name}{_SUFFIX}", variables)
