"""The code tool family: `python`, `shell`, `write_file` and `read_file`, bound to one `sandboxes.DockerSandbox`.

The descriptions tell the model what it cannot see: what persists between calls, where files live, the limits,
and that nothing can be downloaded or installed. Results are compact text: output first, then the value, the
error and any note (timed out, state lost), each labelled only when more than one part is present.
"""

from __future__ import annotations

from typing import Any

from sandboxes import WORKSPACE, DockerSandbox, ExecResult, SandboxFileError
from tools.base import Tool
from tools.errors import ToolError
from tools.serialize import truncate_middle
from tools.types import ToolResult

__all__ = ["code_tools", "format_exec_result"]

DEFAULT_MAX_OUTPUT_CHARS = 8_000
# Extra seconds the toolbox allows beyond the sandbox's own timeout, so the sandbox's message (what was killed,
# what was lost) reaches the model instead of the toolbox's generic timeout.
_TOOLBOX_GRACE_S = 20.0


def format_exec_result(result: ExecResult, max_chars: int = DEFAULT_MAX_OUTPUT_CHARS) -> ToolResult:
    """The text the model reads for a `run_python`/`run_shell` result, at most about `max_chars` long."""
    parts: list[tuple[str, str]] = []
    if result.stdout:
        parts.append(("stdout", result.stdout))
    if result.stderr:
        parts.append(("stderr", result.stderr))
    if result.value is not None:
        parts.append(("value", result.value))
    if result.traceback and not result.ok:
        parts.append(("error", result.traceback.rstrip("\n")))
    elif result.error:
        parts.append(("error", result.error))
    if result.traceback and result.error and result.error not in result.traceback:
        parts.append(("note", result.error))  # e.g. the traceback of a KeyboardInterrupt plus why it came
    if result.exit_code and not result.error:
        parts.append(("exit status", str(result.exit_code)))
    if not parts:
        return ToolResult(content="(no output)", is_error=not result.ok)
    budget = max(max_chars // len(parts), 200)
    if len(parts) == 1 and parts[0][0] in ("stdout", "value"):
        text = truncate_middle(parts[0][1].rstrip("\n"), max_chars)
    else:
        text = "\n".join(
            f"[{label}]\n{truncate_middle(body.rstrip(chr(10)), budget)}" for label, body in parts
        )
    return ToolResult(content=text, is_error=not result.ok)


def _limits(sandbox: DockerSandbox) -> str:
    cfg = sandbox.config
    return (
        f"Limits: {cfg.memory} of memory, {cfg.cpus:g} CPU, {cfg.workspace_size} of disk in {WORKSPACE}; "
        "there is no network access, so nothing can be downloaded or installed (no pip install)."
    )


def code_tools(
    sandbox: DockerSandbox,
    *,
    timeout: float | None = None,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> list[Tool[..., Any]]:
    """The four tools bound to `sandbox` (started on first use if it is not yet; the caller closes it).

    `timeout` is the seconds one call may run (default: the sandbox's `default_timeout`).
    """
    limit = timeout or sandbox.config.default_timeout
    limits = _limits(sandbox)
    toolbox_timeout = limit + sandbox.config.kill_grace + _TOOLBOX_GRACE_S

    async def python(code: str) -> ToolResult:
        return format_exec_result(await sandbox.arun_python(code, timeout=limit), max_output_chars)

    async def shell(command: str) -> ToolResult:
        return format_exec_result(await sandbox.arun_shell(command, timeout=limit), max_output_chars)

    async def write_file(path: str, content: str) -> str:
        try:
            where = await sandbox.awrite_file(path, content)
        except SandboxFileError as exc:
            raise ToolError(str(exc)) from None
        return f"Wrote {len(content.encode('utf-8')):,} bytes to {where}."

    async def read_file(path: str) -> str:
        try:
            data = await sandbox.aread_file(path)
        except SandboxFileError as exc:
            raise ToolError(str(exc)) from None
        if b"\x00" in data[:8192]:
            return f"{path} is a binary file of {len(data):,} bytes; inspect it with the python tool."
        return truncate_middle(data.decode("utf-8", errors="replace"), max_output_chars) or "(empty file)"

    python_tool = Tool.from_schema(
        "python",
        "Run Python 3 code in a sandbox, like a cell of a Jupyter notebook. Variables, functions and imports "
        "persist between calls; the value of the last expression is shown, as is everything printed. "
        f"The working directory is {WORKSPACE}; files written there can be used by the shell tool too. "
        "Available: the standard library and numpy. "
        f"A call may run {limit:g} seconds; then it is interrupted (if the interpreter must be restarted, you "
        f"are told that variables were lost). Long output is cut in the middle. {limits}",
        {
            "type": "object",
            "properties": {"code": {"type": "string", "description": "The Python code to run."}},
            "required": ["code"],
        },
        python,
        timeout=toolbox_timeout,
    )
    shell_tool = Tool.from_schema(
        "shell",
        f"Run a bash command in the sandbox, in {WORKSPACE}, as a non-root user; stdout, stderr and the exit "
        "status are shown. Each call is a fresh shell (cd and variables do not carry over), and processes "
        f"it starts in the background are stopped when it ends. A call may run {limit:g} seconds. {limits}",
        {
            "type": "object",
            "properties": {"command": {"type": "string", "description": "The bash command line to run."}},
            "required": ["command"],
        },
        shell,
        timeout=toolbox_timeout,
    )
    write_tool = Tool.from_schema(
        "write_file",
        f"Create or overwrite a text file in the sandbox. Paths are relative to {WORKSPACE} (the only writable "
        "place); missing parent directories are created.",
        {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": f"File path, relative to {WORKSPACE}."},
                "content": {"type": "string", "description": "The complete new content of the file."},
            },
            "required": ["path", "content"],
        },
        write_file,
        timeout=120,
    )
    read_tool = Tool.from_schema(
        "read_file",
        f"Read a text file from the sandbox. Paths are relative to {WORKSPACE}; long files are cut in the middle.",
        {
            "type": "object",
            "properties": {"path": {"type": "string", "description": f"File path, relative to {WORKSPACE}."}},
            "required": ["path"],
        },
        read_file,
        timeout=120,
    )
    return [python_tool, shell_tool, write_tool, read_tool]
