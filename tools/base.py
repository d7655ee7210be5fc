"""`Tool` and `@tool`: a callable plus the JSON Schema the model sees and the validator its calls must pass.

Two ways to build one:

- `@tool` on a typed function: pydantic builds the schema and the validator from the signature, the docstring
  gives the descriptions. Arguments are validated in pydantic's *lax* mode, because models often write `"5"`
  for 5 or `5` for `"5"`, and refusing those would only cost a turn. Lax mode still refuses lossy conversions
  (`5.5` or `"abc"` for an int). Pass `strict=True` to refuse any conversion.
- `Tool.from_schema` for tools described by raw JSON Schema (MCP servers, OpenAPI, benchmarks): arguments are
  checked with `jsonschema` exactly as the schema says, with no conversion, since the schema is the contract
  of another system. The function receives the arguments as keyword arguments (`fn(**arguments)`); for
  property names that are not Python identifiers, let it accept `**kwargs`.
"""

from __future__ import annotations

import functools
import inspect
import json
import math
import re
import warnings
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Generic, ParamSpec, TypeVar, get_args, get_origin, overload

import pydantic
from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

from tools.docstrings import parse_docstring
from tools.errors import ToolArgumentsError, ToolDefinitionError
from tools.schema import compact_schema

if TYPE_CHECKING:
    import jsonschema

__all__ = ["Tool", "tool"]

P = ParamSpec("P")
R = TypeVar("R")

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}$")
_MAX_PROBLEMS = 8  # more error lines than this drown the first, most useful ones
_MAX_SHOWN_VALUE = 80  # enough to recognise a value, short enough not to echo a whole document back


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ToolDefinitionError(
            f"invalid tool name {name!r}: use 1-128 characters among letters, digits, '_', '-', '.', ':', "
            "'/', starting with a letter, digit or '_'"
        )
    return name


def _check_timeout(timeout: float | None) -> float | None:
    if timeout is not None and not (
        isinstance(timeout, int | float) and timeout > 0 and not math.isnan(timeout)
    ):
        raise ToolDefinitionError(f"timeout must be a positive number of seconds (or None), got {timeout!r}")
    return None if timeout is None else float(timeout)


# --- describing what the model sent, for error messages -----------------------------------------------------

_JSON_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    ((list, tuple), "array"),
    (dict, "object"),
)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    for types, name in _JSON_TYPES:
        if isinstance(value, types):
            return name
    return type(value).__name__


def _show(value: Any) -> str:
    """A short rendering of a received value: JSON, shortened, with its JSON type."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    if len(text) > _MAX_SHOWN_VALUE:
        text = text[: _MAX_SHOWN_VALUE - 3] + "..."
    return f"{text} ({_json_type(value)})"


def _path(parts: list[str | int]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return f'"{out}"'


def _expected(schema: Mapping[str, Any]) -> str:
    """A few words saying what a property schema accepts, for 'missing argument' messages."""
    if "enum" in schema and isinstance(schema["enum"], list):
        return "one of " + ", ".join(json.dumps(v, ensure_ascii=False) for v in schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        return " or ".join(str(k) for k in kind)
    if isinstance(kind, str):
        return kind
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list):
            return " or ".join(_expected(o) for o in options if isinstance(o, Mapping)) or "a value"
    return "a value"


def _arguments_error(tool_name: str, problems: list[str]) -> ToolArgumentsError:
    shown = problems[:_MAX_PROBLEMS]
    if len(problems) > len(shown):
        shown.append(_say("more_problems", count=len(problems) - len(shown)))
    message = _say("invalid_arguments", tool_name=tool_name, problems=shown)
    return ToolArgumentsError(message, tool_name=tool_name, problems=problems)


def _say(sentence: str, /, **variables: Any) -> str:
    """A sentence the model reads about its arguments, from prompts/templates/tools/toolbox/."""
    from prompts import render_tool_text

    return render_tool_text(f"toolbox/{sentence}", **variables)


MAX_ARGUMENT_DEPTH = 64
"""Deepest nesting of lists and objects a tool's arguments may have (the parser's bound too)."""


def _hostile_value(value: Any) -> str | None:
    """Why `value` cannot be tool arguments (too deep, a non-finite number), or None. Iterative."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return _say("not_finite", value=item)
        if isinstance(item, dict | list | tuple):
            if depth >= MAX_ARGUMENT_DEPTH:
                return _say("too_deep", max_depth=MAX_ARGUMENT_DEPTH)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return None


