"""Turning whatever a tool returned into the text the model reads, with a size cap.

`truncate_middle` is shared by sandboxes and web tools for their output caps: keeping the head and the tail
(where commands print what they are doing and how they ended) and saying exactly how much was cut lets the
model decide whether to ask for the rest, instead of silently reading a partial text.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic_core import to_jsonable_python

__all__ = [
    "DEFAULT_MAX_RESULT_CHARS",
    "MIN_MAX_CHARS",
    "NO_OUTPUT",
    "replace_surrogates",
    "to_text",
    "truncate_middle",
]

DEFAULT_MAX_RESULT_CHARS = 20_000
"""Default cap on one tool result: about 5k tokens, small next to QwQ's context, enough for a page."""

MIN_MAX_CHARS = 64
"""Smallest cap `truncate_middle` accepts: below it the marker would not fit next to any kept text."""

NO_OUTPUT = "(no output)"
"""What the model reads when a tool returned nothing, so an empty `<tool_response>` is never ambiguous."""

_SURROGATE = re.compile("[\ud800-\udfff]")

# JSON shorter than this stays on one line: indenting a small object only adds tokens.
_ONE_LINE_JSON_CHARS = 120


def replace_surrogates(text: str) -> str:
    """`text` with every lone surrogate replaced by U+FFFD; a high+low pair becomes the character it encodes.

    Outside text (a JSON page's `"\\ud800"`, a server's bytes decoded with `surrogateescape`) can carry code
    points that no UTF-8 encoder accepts; one of them in a tool result would crash the transcript writer and the
    model request that carry it, far from where it came in. So text is cleaned where it enters.
    """
    if _SURROGATE.search(text) is None:  # the usual case costs one scan and no copy
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _marker(cut: int) -> str:
    return f"\n[... {cut:,} characters cut from the middle ...]\n"


def truncate_middle(text: str, max_chars: int) -> str:
    """Return `text` if it fits in `max_chars`, else its head and tail around a marker saying what was cut.

    The result is never longer than `max_chars` (the marker counts). About half the budget goes to the head
    and half to the tail. Raises `ValueError` if `max_chars` is below `MIN_MAX_CHARS`, whatever the text, so a
    misconfigured cap is found at once rather than on the first long output.
    """
    if max_chars < MIN_MAX_CHARS:
        raise ValueError(f"max_chars must be at least {MIN_MAX_CHARS}, got {max_chars}")
    if len(text) <= max_chars:
        return text
    # The marker's length depends on the number it prints, which depends on the marker's length: iterate to
    # the fixed point (at most a couple of rounds, since the digit count changes slowly).
    cut = len(text) - max_chars
    while True:
        kept = max_chars - len(_marker(cut))
        new_cut = len(text) - kept
        if new_cut == cut:
            break
        cut = new_cut
    head = (kept + 1) // 2
    tail = kept - head
    return text[:head] + _marker(cut) + (text[len(text) - tail :] if tail else "")


def _without_surrogates(value: Any) -> Any:
    """A copy of the strings, lists, tuples and dicts in `value` with lone surrogates replaced (iteratively, so
    a deep value costs no stack); other objects are kept as they are."""
    root: list[Any] = [value]
    stack: list[tuple[Any, Any, Any]] = [(root, 0, value)]
    seen: set[int] = set()  # a structure that contains itself is copied once (pydantic then names the cycle)
    while stack:
        parent, key, item = stack.pop()
        if isinstance(item, list | tuple | dict):
            if id(item) in seen:
                continue
            seen.add(id(item))
        if isinstance(item, str):
            parent[key] = replace_surrogates(item)
        elif isinstance(item, list | tuple):
            copy = list(item)
            parent[key] = copy
            stack.extend((copy, i, child) for i, child in enumerate(copy))
        elif isinstance(item, dict):
            mapping = {replace_surrogates(k) if isinstance(k, str) else k: v for k, v in item.items()}
            parent[key] = mapping
            stack.extend((mapping, k, child) for k, child in mapping.items())
    return root[0]


def _json_text(value: Any) -> str:
    # `fallback=str` keeps serialisation total: an object pydantic cannot encode is shown by its str().
    try:
        data = to_jsonable_python(value, fallback=str)
    except UnicodeEncodeError:  # pydantic refuses lone surrogates (a file name read with surrogateescape)
        data = to_jsonable_python(_without_surrogates(value), fallback=str)
    compact = json.dumps(data, ensure_ascii=False)
    # Indent only where it helps reading: long objects, or long lists of structures. A long flat list of
    # scalars would become one line per number, many more tokens for nothing.
    nested = isinstance(data, dict) or (
        isinstance(data, list) and any(isinstance(x, dict | list) for x in data)
    )
    if len(compact) <= _ONE_LINE_JSON_CHARS or not nested:
        return compact
    return json.dumps(data, ensure_ascii=False, indent=2)


def to_text(value: Any, max_chars: int | None = DEFAULT_MAX_RESULT_CHARS) -> str:
    """Serialise a tool's return value to the text shown to the model, capped by `truncate_middle`.

    - `str`: as is (an empty string reads as `NO_OUTPUT`);
    - `None`: `NO_OUTPUT`;
    - `bytes`, `bytearray`, `memoryview`: a short note with the size, since raw bytes mean nothing to the
      model;
    - anything else (pydantic models, dataclasses, dicts, lists, numbers, booleans, enums, dates, ...): JSON
      with non-ASCII characters kept, on one line when short or a flat list, else indented by 2.

    `max_chars=None` disables the cap.
    """
    if isinstance(value, str):
        text = value or NO_OUTPUT
    elif value is None:
        text = NO_OUTPUT
    elif isinstance(value, bytes | bytearray | memoryview):
        text = f"({memoryview(value).nbytes:,} bytes of binary data, not shown)"
    else:
        text = _json_text(value)
    return text if max_chars is None else truncate_middle(text, max_chars)
