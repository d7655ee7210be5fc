"""JSON Schema → llama.cpp GBNF for the body of a QwQ tool call.

When the model opens `<tool_call>`, backends switch to a grammar that only admits
`\\n{"name": "<tool>", "arguments": <arguments>}\\n</tool_call>` for the given tools, so every call names a real
tool and its arguments are JSON of the right shape, while reasoning and prose stay free. The grammar writes
JSON exactly as the chat format does (`", "` and `": "` separators, keys in schema order): the text the model
generates is then the text the renderer would write, which the KV cache reuse depends on.

The converter is our own (no llama_cpp import), so the HTTP backend can send the same grammar to llama.cpp
servers. It covers what tool schemas use: objects (required and optional properties, in order), arrays
(with item counts), strings (with length bounds), numbers, integers, booleans, null, enum/const,
anyOf/oneOf, type lists, and local `$ref`s. Keywords it cannot express (pattern, format, numeric bounds,
uniqueItems...) are left to the Toolbox's validation, whose error the model reads and can act on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from prompts.errors import ConfigurationError

__all__ = [
    "GrammarError",
    "arguments_gbnf",
    "call_rest_gbnf",
    "json_value_gbnf",
    "tool_call_gbnf",
    "tool_call_schema",
]

from agent.models._turns import GRAMMAR_CALL_CLOSE as CALL_CLOSE

_STRING_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'
_PRIMITIVES = {
    "ws": "[ \\t\\n]{0,20}",
    "char": _STRING_CHAR,
    "string": '"\\"" char* "\\""',
    "integer": '"-"? ("0" | [1-9] [0-9]{0,15})',
    "number": '"-"? ("0" | [1-9] [0-9]{0,15}) ("." [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})?',
    "boolean": '"true" | "false"',
    "null": '"null"',
    "value": "object | array | string | number | boolean | null",
    "object": '"{" ws ( string ":" ws value ws ( "," ws string ":" ws value ws )* )? "}"',
    "array": '"[" ws ( value ws ( "," ws value ws )* )? "]"',
}
# Which primitives each primitive needs (so that only the used ones are emitted).
_DEPENDS = {
    "string": ("char",),
    "value": ("object", "array", "string", "number", "boolean", "null"),
    "object": ("ws", "string", "value"),
    "array": ("ws", "value"),
}


class GrammarError(ConfigurationError, ValueError):
    """A schema the converter cannot turn into a grammar (a remote `$ref`, a dangling reference...)."""


def _literal(text: str) -> str:
    """A GBNF string literal matching `text` exactly."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _json_text(value: Any) -> str:
    # The chat format's JSON: `tojson` separators, non-ASCII kept.
    return json.dumps(value, ensure_ascii=False, separators=(", ", ": "))