def _not_an_object(tool_name: str, arguments: Any) -> ToolArgumentsError:
    problem = _say("not_an_object", got=_show(arguments))
    return _arguments_error(tool_name, [problem])


def _pydantic_problems(
    exc: pydantic.ValidationError, arguments: dict[str, Any], schema: dict[str, Any]
) -> list[str]:
    grouped: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False):
        # Walk the received value along the error location: items that are not keys or indexes of the input
        # are pydantic's names for union members or validators, meaningless to the model, and are skipped.
        value: Any = arguments
        parts: list[str | int] = []
        loc = list(error["loc"])
        for i, item in enumerate(loc):
            is_key = isinstance(value, dict) and item in value
            is_index = isinstance(value, list | tuple) and isinstance(item, int) and 0 <= item < len(value)
            if is_key or is_index:
                value = value[item]
                parts.append(item)
            elif error["type"] == "missing" and i == len(loc) - 1:
                parts.append(item)
        kind = error["type"]
        if kind == "missing":
            top = parts[0] if len(parts) == 1 else None
            prop = schema.get("properties", {}).get(top, {}) if isinstance(top, str) else {}
            problem = _say("missing_argument", expected=_expected(prop) if prop else "")
        elif kind == "extra_forbidden":
            accepted = ", ".join(schema.get("properties", {})) if len(parts) == 1 else ""
            problem = _say("unexpected_argument", accepted=accepted)
        else:
            problem = _say("invalid_value", message=error["msg"], got=_show(error["input"]))
        key = _path(parts) if parts else "arguments"
        if problem not in grouped.setdefault(key, []):
            grouped[key].append(problem)
    problems = []
    for key, found in grouped.items():
        if len(found) == 1:
            problems.append(f"{key}: {found[0]}")
        else:  # one line per union member would be noise: say none matched, and why
            problems.append(f"{key}: " + _say("no_type_matched", reasons="; ".join(found)))
    return problems


def _jsonschema_problems(errors: list[jsonschema.ValidationError]) -> list[str]:
    problems: list[str] = []
    by_path: dict[str, list[str]] = {}  # several failed keywords on one value read best as one line
    for error in sorted(errors, key=lambda e: [str(p) for p in e.absolute_path]):
        parts: list[str | int] = list(error.absolute_path)
        instance = error.instance
        if error.validator == "required" and isinstance(instance, dict):
            props = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            required = error.validator_value if isinstance(error.validator_value, list) else []
            for name in required:
                if name not in instance:
                    expected = _expected(props[name]) if name in props else ""
                    line = f"{_path([*parts, name])}: " + _say("missing_argument", expected=expected)
                    if line not in problems:
                        problems.append(line)
            continue
        if error.validator in ("additionalProperties", "unevaluatedProperties") and isinstance(
            instance, dict
        ):
            known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            accepted = ", ".join(known)
            for name in instance:
                if name not in known:
                    shown = accepted if not parts else ""
                    problems.append(
                        f"{_path([*parts, name])}: " + _say("unexpected_argument", accepted=shown)
                    )
            continue
        if error.validator == "type":
            problem = _say(
                "expected_got", expected=_expected({"type": error.validator_value}), got=_show(instance)
            )
        elif error.validator == "enum":
            problem = _say(
                "expected_got", expected=_expected({"enum": error.validator_value}), got=_show(instance)
            )
        else:
            problem = error.message
        found = by_path.setdefault(_path(parts) if parts else "arguments", [])
        if problem not in found:
            found.append(problem)
    return problems + [f"{key}: {'; '.join(found)}" for key, found in by_path.items()]


# --- building the validator from a function signature -------------------------------------------------------


