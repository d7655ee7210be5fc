"""Making the JSON Schemas pydantic generates compact and readable for the model.

The schema of every tool is written into the system prompt on every turn, so each token counts and noise
misleads: pydantic's `title` keys repeat the property names, `$ref`/`$defs` indirection makes the model look
elsewhere, and `anyOf` of bare types is longer than a type list. `compact_schema` removes or rewrites these
without changing what the schema accepts.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["compact_schema"]

# Keywords whose value maps names to subschemas: their keys are data (a property may be called "title").
_SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
# Keywords whose value is one subschema or a list of subschemas.
_SCHEMA_VALUES = (
    "items", "prefixItems", "additionalProperties", "unevaluatedProperties", "unevaluatedItems", "contains",
    "propertyNames", "not", "if", "then", "else", "anyOf", "oneOf", "allOf",
)  # fmt: skip
# Order in which a reader wants to see a schema's keys: what it is first, details after, the default last.
_KEY_ORDER = (
    "type", "description", "enum", "const", "format", "properties", "required", "items", "prefixItems",
    "minItems", "maxItems", "uniqueItems", "minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum",
    "multipleOf", "minLength", "maxLength", "pattern", "anyOf", "oneOf", "allOf", "additionalProperties",
)  # fmt: skip
_RANK = {key: rank for rank, key in enumerate(_KEY_ORDER)}
_DEFS_PREFIX = "#/$defs/"


def _ordered(node: dict[str, Any]) -> dict[str, Any]:
    tail = {"default": node["default"]} if "default" in node else {}
    rest = [k for k in node if k != "default"]
    rest.sort(key=lambda k: _RANK.get(k, len(_RANK)))
    return {**{k: node[k] for k in rest}, **tail}


def _refs(schema: Any) -> set[str]:
    """Names of the `#/$defs/` definitions a schema refers to, at any depth."""
    if isinstance(schema, dict):
        found = {n for k, v in schema.items() if k != "$ref" for n in _refs(v)}
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS_PREFIX):
            found.add(ref[len(_DEFS_PREFIX) :])
        return found
    if isinstance(schema, list):
        return {n for item in schema for n in _refs(item)}
    return set()


def _recursive(defs: dict[str, Any]) -> set[str]:
    """Definitions that reach themselves through references: these cannot be inlined."""
    edges = {name: _refs(body) for name, body in defs.items()}
    result = set()
    for start in defs:
        seen: set[str] = set()
        todo = list(edges[start])
        while todo:
            name = todo.pop()
            if name == start:
                result.add(start)
                break
            if name in seen or name not in edges:
                continue
            seen.add(name)
            todo.extend(edges[name])
    return result


class _Compactor:
    def __init__(self, defs: dict[str, Any]) -> None:
        self.defs = defs
        # Recursive definitions stay in $defs and are referenced; the stack check below is a second guard.
        self.recursive = _recursive(defs)
        self.kept: set[str] = set()

    def node(self, schema: Any, stack: frozenset[str]) -> Any:
        if not isinstance(schema, dict):
            return schema
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS_PREFIX) and ref[len(_DEFS_PREFIX) :] in self.defs:
            name = ref[len(_DEFS_PREFIX) :]
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            if name in stack or name in self.recursive:
                self.kept.add(name)
                resolved: dict[str, Any] = {"$ref": ref}
            else:
                resolved = dict(self.node(self.defs[name], stack | {name}))
            # Keys next to the $ref (the field's description, its default) describe this use: they win.
            resolved.update(self.node(siblings, stack))
            return _ordered(resolved)
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "title" and isinstance(value, str):
                continue
            if key in _SCHEMA_MAPS and isinstance(value, dict):
                out[key] = {name: self.node(sub, stack) for name, sub in value.items()}
            elif key in _SCHEMA_VALUES and isinstance(value, list):
                out[key] = [self.node(sub, stack) for sub in value]
            elif key in _SCHEMA_VALUES:
                out[key] = self.node(value, stack)
            else:
                out[key] = value
        return _ordered(_simplify(out))


def _simplify(node: dict[str, Any]) -> dict[str, Any]:
    # {"anyOf": [{"type": "integer"}, {"type": "null"}]} -> {"type": ["integer", "null"]}: same meaning,
    # shorter.
    any_of = node.get("anyOf")
    if (
        isinstance(any_of, list)
        and any_of
        and "type" not in node
        and all(isinstance(s, dict) and set(s) == {"type"} and isinstance(s["type"], str) for s in any_of)
    ):
        node = {k: v for k, v in node.items() if k != "anyOf"}
        node["type"] = [s["type"] for s in any_of]
    # A lone allOf wrapper (older pydantic's way to attach a description to a $ref) adds nothing.
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        inner = all_of[0]
        if not set(inner) & (set(node) - {"allOf"}):
            node = {**inner, **{k: v for k, v in node.items() if k != "allOf"}}
    return node


def compact_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Return a compact equivalent of a JSON Schema (the input is not modified).

    Drops `title` annotations; inlines `#/$defs/...` references, keeping in `$defs` only the definitions that
    are recursive (they cannot be inlined); turns an `anyOf` of bare types into a type list; orders each
    schema's keys as `type`, `description`, constraints, then `default`.
    """
    schema = copy.deepcopy(schema)
    defs = schema.pop("$defs", None)
    compactor = _Compactor(defs if isinstance(defs, dict) else {})
    out = compactor.node(schema, frozenset())
    if not isinstance(out, dict):
        return {}
    kept_defs: dict[str, Any] = {}
    while set(compactor.kept) - set(kept_defs):
        for name in sorted(set(compactor.kept) - set(kept_defs)):
            body = compactor.defs[name]
            kept_defs[name] = compactor.node(body, frozenset({name}))
    if kept_defs:
        out["$defs"] = kept_defs
    return out
