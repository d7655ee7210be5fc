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


async def test_a_string_cut_by_a_line_break_of_the_json_is_explained(box: Toolbox) -> None:
    # Qwen2.5-Coder-1.5B's call, decoded: the JSON's \n inside '\n' became a line break of the code (measured)
    code = "with open('numbers.txt', 'w') as f: f.write(str(1) + '\n')"
    text, is_error = await call(box, "python", code=code)
    assert is_error
    assert "SyntaxError" in text
    assert "[note]\nA line break cut a string literal" in text
    assert r"write \\n in the JSON" in text
    # other syntax errors, and a cut string in one-line code, get no such hint
    for other in ("x = = 1\nprint(x)", "print('a)"):
        text, is_error = await call(box, "python", code=other)
        assert is_error
        assert "SyntaxError" in text
        assert "line break" not in text


@pytest.mark.parametrize(
    "code",
    [
        # Qwen2.5-Coder-0.5B's calls (measured), each resent on the bare SyntaxError
        "import math; F1 = 1; F2 = 1; while True: F1, F2 = F2, F1 + F2",
        "for i in range(1, 31): print(i) if i % 3 == 0: sum += i",
    ],
)
async def test_blocks_crammed_onto_one_line_are_explained(box: Toolbox, code: str) -> None:
    text, is_error = await call(box, "python", code=code)
    assert is_error
    assert "SyntaxError" in text
    assert "only at the start of a line" in text
    # code that runs, with the same shape, gets no hint
    text, is_error = await call(box, "python", code="for i in range(2): print(i)")
    assert (text, is_error) == ("0\n1", False)


async def test_a_final_top_level_return_runs_as_the_cells_value(box: Toolbox) -> None:
    # Qwen2.5-Coder-0.5B's call (measured): resent unchanged on each bare "'return' outside function"
    code = "from datetime import date; return (date(2025, 11, 3) - date(2024, 2, 15)).days"
    text, is_error = await call(box, "python", code=code)
    assert not is_error
    assert text.startswith("[value]\n627\n[note]\nA cell is not a function")
    # a return that is not the last statement still fails as written
    text, is_error = await call(box, "python", code="return 1\nx = 2")
    assert is_error
    assert "'return' outside function" in text


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
    assert text == "/etc/passwd is outside /workspace: only files under /workspace can be read or written."
    text, is_error = await call(box, "read_file", path="pkg")
    assert is_error
    assert text == "pkg is not a regular file (a directory?); list directories with the shell tool."
    text, is_error = await call(box, "read_file", path="")
    assert (text, is_error) == ("The path must be a non-empty string without NUL characters.", True)
    text, is_error = await call(box, "read_file", path="nope.txt")
    assert (text, is_error) == ("No such file or directory: nope.txt", True)
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


def _note(**fields: object) -> str:
    kind = "shell" if fields.pop("shell", False) else "python"
    result = ExecResult(**fields)  # type: ignore[arg-type]
    return format_exec_result(result, kind=kind, timeout=7, memory="256m").content  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"ok": False, "timed_out": True}, "ran longer than 7 seconds and was interrupted"),
        ({"ok": False, "timed_out": True, "state_lost": True}, "ran longer than 7 seconds and was stopped"),
        ({"ok": False, "cancelled": True}, "The code was interrupted with KeyboardInterrupt"),
        (
            {"ok": False, "crashed": True, "oom_killed": True, "state_lost": True},
            "out of memory (the limit is 256m)",
        ),
        ({"ok": False, "crashed": True, "signal": 11, "state_lost": True}, "crashed with SIGSEGV"),
        ({"ok": False, "crashed": True, "signal": 9, "state_lost": True}, "was killed by SIGKILL"),
        ({"ok": False, "crashed": True, "exit_code": 3, "state_lost": True}, "exited with status 3"),
        (
            {"lost_before": True, "state_lost": True},
            "[note]\nNote: the Python interpreter had been restarted",
        ),
        ({"ok": False, "lost_cause": "unresponsive"}, "stopped responding and was replaced"),
        ({"ok": False, "lost_cause": "died"}, "died (was it killed?)"),
        ({"ok": False, "lost_cause": "protocol"}, "did not understand"),
        ({"ok": False, "lost_cause": "closed"}, "was closed while the call was running"),
        ({"shell": True, "ok": False, "timed_out": True}, "ran longer than 7 seconds: it and everything"),
        ({"shell": True, "ok": False, "cancelled": True}, "The call was cancelled"),
        ({"shell": True, "ok": False, "signal": 15}, "The command was killed by SIGTERM."),
        (
            {"shell": True, "ok": False, "exit_code": 137, "oom_killed": True},
            "Exit status 137. A process ran out",
        ),
        (
            {"shell": True, "sandbox_replaced": True, "lost_before": True},
            "sandbox had stopped before this call",
        ),
    ],
)
def test_the_model_reads_our_notes_not_the_developers_summary(
    fields: dict[str, object], expected: str
) -> None:
    text = _note(**fields, error="developer summary")
    assert expected in text
    assert "developer summary" not in text


