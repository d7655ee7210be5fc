"""Toolbox: listing, validation, and `call` turning every model-fixable outcome into a ToolResult."""

import asyncio
import contextvars
import re
import sys
import threading
from typing import Any

import pytest

from tools import (
    Tool,
    ToolArgumentsError,
    Toolbox,
    ToolCall,
    ToolDefinitionError,
    ToolError,
    ToolResult,
    UnknownToolError,
    tool,
)

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


@tool
def add(a: int, b: int = 1) -> int:
    """Add two integers."""
    return a + b


@tool
async def greet(name: str) -> str:
    """Say hello."""
    await asyncio.sleep(0)
    return f"hello {name}"


@tool
def search_web(query: str) -> list[dict[str, str]]:
    """Search."""
    return [{"title": query}]


def call(tool_name: str, /, **arguments: Any) -> ToolCall:
    return ToolCall(name=tool_name, arguments=arguments)


# --- construction and listing -------------------------------------------------------------------------------


def test_listing() -> None:
    box = Toolbox([add, greet])
    assert box.names == ("add", "greet")
    assert box.tools == (add, greet)
    assert "add" in box
    assert "nope" not in box
    assert box.get("greet") is greet
    assert box.get("nope") is None
    assert len(box) == 2
    assert list(box) == [add, greet]
    assert box.to_openai() == [add.to_openai(), greet.to_openai()]


def test_plain_functions_are_wrapped() -> None:
    def double(x: int) -> int:
        """Double x."""
        return 2 * x

    box = Toolbox([double])
    wrapped = box.get("double")
    assert isinstance(wrapped, Tool)
    assert wrapped.description == "Double x."


def test_duplicate_names_are_a_developer_error() -> None:
    other = Tool.from_schema("add", "", {}, lambda: 0)
    with pytest.raises(ToolDefinitionError, match="two tools are named 'add'"):
        Toolbox([add, other])


def test_bad_configuration_is_refused_at_construction() -> None:
    with pytest.raises(ToolDefinitionError):
        Toolbox([], default_timeout=0)
    with pytest.raises(ValueError, match="at least"):
        Toolbox([], max_result_chars=10)


def test_timeout_for() -> None:
    quick = Tool.from_schema("quick", "", {}, lambda: 0, timeout=2)
    box = Toolbox([add, quick], default_timeout=30)
    assert box.timeout_for("add") == 30
    assert box.timeout_for("quick") == 2
    assert Toolbox([add], default_timeout=None).timeout_for("add") is None


# --- validate -----------------------------------------------------------------------------------------------


def test_validate_returns_converted_arguments() -> None:
    assert Toolbox([add]).validate("add", {"a": "2"}) == {"a": 2, "b": 1}


def test_validate_raises_arguments_error() -> None:
    with pytest.raises(ToolArgumentsError) as info:
        Toolbox([add]).validate("add", {"b": 2})
    assert '"a": missing required argument (expected integer)' in info.value.message


def test_unknown_tool_suggests_a_close_match() -> None:
    box = Toolbox([add, greet, search_web])
    with pytest.raises(UnknownToolError) as info:
        box.validate("search", {})
    error = info.value
    assert isinstance(error, ToolArgumentsError)  # one except clause covers both
    assert error.message == (
        'Unknown tool "search". Did you mean "search_web"? Available tools: add, greet, search_web.'
    )
    assert error.suggestion == "search_web"
    assert error.available == ("add", "greet", "search_web")


def test_unknown_tool_case_mismatch_and_no_match() -> None:
    box = Toolbox([add, greet])
    with pytest.raises(UnknownToolError, match='Did you mean "greet"'):
        box.validate("GREET", {})
    with pytest.raises(UnknownToolError) as info:
        box.validate("python", {})
    assert info.value.message == 'Unknown tool "python". Available tools: add, greet.'
    with pytest.raises(UnknownToolError, match="No tools are available"):
        Toolbox().validate("add", {})


# --- call: results ------------------------------------------------------------------------------------------


async def test_sync_and_async_results() -> None:
    box = Toolbox([add, greet, search_web])
    assert await box.call(call("add", a=2, b=3)) == ToolResult(content="5")
    assert await box.call(call("greet", name="Ada")) == ToolResult(content="hello Ada")
    assert await box.call(call("search_web", query="é")) == ToolResult(content='[{"title": "é"}]')


async def test_model_errors_become_results() -> None:
    box = Toolbox([add])
    unknown = await box.call(call("ad", a=1))
    assert unknown.is_error
    assert unknown.content.startswith('Unknown tool "ad". Did you mean "add"?')
    invalid = await box.call(call("add", a="x"))
    assert invalid.is_error
    assert invalid.content.startswith(
        'Invalid arguments for tool "add":\n- "a": Input should be a valid integer'
    )


