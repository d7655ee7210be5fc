"""The code tool family: `python`, `shell`, `write_file` and `read_file`, bound to one `sandboxes.DockerSandbox`.

The descriptions tell the model what it cannot see: what persists between calls, where files live, the limits,
and that nothing can be downloaded or installed. Results are compact text: output first, then the value, the
error and any note (timed out, state lost), each labelled only when more than one part is present. Every
sentence of ours in them is a note template (`prompts/templates/notes/`), chosen from the result's fields; the
sandbox's own `ExecResult.error` is a summary for developers and reaches the model only when it is the code's
own error. All text is made UTF-8-safe (no lone surrogates) before it leaves here.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final, Literal

from pydantic import Field

from prompts import render_note
from sandboxes import WORKSPACE, DockerSandbox, ExecResult, SandboxFileError, clean_text
from tools.base import Tool
from tools.errors import ToolError
from tools.serialize import NO_OUTPUT, truncate_middle
from tools.types import ToolResult

__all__ = ["code_tools", "format_exec_result"]

DEFAULT_MAX_OUTPUT_CHARS = 8_000
# Extra seconds the toolbox allows beyond the sandbox's own timeout, so the sandbox's message (what was killed,
# what was lost) reaches the model instead of the toolbox's generic timeout.
_TOOLBOX_GRACE_S = 20.0
# Signals that mean the interpreter itself faulted (in native code), not that something killed it.
_NATIVE_FAULTS = {"SIGSEGV", "SIGBUS", "SIGILL", "SIGFPE", "SIGABRT"}


def _python_notes(result: ExecResult, timeout_s: dict[str, str], memory: str) -> list[str]:
    notes = []
    if result.timed_out or result.cancelled:
        limit = timeout_s if result.timed_out else {}  # a cancelled call did not run out of time
        notes.append(render_note("state_lost" if result.state_lost else "python_interrupted", **limit))
    elif result.crashed:
        if result.oom_killed:
            notes.append(render_note("python_out_of_memory", memory=memory))
        elif result.signal is not None:
            name = result.signal_name
            notes.append(
                render_note("python_native_crash" if name in _NATIVE_FAULTS else "python_killed", signal=name)
            )
        else:
            notes.append(render_note("python_exited", status=result.exit_code))
        notes.append(render_note("state_lost"))
    elif result.lost_before:
        notes.append(render_note("python_fresh_interpreter"))
    return notes


def _shell_notes(result: ExecResult, timeout_s: dict[str, str], memory: str) -> list[str]:
    notes = []
    if result.timed_out and timeout_s:
        notes.append(render_note("shell_timed_out", **timeout_s))
    elif result.timed_out or result.cancelled:
        notes.append(render_note("shell_cancelled"))
    elif result.signal is not None:
        notes.append(render_note("shell_killed", signal=result.signal_name))
    elif result.exit_code:
        notes.append(render_note("shell_exit_status", status=result.exit_code))
    if result.crashed:  # the Python process died while the command ran (the OOM killer may pick it)
        notes.append(render_note("shell_python_lost", **({"memory": memory} if result.oom_killed else {})))
        notes.append(render_note("state_lost"))
    elif notes and result.oom_killed:
        notes.append(render_note("shell_out_of_memory", memory=memory))
    return notes


# Python's words for a string literal a line break cut (3.10+, and before).
_CUT_STRING: Final = ("unterminated string literal", "EOL while scanning string literal")
# A block header after `;` or after another header's `:` on its line (only read for a SyntaxError).
_CRAMMED: Final = re.compile(r"[;:][^\n]*?\b(?:for|while|if|with|def|class|try)\b[^\n]*:")


def code_hints(code: str, result: ExecResult) -> list[str]:
    """Sentences that teach the fix for a mistake in how the code was written into the call.

    Qwen2.5-Coder-1.5B wrote `f.write(str(i) + '\\n')` as `'\\n'` in the call's JSON, where `\\n` is a line
    break: the code it sent had a string cut in two, and the bare SyntaxError did not tell it why (it sent the
    same call again, measured in benchmarks/real_tasks.py). Only a cut string literal in code that holds a line
    break gets the hint. Both models also crammed blocks onto one line (`import math; while True: ...`,
    `for i in r: print(i) if ...: ...`) and resent it on each bare SyntaxError (measured): a compound
    statement after `;` or `:` on its line gets a hint about lines and indentation.
    """
    traceback = result.traceback or ""
    if "SyntaxError" not in traceback:
        return []
    hints = []
    if "\n" in code and any(words in traceback for words in _CUT_STRING):
        hints.append(render_note("python_line_break_in_string"))
    if _CRAMMED.search(code):
        hints.append(render_note("python_one_line_blocks"))
    return hints


# Python's SyntaxError for a `return` outside any function.
_RETURN_OUTSIDE: Final = "'return' outside function"


def final_return_as_value(code: str) -> str | None:
    """`code` with its last statement `return X`, at the top level, written as the expression `X`; else None.

    A cell is not a function, so such code is a SyntaxError with one plausible meaning: X is the result
    wanted, which the cell shows as its value. Qwen2.5-Coder-0.5B wrote two of ten benchmark tasks this way
    (`import hashlib; return hashlib.sha256(...)...`) and resent the same call until the run was stopped
    (measured). Only the last statement is taken, and only when nothing else at the top level returns and the
    result compiles; anything else runs as written and fails as it would. The python tool asks for this only
    after the sandbox refused the cell with `_RETURN_OUTSIDE` (nothing of a cell runs before it compiles), so
    code that runs as written is never parsed here.
    """
    try:
        body = ast.parse(code).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not body or not isinstance(last := body[-1], ast.Return) or last.value is None:
        return None
    if any(isinstance(node, ast.Return) for node in body[:-1]):
        return None
    lines = code.splitlines(keepends=True)
    line = lines[last.lineno - 1]
    # the offset counts UTF-8 bytes, not characters
    column = len(line.encode("utf-8", "surrogatepass")[: last.col_offset].decode("utf-8", "surrogatepass"))
    if not line.startswith("return", column):
        return None
    lines[last.lineno - 1] = line[:column] + line[column + len("return") :].lstrip(" \t")
    repaired = "".join(lines)
    try:
        compile(repaired, "<cell>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return repaired


def _notes(
    result: ExecResult, kind: Literal["python", "shell"], timeout: float | None, memory: str
) -> list[str]:
    """Our sentences about what happened to the call (timed out, crashed, state lost), from the result's fields."""
    if result.lost_cause is not None:
        return [render_note(f"sandbox_{result.lost_cause}")]
    timeout_s = {} if timeout is None else {"timeout_s": f"{timeout:g}"}
    notes = (_python_notes if kind == "python" else _shell_notes)(result, timeout_s, memory)
    if result.sandbox_replaced:
        notes.append(render_note("sandbox_replaced_before"))
    return notes


