"""System prompts and the loop's feedback notes, kept as `*.j2` files under `prompts/templates/`.

Every sentence the framework feeds the model lives in those files (design.md section 7), so wording can be
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

__all__ = ["available_notes", "available_system_prompts", "render_note", "render_system_prompt"]

_TEMPLATES = Path(__file__).parent / "templates"
_NOTES = "notes"
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


def _names(folder: Path) -> list[str]:
    return sorted(path.name.removesuffix(_SUFFIX) for path in folder.glob(f"*{_SUFFIX}"))


def available_system_prompts() -> list[str]:
    """Names accepted by `render_system_prompt`, sorted."""
    return _names(_TEMPLATES)


def available_notes() -> list[str]:
    """Names accepted by `render_note`, sorted."""
    return _names(_TEMPLATES / _NOTES)


@functools.cache
def _variables(path: str) -> frozenset[str]:
    # The variables a template reads, so that a misspelt keyword argument is caught rather than ignored.
    env = _environment()
    source, _, _ = _loader().get_source(env, path)
    return frozenset(meta.find_undeclared_variables(env.parse(source)))


def _render(kind: str, name: str, names: list[str], path: str, variables: dict[str, Any]) -> str:
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
        return _environment().get_template(path).render(**variables)
    except jinja2.UndefinedError as err:
        raise PromptTemplateError(
            f"{kind} {name!r} is missing a variable ({err.message}); it takes: {', '.join(sorted(expected))}"
        ) from err


def render_system_prompt(name: str, /, **variables: Any) -> str:
    """Render the system prompt `prompts/templates/<name>.j2` with `variables`.

    Raises `PromptTemplateError` for an unknown name (listing the available ones), a missing variable, or a
    variable the template does not use.
    """
    return _render("system prompt", name, available_system_prompts(), f"{name}{_SUFFIX}", variables)


def render_note(name: str, /, **variables: Any) -> str:
    """Render the feedback note `prompts/templates/notes/<name>.j2`: a sentence the loop shows the model.

    Same checks as `render_system_prompt`. See `available_notes()` for the names.
    """
    return _render("note", name, available_notes(), f"{_NOTES}/{name}{_SUFFIX}", variables)