async def test_sync_tools_run_off_the_event_loop_with_context() -> None:
    seen: dict[str, Any] = {}

    @tool
    def where() -> str:
        thread = threading.current_thread()
        seen.update(thread=thread, daemon=thread.daemon, request=request_id.get())
        return "ok"

    request_id.set("r-42")
    assert (await Toolbox([where]).call(call("where"))).content == "ok"
    assert seen["thread"] is not threading.current_thread()
    assert seen["daemon"] is True
    assert seen["request"] == "r-42"


async def test_tool_may_return_a_tool_result() -> None:
    @tool
    def check(path: str) -> ToolResult:
        return ToolResult(content=f"{path}: not found", is_error=True)

    assert await Toolbox([check]).call(call("check", path="a.txt")) == ToolResult(
        content="a.txt: not found", is_error=True
    )


async def test_results_are_capped() -> None:
    @tool
    def big() -> str:
        return "a" * 10_000 + "b" * 10_000

    @tool
    def big_result() -> ToolResult:
        return ToolResult(content="c" * 10_000)

    box = Toolbox([big, big_result], max_result_chars=500)
    result = await box.call(call("big"))
    assert len(result.content) == 500
    assert result.content.startswith("a")
    assert result.content.endswith("b")
    assert "characters cut from the middle" in result.content
    assert len((await box.call(call("big_result"))).content) == 500
    uncapped = Toolbox([big], max_result_chars=None)
    assert len((await uncapped.call(call("big"))).content) == 20_000


async def test_unserialisable_result_is_an_error_result() -> None:
    @tool
    def loop() -> dict[str, Any]:
        d: dict[str, Any] = {}
        d["self"] = d
        return d

    result = await Toolbox([loop]).call(call("loop"))
    assert result.is_error
    assert result.content.startswith("cannot serialise the result")


# --- call: failures -----------------------------------------------------------------------------------------


async def test_exception_becomes_type_message_and_last_frame() -> None:
    @tool
    def divide(a: float, b: float) -> float:
        """Divide a by b."""
        return a / b

    result = await Toolbox([divide]).call(call("divide", a=1, b=0))
    assert result.is_error
    lines = result.content.splitlines()
    assert lines[0] == "ZeroDivisionError: float division by zero"
    assert re.fullmatch(r"  at test_toolbox\.py:\d+ in divide: return a / b", lines[1])
    assert "Traceback" not in result.content
    assert len(lines) == 2


async def test_async_exception_without_message() -> None:
    @tool
    async def fail() -> None:
        raise LookupError

    result = await Toolbox([fail]).call(call("fail"))
    assert result.is_error
    assert result.content.startswith("LookupError\n  at test_toolbox.py:")
    assert result.content.endswith("in fail: raise LookupError")


async def test_tool_error_is_reported_verbatim() -> None:
    @tool
    def read(path: str) -> str:
        raise ToolError(f"no such file: {path}")

    assert await Toolbox([read]).call(call("read", path="x")) == ToolResult(
        content="no such file: x", is_error=True
    )


async def test_sys_exit_in_a_tool_does_not_end_the_host() -> None:
    @tool
    def quit_now() -> None:
        sys.exit(3)

    result = await Toolbox([quit_now]).call(call("quit_now"))
    assert result.is_error
    assert result.content.startswith("SystemExit: 3")


async def test_timeout_error_raised_by_the_tool_is_not_a_timeout() -> None:
    @tool
    async def flaky() -> None:
        raise TimeoutError("upstream did not answer")

    result = await Toolbox([flaky], default_timeout=60).call(call("flaky"))
    assert result.is_error
    assert result.content.startswith("TimeoutError: upstream did not answer")


# --- call: timeouts and cancellation ------------------------------------------------------------------------


async def test_sync_tool_timeout() -> None:
    release = threading.Event()

    @tool(timeout=0.05)
    def stuck() -> str:
        release.wait(30)
        return "late"

    try:
        result = await Toolbox([stuck]).call(call("stuck"))
    finally:
        release.set()
    assert result == ToolResult(content='Tool "stuck" timed out after 0.05 s.', is_error=True)


async def test_async_tool_timeout_cancels_it() -> None:
    cancelled = asyncio.Event()

    @tool
    async def hang() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    result = await Toolbox([hang], default_timeout=0.05).call(call("hang"))
    assert result == ToolResult(content='Tool "hang" timed out after 0.05 s.', is_error=True)
    assert cancelled.is_set()


async def test_tool_timeout_overrides_default() -> None:
    @tool(timeout=0.05)
    async def hang() -> None:
        await asyncio.Event().wait()

    result = await Toolbox([hang], default_timeout=None).call(call("hang"))
    assert result.content == 'Tool "hang" timed out after 0.05 s.'


async def test_cancellation_propagates_from_async_tool() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()

    @tool
    async def hang() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    task = asyncio.create_task(Toolbox([hang]).call(call("hang")))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()


async def test_cancellation_propagates_from_sync_tool() -> None:
    loop = asyncio.get_running_loop()
    started, release = asyncio.Event(), threading.Event()

    @tool
    def block() -> None:
        loop.call_soon_threadsafe(started.set)
        release.wait(30)

    task = asyncio.create_task(Toolbox([block]).call(call("block")))
    try:
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        release.set()


