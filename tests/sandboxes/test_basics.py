"""The runner's everyday behaviour: a notebook-like Python namespace, shell commands, files, output caps."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from sandboxes import DockerSandbox, SandboxFileError

pytestmark = pytest.mark.docker


def test_namespace_persists_and_last_expression_is_the_value(sb: DockerSandbox) -> None:
    r = sb.run_python("import math\nx = 41\nprint('hello')\nx + 1")
    assert r.ok
    assert r.stdout == "hello\n"
    assert r.value == "42"
    r = sb.run_python("x, math.pi > 3, _")
    assert r.value == "(41, True, 42)"
    assert sb.run_python("y = 1").value is None


def test_exception_gives_summary_and_traceback_of_the_cell_only(sb: DockerSandbox) -> None:
    r = sb.run_python("def f():\n    return 1 / 0\nf()")
    assert not r.ok
    assert r.error == "ZeroDivisionError: division by zero"
    assert r.traceback is not None
    assert "<cell-" in r.traceback
    assert "return 1 / 0" in r.traceback
    assert "_runner" not in r.traceback
    assert "run_cell" not in r.traceback
    assert not r.state_lost


def test_syntax_error_and_stderr(sb: DockerSandbox) -> None:
    r = sb.run_python("def (")
    assert not r.ok
    assert r.error is not None
    assert r.error.startswith("SyntaxError")
    r = sb.run_python("import sys; print('warn', file=sys.stderr)")
    assert r.ok
    assert r.stderr == "warn\n"


def test_input_has_no_stdin_and_sys_exit_is_reported(
    sb: DockerSandbox, healthy: Callable[[DockerSandbox], None]
) -> None:
    r = sb.run_python("input()")
    assert r.error is not None
    assert r.error.startswith("EOFError")
    r = sb.run_python("import sys; sys.exit(3)")
    assert r.error == "SystemExit: 3"
    assert not r.state_lost
    healthy(sb)


def test_shell_runs_in_workspace_as_non_root(sb: DockerSandbox) -> None:
    r = sb.run_shell("pwd; id -u; echo oops >&2; exit 3")
    assert r.stdout == "/workspace\n1000\n"
    assert r.stderr == "oops\n"
    assert r.exit_code == 3
    assert not r.ok
    assert r.error == "exit status 3"


def test_files_round_trip_and_are_shared_with_python_and_shell(sb: DockerSandbox) -> None:
    assert sb.write_file("src/data.bin", bytes(range(256))) == "/workspace/src/data.bin"
    assert sb.read_file("/workspace/src/data.bin") == bytes(range(256))
    sb.write_file("hello.py", "def hi():\n    return 'hi'\n")
    assert sb.run_python("from hello import hi; hi()").value == "'hi'"
    assert sb.run_shell("python3 hello.py && cat src/data.bin | wc -c").stdout == "256\n"
    sb.run_shell("printf 'made by shell' > out.txt")
    assert sb.read_file("out.txt") == b"made by shell"


def test_programs_in_the_workspace_can_be_executed(sb: DockerSandbox) -> None:
    sb.write_file("run.sh", "#!/bin/sh\necho ran\n")
    r = sb.run_shell("chmod +x run.sh && ./run.sh")
    assert r.stdout == "ran\n", r


def test_file_errors_are_for_the_model(sb: DockerSandbox, healthy: Callable[[DockerSandbox], None]) -> None:
    with pytest.raises(SandboxFileError, match="No such file") as caught:
        sb.read_file("missing.txt")
    assert caught.value.reason is None
    with pytest.raises(SandboxFileError, match="only files under /workspace") as caught:
        sb.read_file("/etc/passwd")
    assert caught.value.reason == "outside_workspace"
    with pytest.raises(SandboxFileError, match="only files under /workspace"):
        sb.write_file("../etc/evil", "x")
    sb.run_shell("ln -s /etc /workspace/etc_link")
    with pytest.raises(SandboxFileError, match="only files under /workspace"):
        sb.read_file("etc_link/passwd")
    with pytest.raises(SandboxFileError, match="only files under /workspace"):
        sb.write_file("etc_link/evil", "x")
    with pytest.raises(SandboxFileError, match="not a regular file") as caught:
        sb.read_file(".")
    assert caught.value.reason == "not_a_file"
    with DockerSandbox(sb.image, config=sb.config.model_copy(update={"max_read_bytes": 10})) as small:
        small.write_file("big.bin", b"x" * 100)
        with pytest.raises(SandboxFileError, match="more than the limit of 10") as caught:
            small.read_file("big.bin")
    assert caught.value.reason == "too_large"
    healthy(sb)


def test_reset_gives_a_fresh_namespace_and_keeps_files(sb: DockerSandbox) -> None:
    sb.run_python("z = 1")
    sb.write_file("keep.txt", "kept")
    sb.reset()
    assert sb.run_python("z").error == "NameError: name 'z' is not defined"
    assert sb.read_file("keep.txt") == b"kept"


def test_numpy_is_available(sb: DockerSandbox) -> None:
    r = sb.run_python("import numpy as np; int(np.arange(10).sum())")
    assert r.value == "45", r


def test_sandbox_reports_its_image_and_closes(sandbox_image: str) -> None:
    sandbox = DockerSandbox()
    assert sandbox.image == sandbox_image
    assert not sandbox.started  # nothing happens in the constructor
    with sandbox:
        assert sandbox.started
        assert sandbox.container_id
    assert not sandbox.started