def _description_in(annotation: Any, default: Any) -> bool:
    """Whether the developer already gave a description with `Field(description=...)`."""
    if isinstance(default, FieldInfo) and default.description:
        return True
    if get_origin(annotation) is Annotated:
        return any(isinstance(m, FieldInfo) and m.description for m in get_args(annotation)[1:])
    return False


def _annotated_text(annotation: Any) -> str | None:
    """`Annotated[int, "text"]`: a bare string in the metadata, as some frameworks use for descriptions."""
    if get_origin(annotation) is Annotated:
        for item in get_args(annotation)[1:]:
            if isinstance(item, str):
                return item
    return None


class _Parameters:
    """The validator built from a signature; maps the model's argument names back to the function's
    parameters."""

    def __init__(self, fn: Callable[..., Any], owner: str, doc_params: dict[str, str], strict: bool) -> None:
        try:
            signature = inspect.signature(fn, eval_str=True)
        except (NameError, TypeError, SyntaxError) as exc:
            raise ToolDefinitionError(f"cannot read the signature of tool {owner!r}: {exc}") from exc
        fields: dict[str, Any] = {}
        self.positional: list[str] = []  # positional-only parameters, passed by position
        self.names: dict[str, str] = {}  # internal field name -> parameter name
        for index, param in enumerate(signature.parameters.values()):
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                star = "*" if param.kind is param.VAR_POSITIONAL else "**"
                raise ToolDefinitionError(
                    f"tool {owner!r}: parameter {star}{param.name} is not supported; a tool's arguments are "
                    "a JSON object with named, typed properties"
                )
            if param.annotation is param.empty:
                hint = (
                    " (decorate the bound method instead: tool(instance.method))"
                    if index == 0 and param.name in ("self", "cls")
                    else ""
                )
                raise ToolDefinitionError(
                    f"tool {owner!r}: parameter {param.name!r} has no type annotation; every argument must "
                    f"be typed so that it can be described and validated{hint}"
                )
            annotation = param.annotation
            description = None
            if not _description_in(annotation, param.default):
                description = _annotated_text(annotation) or doc_params.get(param.name)
            # The field is named by position and aliased to the parameter: a parameter may be called `json`,
            # `copy`, `schema` or `_x`, names a pydantic model cannot have as fields.
            ours = Field(alias=param.name, description=description)
            annotated: Any
            if get_origin(annotation) is Annotated:
                base, *meta = get_args(annotation)
                annotated = Annotated[(base, ours, *meta)]
            else:
                annotated = Annotated[annotation, ours]
            default = ... if param.default is param.empty else param.default
            internal = f"p{index}"
            fields[internal] = (annotated, default)
            self.names[internal] = param.name
            if param.kind is param.POSITIONAL_ONLY:
                self.positional.append(param.name)
        config = ConfigDict(extra="forbid", strict=strict, coerce_numbers_to_str=not strict)
        try:
            self.model: type[BaseModel] = pydantic.create_model("Arguments", __config__=config, **fields)
            with warnings.catch_warnings():
                # A default that is not JSON-serialisable is left out of the schema, which is what we want.
                warnings.simplefilter("ignore", pydantic.json_schema.PydanticJsonSchemaWarning)
                raw = self.model.model_json_schema(by_alias=True)
        except (pydantic.PydanticUserError, pydantic.PydanticSchemaGenerationError, TypeError) as exc:
            raise ToolDefinitionError(f"tool {owner!r}: cannot build an argument schema: {exc}") from exc
        raw.pop(
            "additionalProperties", None
        )  # extra arguments are refused anyway; the line only costs tokens
        schema = compact_schema(raw)
        ordered: dict[str, Any] = {"type": "object", "properties": schema.get("properties", {})}
        if schema.get("required"):
            ordered["required"] = schema["required"]
        ordered.update({k: v for k, v in schema.items() if k not in ("type", "properties", "required")})
        self.schema = ordered

    def validate(self, tool_name: str, arguments: Any) -> dict[str, Any]:
        if not isinstance(arguments, dict):
            raise _not_an_object(tool_name, arguments)
        try:
            model = self.model.model_validate(arguments)
        except pydantic.ValidationError as exc:
            raise _arguments_error(tool_name, _pydantic_problems(exc, arguments, self.schema)) from None
        return {name: getattr(model, internal) for internal, name in self.names.items()}


