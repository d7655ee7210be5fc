"""JSON exactly as Hugging Face's chat-template `tojson` writes it.

One function shared by the QwQ renderer and the jinja environment, so the two can never drift apart: the
byte-for-byte promise of `prompts.render` rests on both writing tool schemas and arguments identically.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["to_json"]

# The common call (no options) reuses one encoder: json.dumps builds a new one whenever an option differs
# from its defaults, and ensure_ascii=False always does. Rendering writes every argument object of every
# turn at every step, so this is most of the JSON cost.
_PLAIN = json.JSONEncoder(ensure_ascii=False)


def to_json(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Serialise like HF's `tojson` filter: keys in given order, `", "`/`": "`, non-ASCII and `<>&'` kept.

    The signature mirrors HF's filter (positional order included) because templates call it as
    `x | tojson(indent=2)` and some pass the options positionally. Jinja's own `tojson` would sort nothing but
    escape `<`, `>`, `&` and `'` as `\\u003c`..., which the model never saw in training.
    """
    if not ensure_ascii and indent is None and separators is None and not sort_keys:
        return _PLAIN.encode(value)
    return json.dumps(
        value,
        ensure_ascii=ensure_ascii,
        indent=indent,
        separators=separators,
        sort_keys=sort_keys,
    )