def test_the_codes_own_error_is_shown_with_its_traceback() -> None:
    result = ExecResult(ok=False, error="ValueError: x", traceback="Traceback ...\nValueError: x\n")
    assert format_exec_result(result).content == "[error]\nTraceback ...\nValueError: x"
    result = ExecResult(ok=False, error="could not start /bin/bash: no such file")
    assert (
        format_exec_result(result, kind="shell").content == "[error]\ncould not start /bin/bash: no such file"
    )


def test_observations_built_by_hand_never_carry_lone_surrogates() -> None:
    bad = "a\ud800b\udc80"
    result = ExecResult(ok=False, stdout=bad, stderr=bad, value=bad, error=bad, traceback=bad)
    content = format_exec_result(result).content
    content.encode("utf-8")
    assert content.count("\ufffd") == 8


async def test_code_tools_observations_always_encode(box: Toolbox) -> None:
    d800, dc80 = chr(0xD800), chr(0xDC80)
    for name, arguments in [
        ("python", {"code": r"print('\ud800'); raise ValueError('\ud800 \udc80')"}),
        ("python", {"code": f"x = '{d800}'"}),
        ("shell", {"command": "printf 'a\\355\\240\\200'; exit 1"}),
        ("shell", {"command": f"echo {d800}"}),
        ("write_file", {"path": f"s{dc80}.txt", "content": f"c{d800}"}),
        ("read_file", {"path": f"s{dc80}.txt"}),
        ("read_file", {"path": f"missing{dc80}"}),
        ("write_file", {"path": f"bin{d800}", "content": "\x00\x01"}),
        ("read_file", {"path": f"bin{d800}"}),
    ]:
        text, _ = await call(box, name, **arguments)
        text.encode("utf-8")
    assert await call(box, "write_file", path=f"s{dc80}.txt", content=f"c{d800}") == (
        "Wrote 4 bytes to /workspace/s\ufffd.txt.",
        False,
    )
    assert await call(box, "read_file", path=f"s{dc80}.txt") == ("c\ufffd", False)


def test_the_code_tools_schemas_are_the_documented_ones() -> None:
    """The tools are built with the project's own @tool; their schemas stay exactly what the model saw."""
    from sandboxes import DockerSandbox
    from tools.code import code_tools

    path = {"type": "string", "description": "File path, relative to /workspace."}
    expected = {
        "python": {"code": {"type": "string", "description": "The Python code to run."}},
        "shell": {"command": {"type": "string", "description": "The bash command line to run."}},
        "write_file": {
            "path": path,
            "content": {"type": "string", "description": "The complete new content of the file."},
        },
        "read_file": {"path": path},
    }
    tools = {t.name: t.to_openai()["function"]["parameters"] for t in code_tools(DockerSandbox())}
    assert tools == {
        name: {"type": "object", "properties": props, "required": list(props)}
        for name, props in expected.items()
    }