class _Converter:
    def __init__(self, root_schema: Mapping[str, Any], *, max_string_length: int | None) -> None:
        self.root_schema = root_schema
        self.max_string_length = max_string_length
        self.rules: dict[str, str] = {}
        self.used_primitives: set[str] = set()
        self._refs: dict[str, str] = {}

    # -- rule bookkeeping ------------------------------------------------------------------------------------
    def _name(self, hint: str) -> str:
        base = re.sub(r"[^a-zA-Z0-9-]+", "-", hint).strip("-").lower() or "r"
        name, i = base, 1
        while name in self.rules or name in _PRIMITIVES:
            i += 1
            name = f"{base}-{i}"
        return name

    def add_rule(self, hint: str, body: str) -> str:
        name = self._name(hint)
        self.rules[name] = body
        return name

    def primitive(self, name: str) -> str:
        stack = [name]
        while stack:
            item = stack.pop()
            if item not in self.used_primitives:
                self.used_primitives.add(item)
                stack.extend(_DEPENDS.get(item, ()))
        return name

    # -- schemas ---------------------------------------------------------------------------------------------
    def visit(self, schema: Any, hint: str) -> str:
        """A GBNF expression for values of `schema` (a rule name or an inline alternative)."""
        if schema is True or schema is None or schema == {}:
            return self.primitive("value")
        if schema is False:
            raise GrammarError(f"{hint}: the schema `false` admits no value")
        if not isinstance(schema, Mapping):
            raise GrammarError(f"{hint}: a schema must be an object, got {type(schema).__name__}")
        fixed = self._fixed_values(schema, hint)
        if fixed is not None:
            return fixed
        combined = self._combination(schema, hint)
        if combined is not None:
            return combined
        kind = schema.get("type")
        if isinstance(kind, list):
            alts = [self.visit({**schema, "type": t}, f"{hint}-{t}") for t in kind]
            return "(" + " | ".join(alts) + ")"
        expr = self._typed(schema, kind, hint)
        if schema.get("nullable") is True and kind != "null":
            return f"({expr} | {self.primitive('null')})"
        return expr

    def _fixed_values(self, schema: Mapping[str, Any], hint: str) -> str | None:
        """`$ref`, `const` and `enum`: values named rather than typed."""
        if "$ref" in schema:
            return self._ref(str(schema["$ref"]))
        if "const" in schema:
            return _literal(_json_text(schema["const"]))
        if "enum" in schema:
            values = list(schema["enum"])
            if not values:
                raise GrammarError(f"{hint}: an empty enum admits no value")
            return "(" + " | ".join(_literal(_json_text(v)) for v in values) + ")"
        return None

    def _combination(self, schema: Mapping[str, Any], hint: str) -> str | None:
        """`anyOf`/`oneOf` (alternatives, each merged with the sibling keywords) and `allOf` (merged)."""
        for key in ("anyOf", "oneOf"):
            if key in schema:
                base = {k: v for k, v in schema.items() if k != key}
                alts = [
                    self.visit({**base, **alt} if base else alt, f"{hint}-{i}")
                    for i, alt in enumerate(schema[key])
                ]
                return "(" + " | ".join(alts) + ")"
        if "allOf" not in schema:
            return None
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            for k, v in self._deref(part).items():
                if k == "properties":
                    merged["properties"] = {**merged.get("properties", {}), **v}
                elif k == "required":
                    merged["required"] = [*merged.get("required", []), *v]
                else:
                    merged.setdefault(k, v)
        return self.visit(merged, hint)

    def _typed(self, schema: Mapping[str, Any], kind: Any, hint: str) -> str:
        if kind == "object" or (kind is None and "properties" in schema):
            return self._object(schema, hint)
        if kind == "array" or (kind is None and ("items" in schema or "prefixItems" in schema)):
            return self._array(schema, hint)
        if kind == "string":
            return self._string(schema, hint)
        if kind == "integer":
            if isinstance(schema.get("minimum"), int | float) and schema["minimum"] >= 0:
                return self.add_rule(f"{hint}-uint", '("0" | [1-9] [0-9]{0,15})')
            return self.primitive("integer")
        if kind in ("number", "boolean", "null"):
            return self.primitive(str(kind))
        if kind is None:
            return self.primitive("value")
        raise GrammarError(f"{hint}: unknown type {kind!r}")

    def _string(self, schema: Mapping[str, Any], hint: str) -> str:
        low = int(schema.get("minLength", 0))
        high = schema.get("maxLength")
        if self.max_string_length is not None:
            high = self.max_string_length if high is None else min(int(high), self.max_string_length)
            low = min(low, high)
        if low == 0 and high is None:
            return self.primitive("string")
        self.primitive("char")
        count = f"{{{low},{int(high)}}}" if high is not None else f"{{{low},}}"
        return self.add_rule(f"{hint}-string", f'"\\"" char{count} "\\""')

    def _array(self, schema: Mapping[str, Any], hint: str) -> str:
        self.primitive("ws")
        if "prefixItems" in schema:
            items = [self.visit(s, f"{hint}-{i}") for i, s in enumerate(schema["prefixItems"])]
            body = ' ", " '.join(items)
            return self.add_rule(f"{hint}-tuple", f'"[" {body} "]"' if items else '"[]"')
        item = self.visit(schema.get("items", True), f"{hint}-item")
        low = int(schema.get("minItems", 0))
        high = schema.get("maxItems")
        if high is not None and int(high) == 0:
            return '"[]"'
        more = f'(", " {item})*' if high is None else f'(", " {item}){{0,{int(high) - 1}}}'
        if low <= 1:
            body = f'"[" ({item} {more})? "]"' if low == 0 else f'"[" {item} {more} "]"'
        else:
            rest_high = "" if high is None else str(int(high) - 1)
            body = f'"[" {item} (", " {item}){{{low - 1},{rest_high}}} "]"'
        return self.add_rule(f"{hint}-array", body)

    def _object(self, schema: Mapping[str, Any], hint: str) -> str:
        props: Mapping[str, Any] = schema.get("properties") or {}
        if not props:
            if schema.get("additionalProperties") is False:
                return '"{}"'
            return self.primitive("object")
        required = set(schema.get("required") or ())
        names = list(props)
        kvs = [
            self.add_rule(
                f"{hint}-{name}-kv",
                f"{_literal(_json_text(name) + ': ')} {self.visit(props[name], f'{hint}-{name}')}",
            )
            for name in names
        ]
        # after[i]: properties i.. when one was already written (each starts with ", ");
        # first[i]: properties i.. when none was written yet. Keeps schema order, allows any optional subset.
        after: list[str] = [""] * (len(names) + 1)
        first: list[str] = [""] * (len(names) + 1)
        for i in range(len(names) - 1, -1, -1):
            tail = f" {after[i + 1]}" if after[i + 1] else ""
            item = f'", " {kvs[i]}{tail}' if names[i] in required else f'(", " {kvs[i]})?{tail}'
            after[i] = self.add_rule(f"{hint}-after-{i}", item) if item else ""
            head = f"{kvs[i]}{tail}"
            if names[i] in required:
                first[i] = self.add_rule(f"{hint}-first-{i}", head)
            else:
                skip = first[i + 1]
                first[i] = self.add_rule(f"{hint}-first-{i}", f"{head} | {skip}" if skip else f"({head})?")
        return self.add_rule(f"{hint}-object", f'"{{" {first[0]} "}}"')

    # -- references ------------------------------------------------------------------------------------------
    def _deref(self, schema: Any) -> Any:
        seen = 0
        while isinstance(schema, Mapping) and "$ref" in schema and seen < 32:
            schema = self._resolve(str(schema["$ref"]))
            seen += 1
        return schema

    def _resolve(self, ref: str) -> Any:
        if not ref.startswith("#"):
            raise GrammarError(f"only local $refs (#/...) are supported, got {ref!r}")
        node: Any = self.root_schema
        for part in [p for p in ref[1:].split("/") if p]:
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or part not in node:
                raise GrammarError(f"the $ref {ref!r} points nowhere in the schema")
            node = node[part]
        return node

    def _ref(self, ref: str) -> str:
        if ref in self._refs:
            return self._refs[ref]
        # Named before it is visited, so recursive schemas refer back to the rule instead of looping.
        name = self._name("ref-" + ref.rsplit("/", 1)[-1])
        self._refs[ref] = name
        self.rules[name] = ""
        self.rules[name] = self.visit(self._resolve(ref), name)
        return name

    def grammar(self, root: str) -> str:
        lines = [f"root ::= {root}"]
        lines += [f"{name} ::= {body}" for name, body in self.rules.items()]
        for name in sorted(self.used_primitives):
            body = _PRIMITIVES[name]
            if name == "string" and self.max_string_length is not None:  # free-form values are capped too
                body = f'"\\"" char{{0,{self.max_string_length}}} "\\""'
            lines.append(f"{name} ::= {body}")
        return "\n".join(lines) + "\n"