class _SchemaValidator:
    def __init__(self, schema: dict[str, Any], owner: str) -> None:
        # Imported here: only raw-schema tools need it, and it is a noticeable part of `import tools`.
        import jsonschema
        import jsonschema.validators

        cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise ToolDefinitionError(
                f"tool {owner!r}: invalid JSON Schema for its parameters: {exc.message}"
            ) from exc
        self.validator = cls(schema)
        self.schema = schema

    def validate(self, tool_name: str, arguments: Any) -> dict[str, Any]:
        if not isinstance(arguments, dict):
            raise _not_an_object(tool_name, arguments)
        errors = list(self.validator.iter_errors(arguments))
        if errors:
            raise _arguments_error(tool_name, _jsonschema_problems(errors))
        return dict(arguments)


# --- the Tool -----------------------------------------------------------------------------------------------


def _is_async(fn: Callable[..., Any]) -> bool:
    """Coroutine functions, partials of them, and objects whose `__call__` is async all run on the loop."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004


class Tool(Generic[P, R]):
    """A function the model can call, with its name, description and JSON Schema.

    Build one with `@tool` or `Tool.from_function` (typed Python function) or `Tool.from_schema` (raw JSON
    Schema). Calling the tool object calls the function directly, unvalidated, so a decorated function stays
    usable as a function; the model's calls go through `validate` and `invoke` (usually via `Toolbox.call`).
    """

    __slots__ = (
        "_description",
        "_fn",
        "_is_async",
        "_name",
        "_parameters",
        "_positional",
        "_timeout",
        "_validator",
    )

    def __init__(
        self,
        *,
        name: str,
        description: str,
        parameters: dict[str, Any],
        fn: Callable[P, R],
        validator: _Parameters | _SchemaValidator,
        timeout: float | None = None,
    ) -> None:
        """Low-level constructor; prefer `@tool`, `Tool.from_function` or `Tool.from_schema`."""
        self._name = _check_name(name)
        self._description = description
        self._parameters = parameters
        self._fn = fn
        self._validator = validator
        self._timeout = _check_timeout(timeout)
        self._is_async = _is_async(fn)
        self._positional = validator.positional if isinstance(validator, _Parameters) else []

    @classmethod
    def from_function(
        cls,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        strict: bool = False,
    ) -> Tool[P, R]:
        """Make a tool from a typed function, sync or async (what `@tool` does).

        `name` defaults to the function's name, `description` to the docstring's text before its first
        section. Raises `ToolDefinitionError` for parameters without annotations, `*args`/`**kwargs`,
        generator functions or types pydantic cannot describe.
        """
        if isinstance(fn, Tool):
            raise ToolDefinitionError(f"{fn!r} is already a tool; to change its options, wrap `.fn` instead")
        target = fn.func if isinstance(fn, functools.partial) else fn
        label = name or getattr(target, "__name__", None)
        if not label:
            raise ToolDefinitionError(f"cannot infer a tool name from {fn!r}: pass name=...")
        if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
            raise ToolDefinitionError(
                f"tool {label!r}: generator functions are not supported; return a value"
            )
        doc = parse_docstring(inspect.getdoc(target))
        validator = _Parameters(fn, label, doc.params, strict)
        return cls(
            name=label,
            description=doc.description if description is None else description,
            parameters=validator.schema,
            fn=fn,
            validator=validator,
            timeout=timeout,
        )

    @classmethod
    def from_schema(
        cls,
        name: str,
        description: str,
        parameters: Mapping[str, Any],
        fn: Callable[..., Any],
        *,
        timeout: float | None = None,
    ) -> Tool[..., Any]:
        """Make a tool from a raw JSON Schema; `fn(**arguments)` is called with the validated arguments.

        The schema is checked at once against its metaschema (`$schema`'s draft, Draft 2020-12 if absent) and
        must describe an object; otherwise `ToolDefinitionError`. Arguments are validated with `jsonschema`,
        without conversion; `format` is an annotation only, as the 2020-12 default says. `parameters` is shown
        to the model as given (an empty schema becomes `{"type": "object", "properties": {}}`). `fn` may be
        sync, async, or sync returning an awaitable (a lambda wrapping an async client call).
        """
        _check_name(name)
        schema = json.loads(json.dumps(dict(parameters)))  # a private copy, and proof it is plain JSON
        if schema.get("type", "object") != "object":
            raise ToolDefinitionError(
                f"tool {name!r}: parameters must describe a JSON object (type 'object'), "
                f"got type {schema['type']!r}"
            )
        if not schema:
            schema = {"type": "object", "properties": {}}
        validator = _SchemaValidator(schema, name)
        return cls(
            name=name, description=description, parameters=schema, fn=fn, validator=validator, timeout=timeout
        )

    @property
    def name(self) -> str:
        """The name the model calls the tool by."""
        return self._name

    @property
    def description(self) -> str:
        """What the tool does, as shown to the model."""
        return self._description

    @property
    def parameters(self) -> dict[str, Any]:
        """The JSON Schema of the arguments, as shown to the model (a copy: changing it changes nothing)."""
        return json.loads(json.dumps(self._parameters))  # type: ignore[no-any-return]

    @property
    def timeout(self) -> float | None:
        """Seconds a call may take; None means the toolbox's default applies."""
        return self._timeout

    @property
    def fn(self) -> Callable[P, R]:
        """The wrapped function."""
        return self._fn

    @property
    def is_async(self) -> bool:
        """Whether the function is a coroutine function (run on the event loop rather than in a thread)."""
        return self._is_async

    def to_openai(self) -> dict[str, Any]:
        """The OpenAI tool object, keys in the order the chat template writes them."""
        return {
            "type": "function",
            "function": {"name": self._name, "description": self._description, "parameters": self.parameters},
        }

    def validate(self, arguments: Any) -> dict[str, Any]:
        """Check the model's arguments; return them converted (keyed by parameter name) or raise
        `ToolArgumentsError` whose `.message` names each wrong argument, what was expected and what came.

        Nothing else escapes: arguments nested deeper than `MAX_ARGUMENT_DEPTH` and numbers JSON cannot
        say (infinity, NaN) are refused before any validator recurses into them."""
        problem = _hostile_value(arguments)
        if problem is not None:
            raise _arguments_error(self._name, [problem])
        try:
            return self._validator.validate(self._name, arguments)
        except RecursionError:
            raise _arguments_error(self._name, ["the arguments are nested too deeply"]) from None

    def _split(self, arguments: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        args = [arguments[p] for p in self._positional]
        kwargs = {k: v for k, v in arguments.items() if k not in self._positional}
        return args, kwargs

    def call_validated(self, arguments: dict[str, Any]) -> Any:
        """Call the function with arguments returned by `validate` (sync: its result; async: a coroutine)."""
        args, kwargs = self._split(arguments)
        return self._fn(*args, **kwargs)

    async def invoke(self, arguments: Any) -> Any:
        """Validate and run in the current task, awaiting async results; no timeout, no thread, errors raised.

        `Toolbox.call` is what the loop uses (thread, timeout, errors as results); this is for direct use and
        tests.
        """
        result = self.call_validated(self.validate(arguments))
        if inspect.isawaitable(result):
            result = await result
        return result

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Call the function directly, as if it were not decorated (no validation)."""
        return self._fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool(name={self._name!r})"


@overload
def tool(fn: Callable[P, R], /) -> Tool[P, R]: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    strict: bool = False,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...


def tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    strict: bool = False,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Turn a typed function (sync or async) into a `Tool`: `@tool` or `@tool(name=..., timeout=...)`.

    The docstring's text before its first section is the description; its `Args:` (Google), `:param x:`
    (Sphinx) or `Parameters` (NumPy) entries describe the arguments unless `Annotated[...,
    Field(description=...)]` already does. Arguments are validated in lax mode (`"5"` is accepted for an int)
    unless `strict=True`.
    """

    def decorate(f: Callable[P, R]) -> Tool[P, R]:
        return Tool.from_function(f, name=name, description=description, timeout=timeout, strict=strict)

    return decorate if fn is None else decorate(fn)