async def test_call_all_runs_concurrently_and_keeps_order() -> None:
    # `first` can only finish once `second` has started: run one after the other, it would time out.
    second_started = asyncio.Event()

    @tool
    async def first() -> str:
        await second_started.wait()
        return "first"

    @tool
    async def second() -> str:
        second_started.set()
        return "second"

    box = Toolbox([first, second, add], default_timeout=5)
    results = await box.call_all([call("first"), call("second"), call("nope"), call("add", a=1)])
    assert [r.content for r in results[:2]] == ["first", "second"]
    assert results[2].is_error
    assert results[3] == ToolResult(content="2")


async def test_from_schema_tool_through_the_toolbox() -> None:
    async def lookup(**kwargs: Any) -> dict[str, Any]:
        return {"got": kwargs}

    remote = Tool.from_schema(
        "db.lookup",
        "Look up a key.",
        {"type": "object", "properties": {"key": {"type": "string"}}, "required": ["key"]},
        lookup,
    )
    box = Toolbox([remote])
    assert await box.call(call("db.lookup", key="k")) == ToolResult(content='{"got": {"key": "k"}}')
    bad = await box.call(call("db.lookup", key=1))
    assert bad.content == 'Invalid arguments for tool "db.lookup":\n- "key": expected string, got 1 (integer)'


async def test_exception_inside_a_custom_validator_is_a_result() -> None:
    from pydantic import BaseModel, field_validator

    class Odd(BaseModel):
        n: int

        @field_validator("n")
        @classmethod
        def explode(cls, v: int) -> int:
            raise KeyError("boom")

    @tool
    def take(x: Odd) -> None: ...

    result = await Toolbox([take]).call(call("take", x={"n": 1}))
    assert result.is_error
    assert result.content.startswith("KeyError: 'boom'")


async def test_exception_with_a_broken_str_is_still_a_result() -> None:
    class Weird(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    @tool
    def odd() -> None:
        raise Weird

    result = await Toolbox([odd]).call(call("odd"))
    assert result.is_error
    assert result.content.startswith("Weird: (message could not be rendered)\n  at test_toolbox.py:")


async def test_sync_timeout_is_logged_for_the_developer(caplog: pytest.LogCaptureFixture) -> None:
    release = threading.Event()

    @tool(timeout=0.01)
    def stuck() -> None:
        release.wait(30)

    try:
        await Toolbox([stuck]).call(call("stuck"))
    finally:
        release.set()
    assert "its thread runs on" in caplog.text


# -- hostile arguments: only ToolArgumentsError ever escapes ----------------------------------------------------


def _deep(depth: int) -> Any:
    value: Any = []
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [100, 1_000, 100_000])
def test_validate_refuses_deep_nesting_without_recursion_errors(depth: int) -> None:
    @tool
    def takes_anything(data: Any) -> str:
        """Take anything.

        Args:
            data: any JSON value
        """
        return "ok"

    raw = Tool.from_schema("raw", "Raw.", {"type": "object", "properties": {"data": {}}}, lambda data: "ok")
    for box_tool in (takes_anything, raw):
        with pytest.raises(ToolArgumentsError, match="nested more than"):
            Toolbox([box_tool]).validate(box_tool.name, {"data": _deep(depth)})


@pytest.mark.parametrize("number", [float("inf"), float("-inf"), float("nan")])
def test_validate_refuses_numbers_json_cannot_say(number: float) -> None:
    @tool
    def scale(factor: float) -> float:
        """Scale.

        Args:
            factor: a factor
        """
        return factor

    with pytest.raises(ToolArgumentsError, match="finite number"):
        Toolbox([scale]).validate("scale", {"factor": number})


async def test_a_sync_tool_raising_stop_iteration_is_a_result_at_once() -> None:
    # asyncio futures refuse StopIteration; the call used to hang until its timeout.
    @tool
    def exhausted() -> str:
        """Call next() on an empty iterator."""
        return str(next(iter([])))

    box = Toolbox([exhausted], default_timeout=30)
    result = await asyncio.wait_for(box.call(call("exhausted")), timeout=10)
    assert result.is_error
    assert result.content.startswith("StopIteration")


@pytest.mark.parametrize("behaviour", ["return", "raise", "tool_result", "structure", "raise_async"], ids=str)
async def test_results_never_carry_lone_surrogates(behaviour: str) -> None:
    text = "a \ud800 b \udc80"

    @tool
    def sync_tool() -> object:
        """Hand back text with lone surrogates."""
        if behaviour == "raise":
            raise ValueError(text)
        if behaviour == "tool_result":
            return ToolResult(content=text, is_error=True)
        if behaviour == "structure":
            return {text: [text]}
        return text

    @tool
    async def async_tool() -> str:
        """Raise with lone surrogates."""
        raise RuntimeError(text)

    box = Toolbox([sync_tool, async_tool])
    result = await box.call(call("async_tool" if behaviour == "raise_async" else "sync_tool"))
    result.content.encode("utf-8")
    assert "\ufffd" in result.content