def _tool_parts(tool: Any) -> tuple[str, Mapping[str, Any]]:
    """Name and parameter schema of a `tools.Tool`, an OpenAI tool dict or a bare function dict."""
    if isinstance(tool, Mapping):
        fn = tool.get("function", tool)
        return str(fn["name"]), fn.get("parameters") or {"type": "object"}
    return str(tool.name), tool.parameters or {"type": "object"}


def tool_call_schema(tools: Sequence[Any]) -> dict[str, Any]:
    """One JSON Schema for any call of `tools`: `{"name": <const>, "arguments": <that tool's schema>}` per tool.

    For servers whose constraint parameter takes a schema (vLLM `guided_json`, llama.cpp `json_schema`).
    """
    alternatives = []
    for tool in tools:
        name, params = _tool_parts(tool)
        alternatives.append(
            {
                "type": "object",
                "properties": {"name": {"const": name}, "arguments": dict(params)},
                "required": ["name", "arguments"],
                "additionalProperties": False,
            }
        )
    if len(alternatives) == 1:
        return alternatives[0]
    return {"anyOf": alternatives}


def tool_call_gbnf(
    tools: Sequence[Any],
    *,
    only: str | None = None,
    max_string_length: int | None = None,
    prefix: str = "\n",
    suffix: str = CALL_CLOSE,
) -> str:
    """GBNF for what follows `<tool_call>`: `prefix` + a call of one of `tools` + `suffix`.

    `only` restricts the union to one tool (tool_choice naming it). `max_string_length` caps every string
    (including ones the schema leaves unbounded): real models do not need it, but a noise model would
    otherwise write strings thousands of tokens long.
    """
    chosen = [t for t in tools if only is None or _tool_parts(t)[0] == only]
    if not chosen:
        names = ", ".join(_tool_parts(t)[0] for t in tools) or "(no tools)"
        raise GrammarError(f"no tool named {only!r} among: {names}")
    return _calls_grammar(
        chosen,
        lambda name: f'{{"name": {_json_text(name)}, "arguments": ',
        max_string_length=max_string_length,
        prefix=prefix,
        suffix=suffix,
    )