def format_exec_result(
    result: ExecResult,
    max_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
    *,
    kind: Literal["python", "shell"] = "python",
    timeout: float | None = None,
    memory: str = "",
    hints: Sequence[str] = (),
) -> ToolResult:
    """The text the model reads for a `run_python` (`kind="python"`) or `run_shell` result, about `max_chars` long.

    `timeout` (the call's limit in seconds) and `memory` (the sandbox's memory limit) go into the notes that
    explain a timeout or an out-of-memory kill; `hints` (see `code_hints`) are shown with them.
    """
    notes = [*_notes(result, kind, timeout, memory), *hints]
    own_error = None
    if result.traceback and not result.ok:
        own_error = result.traceback.rstrip(
            "\n"
        )  # the code's exception, or the KeyboardInterrupt of a timeout
    elif result.error and not notes and not result.ok:
        own_error = result.error  # e.g. the shell could not be started
    parts: list[tuple[str, str]] = []
    if result.stdout:
        parts.append(("stdout", result.stdout))
    if result.stderr:
        parts.append(("stderr", result.stderr))
    if result.value is not None:
        parts.append(("value", result.value))
    if own_error:
        parts.append(("error", own_error))
    if notes:
        label = "error" if not result.ok and not own_error else "note"
        parts.append((label, " ".join(notes)))
    if not parts:
        return ToolResult(content=NO_OUTPUT, is_error=not result.ok)
    budget = max(max_chars // len(parts), 200)
    if len(parts) == 1 and parts[0][0] in ("stdout", "value"):
        text = truncate_middle(parts[0][1].rstrip("\n"), max_chars)
    else:
        text = "\n".join(
            f"[{label}]\n{truncate_middle(body.rstrip(chr(10)), budget)}" for label, body in parts
        )
    return ToolResult(content=clean_text(text), is_error=not result.ok)


def _file_error(exc: SandboxFileError, path: str, limit: int) -> ToolError:
    """What the model reads when a file operation failed: our note for our refusals, else the system's error."""
    path = clean_text(path)
    if exc.lost_cause is not None:
        return ToolError(render_note(f"sandbox_{exc.lost_cause}"))
    if exc.reason == "outside_workspace":
        return ToolError(render_note("file_outside_workspace", path=path, workspace=WORKSPACE))
    if exc.reason == "too_large":
        return ToolError(render_note("file_too_large", path=path, limit=f"{limit:,}"))
    if exc.reason == "not_a_file":
        return ToolError(render_note("file_not_a_file", path=path))
    if exc.reason == "bad_path":
        return ToolError(render_note("file_bad_path"))
    return ToolError(clean_text(str(exc)))  # from the file system, e.g. "No such file or directory: x"


def _tool(fn: Callable[..., Any], description: str, timeout: float, **parameters: str) -> Tool[..., Any]:
    """`@tool` on a function whose string parameters are described by rendered templates.

    The descriptions exist only at run time (they name the workspace and the limits), so they are attached as
    `Annotated[str, Field(description=...)]` before the function becomes a tool, the way `@tool` reads them.
    """
    fn.__annotations__ = {
        **{name: Annotated[str, Field(description=text)] for name, text in parameters.items()},
        "return": fn.__annotations__.get("return"),
    }
    return Tool.from_function(fn, description=description, timeout=timeout)


def code_tools(
    sandbox: DockerSandbox,
    *,
    timeout: float | None = None,
    max_output_chars: int = DEFAULT_MAX_OUTPUT_CHARS,
) -> list[Tool[..., Any]]:
    """The four tools bound to `sandbox` (started on first use if it is not yet; the caller closes it).

    `timeout` is the seconds one call may run (default: the sandbox's `default_timeout`).
    """
    cfg = sandbox.config
    limit = timeout or cfg.default_timeout
    limits = render_note(
        "sandbox_limits",
        memory=cfg.memory,
        cpus=f"{cfg.cpus:g}",
        disk=cfg.workspace_size,
        workspace=WORKSPACE,
    )
    toolbox_timeout = limit + cfg.kill_grace + _TOOLBOX_GRACE_S

    async def python(code: str) -> ToolResult:
        result = await sandbox.arun_python(code, timeout=limit)
        repaired = final_return_as_value(code) if _RETURN_OUTSIDE in (result.traceback or "") else None
        if repaired is not None:  # the refused cell ran nothing: run it again, repaired
            result = await sandbox.arun_python(repaired, timeout=limit)
        hints = code_hints(repaired or code, result)
        if repaired is not None:
            hints.append(render_note("python_return_as_value"))
        return format_exec_result(
            result, max_output_chars, kind="python", timeout=limit, memory=cfg.memory, hints=hints
        )

    async def shell(command: str) -> ToolResult:
        result = await sandbox.arun_shell(command, timeout=limit)
        return format_exec_result(result, max_output_chars, kind="shell", timeout=limit, memory=cfg.memory)

    async def write_file(path: str, content: str) -> str:
        content = clean_text(content)  # what the sandbox writes, so the size reported is the size written
        try:
            where = await sandbox.awrite_file(path, content)
        except SandboxFileError as exc:
            raise _file_error(exc, path, cfg.max_read_bytes) from None
        return render_note("file_written", size=f"{len(content.encode('utf-8')):,}", path=where)

    async def read_file(path: str) -> str:
        try:
            data = await sandbox.aread_file(path)
        except SandboxFileError as exc:
            raise _file_error(exc, path, cfg.max_read_bytes) from None
        if b"\x00" in data[:8192]:
            return render_note("file_binary", path=clean_text(path), size=f"{len(data):,}")
        text = truncate_middle(data.decode("utf-8", errors="replace"), max_output_chars)
        return text or render_note("file_empty")

    path = render_note("param_path", workspace=WORKSPACE)
    python_tool = _tool(
        python,
        render_note("tool_python", workspace=WORKSPACE, timeout_s=f"{limit:g}", limits=limits),
        toolbox_timeout,
        code=render_note("param_code"),
    )
    shell_tool = _tool(
        shell,
        render_note("tool_shell", workspace=WORKSPACE, timeout_s=f"{limit:g}", limits=limits),
        toolbox_timeout,
        command=render_note("param_command"),
    )
    write_tool = _tool(
        write_file,
        render_note("tool_write_file", workspace=WORKSPACE),
        120,
        path=path,
        content=render_note("param_content"),
    )
    read_tool = _tool(read_file, render_note("tool_read_file", workspace=WORKSPACE), 120, path=path)
    return [python_tool, shell_tool, write_tool, read_tool]
