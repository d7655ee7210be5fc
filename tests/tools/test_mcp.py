"""`tools.mcp` against a real MCP server (tests/tools/mcp_server_demo.py, built with the SDK's MCPServer),
started as a subprocess over stdio and as a streamable HTTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

import pytest
import pytest_asyncio

from tools import Toolbox, ToolCall, ToolDefinitionError
from tools.mcp import (
    HttpServer,
    MCPConfigError,
    MCPServerError,
    MCPServers,
    StdioServer,
    load_config,
    parse_config,
)

pytest.importorskip("mcp")
pytestmark = pytest.mark.slow

DEMO = str(Path(__file__).parent / "mcp_server_demo.py")
ALL_TOOLS = {"add", "echo", "fail", "crash", "hang", "die", "picture", "document", "pid", "whoami"}


@pytest.fixture(scope="module")
def server_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IO[str]]:
    """The demo servers' stderr goes to a file, not the test output."""
    with open(tmp_path_factory.mktemp("mcp") / "stderr.log", "w") as log:
        yield log


def demo(name: str, log: IO[str], *extra: str, env: dict[str, str] | None = None) -> StdioServer:
    return StdioServer(sys.executable, (DEMO, "--name", name, *extra), env=env, stderr=log)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pair(server_log: IO[str]) -> AsyncIterator[MCPServers]:
    """Two stdio servers whose tool names partly collide (add, die, pid, whoami)."""
    config = {
        "alpha": demo("alpha", server_log, env={"GREETING": "hello"}),
        "beta": demo("beta", server_log, "--only", "add,whoami,pid"),
    }
    async with MCPServers(config, call_timeout=1.5) as servers:
        yield servers


def by_name(servers: MCPServers) -> dict[str, Any]:
    return {t.name: t for t in servers.tools}


# --- stdio ----------------------------------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="module")
async def test_tools_are_listed_with_prefixes_only_where_names_collide(pair: MCPServers) -> None:
    names = set(by_name(pair))
    assert {"alpha__add", "beta__add", "alpha__whoami", "beta__whoami", "alpha__pid", "beta__pid"} <= names
    assert {"echo", "fail", "hang", "die", "picture", "document"} <= names
    assert "add" not in names
    echo = by_name(pair)["echo"]
    assert echo.description == "Repeat a text."
    assert echo.parameters["properties"]["text"]["type"] == "string"
    assert echo.parameters["required"] == ["text"]


@pytest.mark.asyncio(loop_scope="module")
async def test_calls_reach_the_right_server_through_a_toolbox(pair: MCPServers) -> None:
    box = Toolbox(pair.tools)
    results = await box.call_all(
        [
            ToolCall(name="alpha__add", arguments={"a": 2, "b": 40}),
            ToolCall(name="alpha__whoami"),
            ToolCall(name="beta__whoami"),
            ToolCall(name="echo", arguments={"text": "hi", "times": 3}),
        ]
    )
    assert [r.content for r in results] == ["42", "alpha hello", "beta -", "hi hi hi"]
    assert not any(r.is_error for r in results)


@pytest.mark.asyncio(loop_scope="module")
async def test_arguments_are_validated_against_the_servers_schema(pair: MCPServers) -> None:
    result = await Toolbox(pair.tools).call(ToolCall(name="alpha__add", arguments={"a": "two", "b": 1}))
    assert result.is_error
    assert '"a"' in result.content
    assert "integer" in result.content


@pytest.mark.asyncio(loop_scope="module")
async def test_tool_errors_become_error_observations(pair: MCPServers) -> None:
    failed = await pair.call("alpha", "fail", {"reason": "disk full"})
    assert failed.is_error
    assert "failed on purpose: disk full" in failed.content
    crashed = await pair.call("alpha", "crash")
    assert crashed.is_error
    assert "crash" in crashed.content
    unknown = await pair.call("alpha", "no_such_tool")
    assert unknown.is_error
    assert "no_such_tool" in unknown.content
    missing = await pair.call("gamma", "add")
    assert missing.is_error
    assert "not connected" in missing.content


@pytest.mark.asyncio(loop_scope="module")
async def test_images_and_resources_become_short_notes(pair: MCPServers) -> None:
    picture = await pair.call("alpha", "picture")
    assert picture.content == "a red pixel\n[image: image/png, 72 bytes, not shown]"
    document = await pair.call("alpha", "document")
    lines = document.content.splitlines()
    assert lines[0] == "[resource file:///notes/todo.md (text/markdown)]"
    assert lines[1:3] == ["- buy milk", "- fix the barrier"]
    assert "binary data, not shown" in lines[3]
    assert (
        lines[4]
        == "[resource link: https://example.org/report.pdf (report), application/pdf: The annual report]"
    )


@pytest.mark.asyncio(loop_scope="module")
async def test_a_hanging_call_times_out_and_the_server_stays_usable(pair: MCPServers) -> None:
    started = time.monotonic()
    hung = await Toolbox(pair.tools).call(ToolCall(name="hang"))
    assert hung.is_error
    assert "did not answer within 1.5 s" in hung.content
    assert time.monotonic() - started < 30  # generous: only proves the call did not wait for the server
    after = await pair.call("alpha", "add", {"a": 1, "b": 1})
    assert after.content == "2"
    assert not after.is_error


