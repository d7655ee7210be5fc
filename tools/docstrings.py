"""Reading a tool's description and per-argument descriptions from its docstring.

Supports the three common styles, so existing functions can become tools without rewriting their docs:
Google (`Args:` section), Sphinx/reST (`:param x:` fields) and NumPy (`Parameters` underlined with dashes).
Only what the model needs is extracted: the summary text before the first section, and one line of text per
parameter (continuation lines joined). Types written in the docstring are ignored: the signature is the truth.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

__all__ = ["Docstring", "parse_docstring"]

_GOOGLE_PARAM_HEADERS = {
    "args",
    "arguments",
    "parameters",
    "params",
    "keyword args",
    "keyword arguments",
    "kwargs",
}
_GOOGLE_OTHER_HEADERS = {
    "returns", "return", "yields", "yield", "raises", "raise", "examples", "example", "note", "notes",
    "attributes", "see also", "warning", "warnings", "todo", "references", "methods",
}  # fmt: skip
_GOOGLE_HEADER = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*$")
_GOOGLE_ENTRY = re.compile(r"^\**([A-Za-z_]\w*)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_FIELD = re.compile(r"^:(\w+)(?:\s+([^:]*?))?\s*:\s*(.*)$")
_SPHINX_PARAM_FIELDS = {"param", "parameter", "arg", "argument", "key", "keyword"}
_NUMPY_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")
_NUMPY_PARAM_HEADERS = {"parameters", "other parameters", "keyword arguments"}
_NUMPY_ENTRY = re.compile(r"^\**([A-Za-z_]\w*(?:\s*,\s*\**[A-Za-z_]\w*)*)\s*(?::.*)?$")


@dataclass(frozen=True)
class Docstring:
    """What a docstring says about a tool: its description and a description per parameter name."""

    description: str = ""
    params: dict[str, str] = field(default_factory=dict)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _join(lines: list[str]) -> str:
    return " ".join(part.strip() for part in lines if part.strip())


def _section_start(lines: list[str], i: int) -> bool:
    """Whether line `i` starts a section of any style (which ends the description)."""
    stripped = lines[i].strip()
    header = _GOOGLE_HEADER.match(stripped)
    if header and header.group(1).lower() in _GOOGLE_PARAM_HEADERS | _GOOGLE_OTHER_HEADERS:
        return True
    if _SPHINX_FIELD.match(stripped):
        return True
    return bool(stripped) and i + 1 < len(lines) and bool(_NUMPY_UNDERLINE.match(lines[i + 1]))


def _google_params(lines: list[str], params: dict[str, str]) -> None:
    i = 0
    while i < len(lines):
        header = _GOOGLE_HEADER.match(lines[i].strip())
        if not header or header.group(1).lower() not in _GOOGLE_PARAM_HEADERS:
            i += 1
            continue
        base = _indent(lines[i])
        i += 1
        entry_indent: int | None = None
        name: str | None = None
        text: list[str] = []
        while i < len(lines):
            line = lines[i]
            if line.strip() and _indent(line) <= base:
                break  # dedent back to the header's level: the section is over
            if line.strip():
                if entry_indent is None:
                    entry_indent = _indent(line)
                entry = _GOOGLE_ENTRY.match(line.strip()) if _indent(line) == entry_indent else None
                if entry:
                    if name:
                        params.setdefault(name, _join(text))
                    name, text = entry.group(1), [entry.group(2)]
                elif name:
                    text.append(line)
            i += 1
        if name:
            params.setdefault(name, _join(text))


def _sphinx_params(lines: list[str], params: dict[str, str]) -> None:
    name: str | None = None
    text: list[str] = []
    field_indent = 0
    for line in [*lines, ":end:"]:
        stripped = line.strip()
        match = _SPHINX_FIELD.match(stripped)
        if match or (stripped and _indent(line) <= field_indent and name):
            if name:
                params.setdefault(name, _join(text))
            name, text = None, []
        if match:
            kind, arg, rest = match.groups()
            field_indent = _indent(line)
            if kind in _SPHINX_PARAM_FIELDS and arg:
                # `:param int x:` names the type first; the parameter is the last word.
                name, text = arg.split()[-1].lstrip("*"), [rest]
        elif name:
            text.append(line)


def _numpy_params(lines: list[str], params: dict[str, str]) -> None:
    i = 0
    while i + 1 < len(lines):
        if not (lines[i].strip().lower() in _NUMPY_PARAM_HEADERS and _NUMPY_UNDERLINE.match(lines[i + 1])):
            i += 1
            continue
        base = _indent(lines[i])
        i += 2
        names: list[str] = []
        text: list[str] = []
        while i < len(lines):
            line = lines[i]
            if line.strip() and _indent(line) <= base:
                if i + 1 < len(lines) and _NUMPY_UNDERLINE.match(lines[i + 1]):
                    break  # the next section's header
                entry = _NUMPY_ENTRY.match(line.strip())
                if entry:
                    for n in names:
                        params.setdefault(n, _join(text))
                    names = [n.strip().lstrip("*") for n in entry.group(1).split(",")]
                    text = []
            elif names:
                text.append(line)
            i += 1
        for n in names:
            params.setdefault(n, _join(text))


def parse_docstring(doc: str | None) -> Docstring:
    """Split a docstring into the tool description and per-parameter descriptions.

    The description is everything before the first recognised section (Google header such as `Args:` or
    `Returns:`, a Sphinx `:field:`, or a NumPy underlined header), with the docstring's indentation removed
    and paragraphs kept. A parameter described in several places keeps its first description.
    """
    if not doc:
        return Docstring()
    lines = inspect.cleandoc(doc).splitlines()
    end = next((i for i in range(len(lines)) if _section_start(lines, i)), len(lines))
    description = "\n".join(lines[:end]).strip()
    params: dict[str, str] = {}
    sections = lines[end:]
    _google_params(sections, params)
    _sphinx_params(sections, params)
    _numpy_params(sections, params)
    return Docstring(description=description, params={k: v for k, v in params.items() if v})
