"""Tool definitions: schemas from signatures and docstrings, from_schema, validation messages, coercion."""

import asyncio
import dataclasses
import enum
import functools
import json
from typing import Annotated, Any, Literal

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field
from typing_extensions import TypedDict  # pydantic needs this one on Python < 3.12

from tools import Tool, ToolArgumentsError, ToolDefinitionError, tool
from tools.docstrings import parse_docstring
from tools.schema import compact_schema


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    """A postal address."""

    street: str
    city: str = Field(description="City name")


class Person(BaseModel):
    name: str
    address: Address | None = None


class TreeNode(BaseModel):
    value: int
    children: list["TreeNode"] = []


def walk(value: Any) -> list[dict[str, Any]]:
    """Every dict inside a JSON value."""
    if isinstance(value, dict):
        return [value, *(d for v in value.values() for d in walk(v))]
    if isinstance(value, list):
        return [d for v in value for d in walk(v)]
    return []


# --- schema from signatures ---------------------------------------------------------------------------------


def test_simple_signature_schema_is_compact_and_exact() -> None:
    @tool
    def search(query: str, limit: int = 5) -> list[str]:
        """Search the web.

        Args:
            query: What to look for.
            limit: How many results to return.
        """
        return []

    assert search.name == "search"
    assert search.description == "Search the web."
    assert search.parameters == {
        "type": "object",
        "properties": {
            "query": {"type": "string", "description": "What to look for."},
            "limit": {"type": "integer", "description": "How many results to return.", "default": 5},
        },
        "required": ["query"],
    }


def test_to_openai_keys_in_template_order() -> None:
    @tool
    def ping() -> str:
        """Answer pong."""
        return "pong"

    obj = ping.to_openai()
    assert list(obj) == ["type", "function"]
    assert list(obj["function"]) == ["name", "description", "parameters"]
    assert obj["function"]["parameters"] == {"type": "object", "properties": {}}
    # the JSON the chat template writes starts as the format expects
    assert json.dumps(obj).startswith('{"type": "function", "function": {"name": "ping", "description"')