async def test_a_server_dying_mid_call_is_an_observation_and_others_keep_working(server_log: IO[str]) -> None:
    config = {"fragile": demo("fragile", server_log), "steady": demo("steady", server_log, "--only", "echo")}
    async with MCPServers(config, call_timeout=20) as servers:
        names = by_name(servers)
        first_pid = (await names["pid"].invoke({})).content
        died = await names["die"].invoke({})
        assert died.is_error
        assert "stopped during the call" in died.content
        assert "will be started again for the next call" in died.content
        again = await names["pid"].invoke({})  # the server is started again for this call
        assert not again.is_error
        note, pid = again.content.splitlines()
        assert "had exited and was started again" in note
        assert pid != first_pid
        steady = await servers.call("steady", "echo", {"text": "still here"})
        assert steady.content == "still here"


async def _kill_between_calls(servers: MCPServers, server: str) -> int:
    """SIGKILL the server's process after a call has returned, and wait until its output has ended."""
    pid = int((await servers.call(server, "pid")).content.splitlines()[-1])
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        if servers._connections[server].output_ended is not None:
            break
        await asyncio.sleep(0.05)
    return pid


async def test_a_server_that_died_between_calls_is_said_to_have_exited_before_the_call(
    server_log: IO[str],
) -> None:
    async with MCPServers({"gone": demo("gone", server_log)}, max_restarts=0) as servers:
        await _kill_between_calls(servers, "gone")
        result = await servers.call("gone", "add", {"a": 1, "b": 2})
        assert result.is_error
        assert "had already exited before this call" in result.content
        assert "during the call" not in result.content
        assert "cannot be used any more" in result.content


async def test_a_server_that_died_between_calls_is_started_again_up_to_max_restarts(
    server_log: IO[str],
) -> None:
    async with MCPServers({"phoenix": demo("phoenix", server_log)}, max_restarts=1) as servers:
        killed = await _kill_between_calls(servers, "phoenix")
        result = await servers.call("phoenix", "pid")
        assert not result.is_error
        note, pid = result.content.splitlines()
        assert "started again" in note
        assert int(pid) != killed
        os.kill(int(pid), 0)  # the new server is alive
        plain = await servers.call("phoenix", "add", {"a": 2, "b": 3})
        assert plain.content == "5"  # only the first call after a restart carries the note
        await _kill_between_calls(servers, "phoenix")
        spent = await servers.call("phoenix", "add", {"a": 1, "b": 1})
        assert spent.is_error
        assert "had already exited before this call" in spent.content
        assert "started again 1 time already" in spent.content
    with pytest.raises(ProcessLookupError):
        os.kill(int(pid), 0)  # killed by the test, and the restarted one stopped with the block


@pytest.fixture
def server_copy(tmp_path: Path) -> Path:
    """A copy of the demo server that a test can delete while the server runs."""
    script = tmp_path / "server_copy.py"
    script.write_text(Path(DEMO).read_text())
    return script


async def test_a_restart_that_fails_says_why(server_log: IO[str], server_copy: Path) -> None:
    script = server_copy
    config = {"once": StdioServer(sys.executable, (str(script), "--name", "once"), stderr=server_log)}
    async with MCPServers(config, connect_timeout=20) as servers:
        await _kill_between_calls(servers, "once")
        script.unlink()  # the server cannot be started again
        result = await servers.call("once", "add", {"a": 1, "b": 1})
        assert result.is_error
        assert "had already exited before this call" in result.content
        assert "starting it again failed" in result.content


async def test_leaving_the_block_stops_the_subprocesses(server_log: IO[str]) -> None:
    async with MCPServers({"one": demo("one", server_log, "--only", "pid")}) as servers:
        pid = int((await servers.call("one", "pid")).content)
        os.kill(pid, 0)  # alive
    assert servers.tools == []
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_a_server_that_cannot_start_raises_for_the_developer(
    server_log: IO[str], tmp_path: Path
) -> None:
    config = {
        "fine": demo("fine", server_log, "--only", "pid"),
        "broken": StdioServer(sys.executable, ("-c", "import sys; sys.exit(2)"), stderr=server_log),
    }
    with pytest.raises(MCPServerError, match="'broken'"):
        async with MCPServers(config, connect_timeout=20):
            pass
    with pytest.raises(MCPServerError, match="could not be started"):
        async with MCPServers({"nope": StdioServer(str(tmp_path / "no-such-binary"), stderr=server_log)}):
            pass


async def test_prefix_policies(server_log: IO[str]) -> None:
    config = {"x": demo("x", server_log, "--only", "add,pid"), "y": demo("y", server_log, "--only", "add")}
    with pytest.raises(ToolDefinitionError, match="'add'"):
        async with MCPServers(config, prefix="never"):
            pass
    async with MCPServers(config, prefix="always") as servers:
        assert sorted(by_name(servers)) == ["x__add", "x__pid", "y__add"]