def _calls_grammar(
    chosen: Sequence[Any],
    head_text: Callable[[str], str],
    *,
    max_string_length: int | None,
    prefix: str,
    suffix: str,
) -> str:
    """`prefix`, then one of the `chosen` tools' calls (`head_text(name)`, its arguments, `}`), then `suffix`."""
    conv = _Converter({}, max_string_length=max_string_length)
    alternatives = []
    for i, tool in enumerate(chosen):
        name, params = _tool_parts(tool)
        # One converter for all tools (rule names stay unique); `$ref`s resolve against each tool's own schema.
        conv.root_schema = params
        conv._refs = {}
        args = conv.visit(params, f"t{i}-args")
        alternatives.append(conv.add_rule(f"t{i}-call", f'{_literal(head_text(name))} {args} "}}"'))
    parts = [_literal(prefix)] if prefix else []
    parts.append("(" + " | ".join(alternatives) + ")")
    if suffix:
        parts.append(_literal(suffix))
    return conv.grammar(" ".join(parts))


def call_rest_gbnf(
    tools: Sequence[Any],
    partial_name: str,
    *,
    only: str | None = None,
    max_string_length: int | None = None,
    suffix: str = "",
) -> str:
    """GBNF for the rest of a call whose text so far ends in `{"name": "` + `partial_name`.

    Used when a model opens a call in a form other than `<tool_call>` (a fenced block, `<tools>`, a bare
    JSON line): the constraint starts where the call was recognised, mid-object, and finishes the name of a
    tool that begins with `partial_name`, its arguments, the closing brace and `suffix`.
    """
    chosen = [
        t
        for t in tools
        if (only is None or _tool_parts(t)[0] == only) and _tool_parts(t)[0].startswith(partial_name)
    ]
    if not chosen:
        raise GrammarError(f"no tool name starts with {partial_name!r}")
    return _calls_grammar(
        chosen,
        # the name's remaining characters and its quote
        lambda name: f'{_json_text(name)[1 + len(partial_name) :]}, "arguments": ',
        max_string_length=max_string_length,
        prefix="",
        suffix=suffix,
    )


def arguments_gbnf(tool: Any, *, max_string_length: int | None = None, suffix: str = "") -> str:
    """GBNF for the arguments object of one tool, then `suffix` (the `<function=NAME>{...}</function>` form)."""
    _name, params = _tool_parts(tool)
    conv = _Converter(params, max_string_length=max_string_length)
    root = conv.visit(params, "args")
    if suffix:
        root += " " + _literal(suffix)
    return conv.grammar(root)


def json_value_gbnf(schema: Mapping[str, Any], *, max_string_length: int | None = None) -> str:
    """GBNF for one JSON value of `schema`, written in the chat format's JSON style."""
    conv = _Converter(schema, max_string_length=max_string_length)
    return conv.grammar(conv.visit(schema, "value-root"))