def test_varied_types() -> None:
    @tool
    def f(
        maybe: int | None,
        mode: Literal["fast", "slow"],
        tags: list[str],
        weights: dict[str, float],
        color: Color = Color.RED,
        either: int | str = 0,
    ) -> None:
        """Exercise types."""

    props = f.parameters["properties"]
    assert props["maybe"] == {"type": ["integer", "null"]}
    assert props["mode"] == {"type": "string", "enum": ["fast", "slow"]}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["weights"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["color"] == {"type": "string", "enum": ["red", "green"], "default": "red"}
    assert props["either"] == {"type": ["integer", "string"], "default": 0}
    assert f.parameters["required"] == ["maybe", "mode", "tags", "weights"]


def test_nested_models_are_inlined_without_titles() -> None:
    @tool
    def register(person: Person, where: Annotated[Address, Field(description="Delivery address")]) -> str:
        """Register someone."""
        return ""

    schema = register.parameters
    assert "$defs" not in schema
    assert all("$ref" not in d for d in walk(schema))
    assert all("title" not in d or not isinstance(d["title"], str) for d in walk(schema))
    where = schema["properties"]["where"]
    assert where["description"] == "Delivery address"  # the field's own description wins over the model's
    assert where["properties"]["city"] == {"type": "string", "description": "City name"}
    assert where["required"] == ["street", "city"]
    address = schema["properties"]["person"]["properties"]["address"]
    assert address["default"] is None
    assert address["anyOf"][0]["properties"]["street"] == {"type": "string"}


def test_a_property_named_title_is_kept() -> None:
    @tool
    def note(title: str, body: str = "") -> None:
        """Write a note."""

    assert list(note.parameters["properties"]) == ["title", "body"]


def test_recursive_model_keeps_only_its_definition() -> None:
    @tool
    def tree(root: TreeNode) -> int:
        """Count nodes."""
        return 1

    schema = tree.parameters
    assert schema["properties"]["root"] == {"$ref": "#/$defs/TreeNode"}
    assert set(schema["$defs"]) == {"TreeNode"}
    assert schema["$defs"]["TreeNode"]["properties"]["children"]["items"] == {"$ref": "#/$defs/TreeNode"}
    assert tree.validate({"root": {"value": 1, "children": [{"value": 2}]}})["root"].children[0].value == 2


def test_compact_schema_is_a_pure_function() -> None:
    raw = Person.model_json_schema()
    before = json.dumps(raw)
    compact_schema(raw)
    assert json.dumps(raw) == before


def test_annotated_field_description_beats_docstring() -> None:
    @tool
    def f(
        a: Annotated[int, Field(description="from Field", ge=0)],
        b: Annotated[int, "from a bare string"],
        c: int = Field(3, description="from default Field"),
        d: int = 1,
    ) -> None:
        """Do.

        Args:
            a: from docstring
            b: from docstring
            c: from docstring
            d: from docstring
        """

    props = f.parameters["properties"]
    assert props["a"] == {"type": "integer", "description": "from Field", "minimum": 0}
    assert props["b"]["description"] == "from a bare string"
    assert props["c"] == {"type": "integer", "description": "from default Field", "default": 3}
    assert props["d"]["description"] == "from docstring"
    assert f.parameters["required"] == ["a", "b"]


def test_parameter_names_that_clash_with_pydantic_are_fine() -> None:
    @tool
    def f(json: str, schema: int, copy: bool = False, model_config: str = "x") -> dict[str, Any]:
        """Names pydantic models cannot use as fields."""
        return {"json": json, "schema": schema, "copy": copy, "model_config": model_config}

    assert list(f.parameters["properties"]) == ["json", "schema", "copy", "model_config"]
    assert f.validate({"json": "a", "schema": 2}) == {
        "json": "a",
        "schema": 2,
        "copy": False,
        "model_config": "x",
    }


def test_decorator_options() -> None:
    @tool(name="web.search", description="Custom.", timeout=2.5)
    async def search(q: str) -> str:
        """Docstring description."""
        return q

    assert (search.name, search.description, search.timeout, search.is_async) == (
        "web.search",
        "Custom.",
        2.5,
        True,
    )


def test_no_docstring_gives_empty_description() -> None:
    @tool
    def f(x: int) -> int:
        return x

    assert f.description == ""
    assert f.parameters["properties"]["x"] == {"type": "integer"}


def test_positional_only_and_keyword_only_parameters() -> None:
    @tool
    def f(a: int, /, b: int, *, c: int = 3) -> tuple[int, int, int]:
        """Mixed kinds."""
        return (a, b, c)

    assert asyncio.run(f.invoke({"a": 1, "b": 2})) == (1, 2, 3)


def test_bound_method_and_partial() -> None:
    class Counter:
        def __init__(self) -> None:
            self.n = 0

        def add(self, k: int) -> int:
            """Add k to the counter."""
            self.n += k
            return self.n

    counter = Counter()
    add = Tool.from_function(counter.add)
    assert add.name == "add"
    assert add.description == "Add k to the counter."
    assert list(add.parameters["properties"]) == ["k"]
    assert asyncio.run(add.invoke({"k": 2})) == 2

    def power(base: int, exp: int) -> int:
        """Raise base to exp."""
        return int(base**exp)

    square = Tool.from_function(functools.partial(power, exp=2), name="square")
    assert square.description == "Raise base to exp."
    assert asyncio.run(square.invoke({"base": 3})) == 9


def test_tool_is_directly_callable() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add."""
        return a + b

    @tool
    async def aadd(a: int, b: int) -> int:
        """Add later."""
        return a + b

    assert add(2, 3) == 5
    assert asyncio.run(aadd(2, 3)) == 5
    assert add.fn(1, 1) == 2


# --- developer errors ---------------------------------------------------------------------------------------


def test_rejects_varargs_kwargs_and_untyped() -> None:
    def star(*args: int) -> None: ...

    def starstar(**kwargs: int) -> None: ...

    def untyped(x, y: int) -> None: ...  # type: ignore[no-untyped-def]

    with pytest.raises(ToolDefinitionError, match=r"\*args"):
        tool(star)
    with pytest.raises(ToolDefinitionError, match=r"\*\*kwargs"):
        tool(starstar)
    with pytest.raises(ToolDefinitionError, match="'x' has no type annotation"):
        tool(untyped)


def test_rejects_undecorated_method_with_a_hint() -> None:
    with pytest.raises(ToolDefinitionError, match=r"tool\(instance.method\)"):

        class Service:
            @tool
            def act(self, x: int) -> int:
                return x


def test_rejects_generators_bad_names_and_timeouts() -> None:
    def gen(x: int):  # type: ignore[no-untyped-def]
        yield x

    def ok(x: int) -> int:
        return x

    with pytest.raises(ToolDefinitionError, match="generator"):
        tool(gen)
    with pytest.raises(ToolDefinitionError, match="invalid tool name"):
        tool(name="has space")(ok)
    with pytest.raises(ToolDefinitionError, match="timeout"):
        tool(timeout=0)(ok)


def test_rejects_types_pydantic_cannot_describe() -> None:
    class Opaque:
        pass

    def f(x: Opaque) -> None: ...

    with pytest.raises(ToolDefinitionError, match="cannot build an argument schema"):
        tool(f)


# --- validation and coercion --------------------------------------------------------------------------------


@tool
def book(nights: int, guests: list[str], room: Literal["single", "double"] = "single", note: str = "") -> str:
    """Book a room."""
    return "ok"


def message_of(t: Tool[..., Any], arguments: Any) -> str:
    with pytest.raises(ToolArgumentsError) as info:
        t.validate(arguments)
    assert info.value.tool_name == t.name
    return info.value.message


def test_lax_coercion_accepts_what_models_commonly_write() -> None:
    # Documented decision: pydantic's lax mode, plus numbers accepted for strings.
    assert book.validate({"nights": "3", "guests": ["a"], "note": 42}) == {
        "nights": 3,
        "guests": ["a"],
        "room": "single",
        "note": "42",
    }
    assert book.validate({"nights": 2.0, "guests": []})["nights"] == 2


def test_lax_coercion_still_refuses_lossy_conversions() -> None:
    assert '"nights": Input should be a valid integer' in message_of(book, {"nights": 2.5, "guests": []})
    assert "got 2.5 (number)" in message_of(book, {"nights": 2.5, "guests": []})
    assert 'got "three" (string)' in message_of(book, {"nights": "three", "guests": []})


def test_strict_mode_refuses_conversions() -> None:
    @tool(strict=True)
    def f(n: int) -> int:
        return n

    assert f.validate({"n": 1}) == {"n": 1}
    assert '"n": Input should be a valid integer; got "1" (string)' in message_of(f, {"n": "1"})


def test_missing_argument_names_it_and_its_type() -> None:
    message = message_of(book, {"guests": ["a"]})
    assert (
        message
        == 'Invalid arguments for tool "book":\n- "nights": missing required argument (expected integer)'
    )


def test_unexpected_argument_lists_accepted_ones() -> None:
    message = message_of(book, {"nights": 1, "guests": [], "nigths": 2})
    assert '"nigths": unexpected argument; accepted arguments: nights, guests, room, note' in message


def test_literal_error_shows_allowed_values_and_received() -> None:
    message = message_of(book, {"nights": 1, "guests": [], "room": "suite"})
    assert "\"room\": Input should be 'single' or 'double'; got \"suite\" (string)" in message


def test_nested_error_path_points_into_the_value() -> None:
    message = message_of(book, {"nights": 1, "guests": ["ok", 7, None]})
    assert '"guests[2]": Input should be a valid string; got null (null)' in message
    # 7 is accepted (a number for a string), so only one problem is reported
    assert message.count("\n- ") == 1

    @tool
    def register(person: Person) -> None: ...

    message = message_of(register, {"person": {"address": {"street": "x"}}})
    assert '"person.name": missing required argument' in message
    assert '"person.address.city": missing required argument' in message


def test_union_errors_are_grouped_per_argument() -> None:
    @tool
    def f(x: int | list[int]) -> None: ...

    message = message_of(f, {"x": "abc"})
    assert message.count("\n- ") == 1
    assert '"x": matches none of the accepted types (' in message


def test_arguments_must_be_an_object() -> None:
    assert 'arguments must be a JSON object, got "[1, 2]" (string)' in message_of(book, "[1, 2]")
    assert "got [1, 2] (array)" in message_of(book, [1, 2])


def test_long_received_values_are_shortened() -> None:
    message = message_of(book, {"nights": "x" * 500, "guests": []})
    assert "x" * 70 in message
    assert "x" * 100 not in message
    assert "..." in message


def test_many_problems_are_capped() -> None:
    arguments = {f"extra{i}": i for i in range(20)}
    with pytest.raises(ToolArgumentsError) as info:
        book.validate(arguments)
    assert len(info.value.problems) == 22  # 2 missing + 20 unexpected
    assert info.value.message.endswith("- ... and 14 more")


def test_validated_values_are_typed() -> None:
    @tool
    def paint(color: Color, where: Address) -> None: ...

    args = paint.validate({"color": "green", "where": {"street": "Main", "city": "X"}})
    assert args["color"] is Color.GREEN
    assert isinstance(args["where"], Address)


# --- from_schema --------------------------------------------------------------------------------------------

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city"],
    "additionalProperties": False,
}


def weather(**kwargs: Any) -> dict[str, Any]:
    return kwargs


def test_from_schema_keeps_the_schema_and_calls_with_keywords() -> None:
    t = Tool.from_schema("get_weather", "Current weather.", WEATHER_SCHEMA, weather)
    assert t.parameters == WEATHER_SCHEMA
    assert t.to_openai()["function"] == {
        "name": "get_weather",
        "description": "Current weather.",
        "parameters": WEATHER_SCHEMA,
    }
    assert asyncio.run(t.invoke({"city": "Oslo", "days": 2})) == {"city": "Oslo", "days": 2}


def test_from_schema_validates_without_coercion() -> None:
    t = Tool.from_schema("get_weather", "Current weather.", WEATHER_SCHEMA, weather)
    message = message_of(t, {"days": "3", "unit": "kelvin", "country": "NO"})
    assert message.startswith('Invalid arguments for tool "get_weather":\n')
    assert '"city": missing required argument (expected string)' in message
    assert '"country": unexpected argument; accepted arguments: city, unit, days' in message
    assert '"days": expected integer, got "3" (string)' in message
    assert '"unit": expected one of "celsius", "fahrenheit", got "kelvin" (string)' in message
    assert '"days": 9 is greater than the maximum of 7' in message_of(t, {"city": "x", "days": 9})


def test_from_schema_nested_paths() -> None:
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "object", "required": ["id"]}}},
    }
    t = Tool.from_schema("f", "", schema, weather)
    message = message_of(t, {"items": [{"id": 1}, {}]})
    assert '"items[1].id": missing required argument' in message


def test_from_schema_rejects_invalid_schemas() -> None:
    with pytest.raises(ToolDefinitionError, match="invalid JSON Schema"):
        Tool.from_schema("f", "", {"type": "object", "properties": {"x": {"type": "dict"}}}, weather)
    with pytest.raises(ToolDefinitionError, match="invalid JSON Schema"):
        Tool.from_schema("f", "", {"type": "object", "required": "x"}, weather)
    with pytest.raises(ToolDefinitionError, match="must describe a JSON object"):
        Tool.from_schema("f", "", {"type": "array"}, weather)
    with pytest.raises(ToolDefinitionError, match="invalid tool name"):
        Tool.from_schema("", "", {}, weather)


def test_from_schema_honours_the_declared_draft() -> None:
    # Draft 4 spells an exclusive bound as a boolean next to "maximum"; 2020-12 would call that invalid.
    draft4 = {
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "object",
        "properties": {"n": {"type": "integer", "maximum": 5, "exclusiveMaximum": True}},
    }
    t = Tool.from_schema("f", "", draft4, weather)
    assert t.validate({"n": 4}) == {"n": 4}
    assert '"n": 5 is greater than or equal to the maximum of 5' in message_of(t, {"n": 5})
    with pytest.raises(ToolDefinitionError):
        Tool.from_schema(
            "f", "", {**draft4, "$schema": "https://json-schema.org/draft/2020-12/schema"}, weather
        )


def test_from_schema_empty_schema_means_no_arguments() -> None:
    t = Tool.from_schema("now", "The time.", {}, lambda: "12:00")
    assert t.parameters == {"type": "object", "properties": {}}
    assert asyncio.run(t.invoke({})) == "12:00"


def test_from_schema_does_not_alias_the_callers_dict() -> None:
    schema = json.loads(json.dumps(WEATHER_SCHEMA))
    t = Tool.from_schema("w", "", schema, weather)
    schema["properties"]["city"]["type"] = "integer"
    t.parameters["properties"]["city"]["type"] = "null"
    assert t.validate({"city": "Oslo"}) == {"city": "Oslo"}
    assert t.parameters == WEATHER_SCHEMA


def test_from_schema_async_function_and_awaitable_returning_lambda() -> None:
    async def remote(**kwargs: Any) -> str:
        await asyncio.sleep(0)
        return f"remote {kwargs}"

    t1 = Tool.from_schema("a", "", WEATHER_SCHEMA, remote)
    t2 = Tool.from_schema("b", "", WEATHER_SCHEMA, lambda **kw: remote(**kw))
    assert t1.is_async
    assert not t2.is_async
    assert asyncio.run(t1.invoke({"city": "x"})) == "remote {'city': 'x'}"
    assert asyncio.run(t2.invoke({"city": "x"})) == "remote {'city': 'x'}"


# --- docstring styles ---------------------------------------------------------------------------------------


def test_google_docstring() -> None:
    doc = parse_docstring(
        """Fetch a page.

        Keeps the readable text only.

        Args:
            url (str): The address,
                http or https.
            timeout: Seconds to wait.

        Returns:
            The text.
        """
    )
    assert doc.description == "Fetch a page.\n\nKeeps the readable text only."
    assert doc.params == {"url": "The address, http or https.", "timeout": "Seconds to wait."}


def test_sphinx_docstring() -> None:
    doc = parse_docstring(
        """Fetch a page.

        :param str url: The address,
            http or https.
        :type url: str
        :param timeout: Seconds to wait.
        :returns: The text.
        """
    )
    assert doc.description == "Fetch a page."
    assert doc.params == {"url": "The address, http or https.", "timeout": "Seconds to wait."}


def test_numpy_docstring() -> None:
    doc = parse_docstring(
        """Fetch a page.

        Parameters
        ----------
        url : str
            The address,
            http or https.
        timeout, retries : float
            Limits.

        Returns
        -------
        str
            The text.
        """
    )
    assert doc.description == "Fetch a page."
    assert doc.params == {"url": "The address, http or https.", "timeout": "Limits.", "retries": "Limits."}


def test_docstring_descriptions_reach_the_schema_in_each_style() -> None:
    @tool
    def g(a: int) -> None:
        """G.

        Args:
            a: google
        """

    @tool
    def s(a: int) -> None:
        """S.

        :param a: sphinx
        """

    @tool
    def n(a: int) -> None:
        """N.

        Parameters
        ----------
        a : int
            numpy
        """

    for t, word in ((g, "google"), (s, "sphinx"), (n, "numpy")):
        assert t.parameters["properties"]["a"] == {"type": "integer", "description": word}
        assert t.description == t.name.upper() + "."


def test_docstring_without_sections_is_all_description() -> None:
    doc = parse_docstring("  One line.\n\n  Two: not a section.  ")
    assert doc == parse_docstring("One line.\n\nTwo: not a section.")
    assert doc.description == "One line.\n\nTwo: not a section."
    assert doc.params == {}


def test_string_annotations_are_resolved() -> None:
    def f(where: "Address", n: "int" = 1) -> "str":
        return where.city * n

    t = tool(f)
    assert t.parameters["properties"]["where"]["properties"]["city"]["description"] == "City name"

    def g(x: "NotDefinedAnywhere") -> None: ...  # type: ignore[name-defined]  # noqa: F821

    with pytest.raises(ToolDefinitionError, match="cannot read the signature"):
        tool(g)


def test_wrapping_a_tool_again_is_refused() -> None:
    with pytest.raises(ToolDefinitionError, match="already a tool"):
        tool(book)
    assert tool(name="reserve")(book.fn).name == "reserve"


@dataclasses.dataclass
class Window:
    width: int
    height: int = 10


class Span(TypedDict):
    start: int
    end: int


def test_dataclass_and_typeddict_parameters() -> None:
    @tool
    def layout(window: Window, span: Span) -> int:
        """Lay out."""
        return window.width + span["end"]

    props = layout.parameters["properties"]
    window = dict(props["window"])
    # pydantic >= 2.14 states what validation does anyway (extra keys are refused); older versions omit it
    assert window.pop("additionalProperties", False) is False
    assert window == {
        "type": "object",
        "properties": {"width": {"type": "integer"}, "height": {"type": "integer", "default": 10}},
        "required": ["width"],
    }
    assert props["span"]["required"] == ["start", "end"]
    args = layout.validate({"window": {"width": 3}, "span": {"start": 0, "end": 4}})
    assert args["window"] == Window(3)
    assert asyncio.run(layout.invoke({"window": {"width": 3}, "span": {"start": 0, "end": 4}})) == 7


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "a", "red", "green", "x"]),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(["name", "address", "street", "city", "value", "children"]), children
        )
    ),
    max_leaves=12,
)


@pytest.mark.parametrize("model", [Person, TreeNode])
@settings(max_examples=150, deadline=None)
@given(value=JSON_VALUES)
def test_compact_schema_accepts_exactly_what_the_original_accepts(model: type[BaseModel], value: Any) -> None:
    original = model.model_json_schema()
    compact = compact_schema(original)
    assert jsonschema.Draft202012Validator(original).is_valid(value) == (
        jsonschema.Draft202012Validator(compact).is_valid(value)
    )


@pytest.mark.parametrize(
    ("model", "valid"),
    [
        (Person, {"name": "a", "address": {"street": "s", "city": "c"}}),
        (Person, {"name": "a", "address": None}),
        (TreeNode, {"value": 1, "children": [{"value": 2, "children": [{"value": 3}]}]}),
    ],
)
def test_compact_schema_accepts_valid_instances(model: type[BaseModel], valid: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(compact_schema(model.model_json_schema())).validate(valid)