# --- streamable HTTP ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_http(log: IO[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    process = subprocess.Popen([sys.executable, DEMO, "http", str(port), "--name", "web"], stderr=log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process, f"http://127.0.0.1:{port}/mcp"
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the demo MCP HTTP server did not start")


@pytest.fixture
def http_server(server_log: IO[str]) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    process, url = _start_http(server_log)
    yield process, url
    process.kill()
    process.wait()


async def test_streamable_http_list_call_error_hang_and_death(
    http_server: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, url = http_server
    async with MCPServers(
        {"web": HttpServer(url, headers={"X-Client": "tests"})}, call_timeout=1.5
    ) as servers:
        assert set(by_name(servers)) == ALL_TOOLS
        assert (await servers.call("web", "add", {"a": 20, "b": 22})).content == "42"
        failed = await servers.call("web", "fail", {"reason": "over http"})
        assert failed.is_error
        assert "over http" in failed.content
        hung = await servers.call("web", "hang")
        assert hung.is_error
        assert "did not answer" in hung.content
        assert (await servers.call("web", "whoami")).content == "web -"
        died = await servers.call("web", "die")
        assert died.is_error
        process.wait(timeout=10)
        after = await servers.call("web", "add", {"a": 1, "b": 1})
        assert after.is_error


async def test_unreachable_http_server_raises() -> None:
    with pytest.raises(MCPServerError, match="'gone'"):
        async with MCPServers(
            {"gone": HttpServer(f"http://127.0.0.1:{_free_port()}/mcp")}, connect_timeout=10
        ):
            pass


# --- configuration --------------------------------------------------------------------------------------


def test_config_from_a_json_file_in_the_common_form(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "files": {
                        "command": "npx",
                        "args": ["-y", "server-filesystem", "/tmp"],
                        "env": {"A": "1"},
                    },
                    "remote": {
                        "type": "http",
                        "url": "https://mcp.example.com/mcp",
                        "headers": {"Authorization": "Bearer x"},
                    },
                    "off": {"command": "x", "disabled": True},
                }
            }
        )
    )
    config = load_config(path)
    assert config == {
        "files": StdioServer("npx", ("-y", "server-filesystem", "/tmp"), env={"A": "1"}),
        "remote": HttpServer("https://mcp.example.com/mcp", headers={"Authorization": "Bearer x"}),
    }
    assert isinstance(MCPServers.from_json(path).configs["files"], StdioServer)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({}, "mcpServers"),
        ({"mcpServers": {"a": {}}}, "'a'"),
        ({"mcpServers": {"a": {"command": 3}}}, "command"),
        ({"mcpServers": {"a": {"command": "x", "args": "not-a-list"}}}, "args"),
        ({"mcpServers": {"a": {"command": "x", "env": {"A": 1}}}}, "env"),
        ({"mcpServers": {"a": {"url": "ftp://x"}}}, "url"),
        ({"mcpServers": {"a": {"type": "sse", "url": "http://x/sse"}}}, "SSE"),
    ],
)
def test_malformed_configs_name_the_problem(data: dict[str, Any], words: str) -> None:
    with pytest.raises(MCPConfigError, match=words):
        parse_config(data)


def test_unreadable_config_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(MCPConfigError, match="cannot read"):
        load_config(tmp_path / "bad.json")


def test_importing_tools_mcp_does_not_import_the_sdk() -> None:
    code = "import sys, tools.mcp, tools.web; print('mcp' in sys.modules, 'readability' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


async def test_concurrent_calls_from_many_tasks(server_log: IO[str]) -> None:
    """Connections are owned by tasks of their own, so calls may come from any task, many at once."""
    async with MCPServers({"c": demo("c", server_log, "--only", "add")}) as servers:
        calls = [asyncio.create_task(servers.call("c", "add", {"a": i, "b": i})) for i in range(20)]
        results = await asyncio.gather(*calls)
        assert [r.content for r in results] == [str(2 * i) for i in range(20)]


def test_structured_only_results_and_odd_tool_names() -> None:
    import mcp_types

    from tools.mcp import _tool_name, result_to_observation

    structured = mcp_types.CallToolResult(content=[], structured_content={"rows": [1, 2], "name": "é"})
    assert (
        result_to_observation(structured).content == '{\n  "rows": [\n    1,\n    2\n  ],\n  "name": "é"\n}'
    )
    empty = mcp_types.CallToolResult(content=[], is_error=True)
    assert result_to_observation(empty).content == "(no output)"
    assert result_to_observation(empty).is_error
    assert _tool_name("search web!") == "search_web_"
    assert _tool_name("-dash") == "_-dash"
    assert len(_tool_name("x" * 300)) == 128


def test_the_mcp_errors_live_in_tools_errors_and_keep_their_old_import_paths() -> None:
    import tools.errors

    assert MCPConfigError is tools.errors.MCPConfigError
    assert MCPServerError is tools.errors.MCPServerError
    assert issubclass(MCPConfigError, ValueError)
    assert issubclass(MCPServerError, RuntimeError)
