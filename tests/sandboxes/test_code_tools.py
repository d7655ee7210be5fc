"""The code tools (`tools.code`) on a real sandbox, called the way the loop calls them: through a Toolbox."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sandboxes import DockerSandbox, ExecResult, SandboxConfig
from tools import Toolbox, ToolCall
from tools.code import code_tools, format_exec_result

pytestmark = pytest.mark.docker


@pytest.fixture
async def box(sandbox_image: str) -> AsyncIterator[Toolbox]:
    config = SandboxConfig(memory="256m", default_timeout=3)
    async with DockerSandbox(sandbox_image, config=config) as sb:
        yield Toolbox(code_tools(sb, max_output_chars=2000))


async def call(box: Toolbox, name: str, **arguments: str) -> tuple[str, bool]:
    result = await box.call(ToolCall(name=name, arguments=arguments))
    return result.content, result.is_error


def test_tools_and_descriptions(sandbox_image: str) -> None:
    tools = code_tools(DockerSandbox(sandbox_image))  # binding does not start anything
    assert [t.name for t in tools] == ["python", "shell", "write_file", "read_file"]
    python = tools[0].description
    assert "persist" in python
    assert "/workspace" in python
    assert "no network" in python
    assert "pip" in python
    assert tools[0].parameters["required"] == ["code"]


async def test_python_tool_keeps_state_and_shows_value(box: Toolbox) -> None:
    assert await call(box, "python", code="x = 20") == ("(no output)", False)
    assert await call(box, "python", code="x * 2 + 2") == ("42", False)
    text, is_error = await call(box, "python", code="print('a')\nx")
    assert not is_error
    assert text == "[stdout]\na\n[value]\n20"


async def test_python_error_shows_the_traceback(box: Toolbox) -> None:
    text, is_error = await call(box, "python", code="1/0")
    assert is_error
    assert text.startswith("[error]\nTraceback")
    assert text.endswith("ZeroDivisionError: division by zero")


async def test_timeout_and_state_loss_are_explained(box: Toolbox) -> None:
    text, is_error = await call(box, "python", code="import time; time.sleep(100)")
    assert is_error
    assert "ran longer than 3 seconds" in text
    assert "variables and imports are kept" in text
    text, is_error = await call(box, "python", code="import os; os._exit(1)")
    assert is_error
    assert "exited with status 1" in text
    assert "variables, imports and functions from earlier calls are gone" in text


async def test_shell_and_files(box: Toolbox) -> None:
    assert await call(box, "write_file", path="pkg/a.txt", content="héllo\n") == (
        "Wrote 7 bytes to /workspace/pkg/a.txt.",
        False,
    )
    assert await call(box, "read_file", path="pkg/a.txt") == ("héllo\n", False)
    assert await call(box, "shell", command="cat pkg/a.txt") == ("héllo", False)
    text, is_error = await call(box, "shell", command="ls nope")
    assert is_error
    assert "[stderr]" in text
    assert "Exit status 2." in text
    text, is_error = await call(box, "read_file", path="/etc/passwd")
    assert is_error
    assert "only files under /workspace" in text
    await call(box, "python", code="open('b.bin', 'wb').write(bytes(100))")
    assert await call(box, "read_file", path="b.bin") == (
        "b.bin is a binary file of 100 bytes; inspect it with the python tool.",
        False,
    )


async def test_long_output_is_cut_for_the_model(box: Toolbox) -> None:
    text, is_error = await call(box, "python", code="print('x' * 100_000)")
    assert not is_error
    assert len(text) <= 2000
    assert "cut from the middle" in text


def test_format_of_an_empty_failed_result() -> None:
    result = format_exec_result(ExecResult(ok=False, error="exit status 1", exit_code=1), kind="shell")
    assert result.content == "[error]\nExit status 1."
    assert result.is_error
