"""JSON Schema → GBNF: the text of the grammars, and (with llama.cpp) that what they admit is schema-valid JSON."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from agent.models.grammar import GrammarError, json_value_gbnf, tool_call_gbnf, tool_call_schema

SCHEMAS: dict[str, dict[str, Any]] = {
    "required and optional": {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "string"}, "c": {"type": "boolean"}},
        "required": ["b"],
    },
    "enum and const": {
        "type": "object",
        "properties": {"unit": {"enum": ["C", "F", 3]}, "v": {"const": "x"}},
        "required": ["unit", "v"],
    },
    "array bounds": {
        "type": "object",
        "properties": {"xs": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 3}},
        "required": ["xs"],
    },
    "anyOf and null": {
        "type": "object",
        "properties": {
            "x": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "y": {"type": ["string", "null"]},
        },
        "required": ["x", "y"],
    },
    "refs": {
        "type": "object",
        "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}},
        "properties": {"p": {"$ref": "#/$defs/point"}},
        "required": ["p"],
    },
    "string length": {
        "type": "object",
        "properties": {"s": {"type": "string", "minLength": 2, "maxLength": 4}},
        "required": ["s"],
    },
    "free object": {"type": "object", "properties": {"any": {"type": "object"}}, "required": []},
}


def test_tool_call_grammar_frames_the_call_and_names_each_tool() -> None:
    tools = [
        {"type": "function", "function": {"name": "add", "parameters": SCHEMAS["required and optional"]}},
        {"name": "noop", "parameters": {"type": "object", "properties": {}}},
    ]
    grammar = tool_call_gbnf(tools)
    assert grammar.startswith('root ::= "\\n" (t0-call | t1-call) "\\n</tool_call>"\n')
    assert '"{\\"name\\": \\"add\\", \\"arguments\\": "' in grammar
    assert '"{\\"name\\": \\"noop\\", \\"arguments\\": "' in grammar
    only = tool_call_gbnf(tools, only="noop")
    assert "add" not in only


def test_keys_are_written_in_the_chat_format_json_style() -> None:
    grammar = json_value_gbnf(SCHEMAS["required and optional"])
    assert '"\\"a\\": "' in grammar  # `": "` separator
    assert '", "' in grammar  # `", "` between members


def test_unknown_tool_and_bad_refs_are_errors() -> None:
    with pytest.raises(GrammarError, match="no tool named"):
        tool_call_gbnf([{"name": "a", "parameters": {}}], only="b")
    with pytest.raises(GrammarError, match="points nowhere"):
        json_value_gbnf({"$ref": "#/$defs/missing"})
    with pytest.raises(GrammarError, match="only local"):
        json_value_gbnf({"$ref": "https://example.com/schema.json"})


def test_union_schema_for_schema_constrained_servers() -> None:
    schema = tool_call_schema(
        [{"name": "a", "parameters": {"type": "object"}}, {"name": "b", "parameters": {}}]
    )
    assert [alt["properties"]["name"] for alt in schema["anyOf"]] == [{"const": "a"}, {"const": "b"}]
    jsonschema.validate({"name": "a", "arguments": {}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "c", "arguments": {}}, schema)


@pytest.mark.llama
@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_sampled_values_are_schema_valid(name: str, make_llama: Any) -> None:
    """The noise model samples under each grammar; whatever comes out must validate."""
    schema = SCHEMAS[name]
    grammar = json_value_gbnf(schema, max_string_length=6)
    model = make_llama()
    model.load()
    rt = model.runtime
    assert rt is not None
    eog = rt.end_of_generation_tokens()
    for seed in range(3):
        sampler = rt.grammar_sampler(grammar)
        sampler.chain.add_distribution(top_k=0, top_p=1.0, min_p=0.0, temperature=1.0, seed=seed)
        rt.reset()
        rt.eval(rt.tokenize(b"<|im_start|>assistant\n"))
        out = b""
        for _ in range(120):
            token = sampler.chain.sample()
            if token in eog:
                break
            out += rt.token_bytes(token)
            rt.eval([token])
        else:
            pytest.fail(f"no complete value in 120 tokens: {out!r}")
        value = json.loads(out.decode("utf-8"))
        jsonschema.validate(value, schema)
