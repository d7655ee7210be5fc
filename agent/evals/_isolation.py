"""The checking program's two processes: the official test in one, the solution in another, plain values between.

This file is code that runs inside the check's sandbox, never on the host: `checking.check_program` sends its
source with a call to `run_check` at the end. So it is standard-library only and stays runnable on any python3
from 3.8 on; the host imports it only to read its source (and the tests, to check the encoding).

Why two processes. If the solution ran in the test's process, it could reach the test's state: rewrite the
caller's frame through `sys._getframe`, replace `check`, find the token that says the test finished, or return
an object whose `__eq__` always says True. So the test's process (`run_check`) never runs a line of the
solution. It starts a fresh interpreter (`serve`), which runs the prompt and the solution and waits for calls.
The `candidate` the official `check` receives is a stand-in: it sends the arguments over a pipe, and turns the
answer back into plain built-in values (None, bool, int, float, complex, str, bytes, and lists, tuples, sets,
frozensets and dicts of them) before the test compares anything. Whatever the solution does in its own process,
including rewriting `serve` itself, only such values come back; `==` is then the built-in one.

The test's process makes itself non-dumpable first, so the solution's process (same user, no capabilities)
cannot read its memory (the token) or open its descriptors (its stdout) through /proc. The solution's process
writes its own output to stderr; its protocol is one JSON object per line.
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 100
MAX_LINE = 64 * 1024 * 1024
PR_SET_DUMPABLE = 4
_SEQUENCES: dict[str, Callable[[list[Any]], Any]] = {
    "list": list,
    "tuple": tuple,
    "set": set,
    "frozenset": frozenset,
}


class NotPlain(Exception):
    """A value that is not made of plain built-in values only (or is nested deeper than MAX_DEPTH)."""


class CandidateError(Exception):
    """The solution raised, returned something that is not a plain value, or its process ended."""


# ------------------------------------------------------------------------------------------------ values


def encode(value: Any, depth: int = 0) -> Any:
    """`value` as JSON-ready data: scalars as they are, everything else tagged by its exact type.

    Exact types only: a subclass of int or str could change `==`. NumPy scalars become the Python scalar their
    `item()` returns (the official harness compares `numpy.int64(3) == 3` as True); arrays are refused.
    """
    if depth > MAX_DEPTH:
        raise NotPlain(f"a value nested more than {MAX_DEPTH} levels deep")
    kind = type(value)
    if value is None or kind in (bool, int, float, str):
        return value
    if kind in (list, tuple, set, frozenset):
        return {kind.__name__: [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if kind is bytes:
        return {"bytes": base64.b64encode(value).decode("ascii")}
    if kind is complex:
        return {"complex": [value.real, value.imag]}
    if getattr(kind, "__module__", None) == "numpy" and getattr(value, "shape", None) == ():
        return encode(value.item(), depth + 1)
    raise NotPlain(f"a value of type {kind.__name__} (only plain built-in values can be compared)")


def decode(data: Any, depth: int = 0) -> Any:
    """The plain value `data` (from `json.loads`) stands for; anything else is `NotPlain`."""
    if depth > MAX_DEPTH:
        raise NotPlain(f"a value nested more than {MAX_DEPTH} levels deep")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is dict and len(data) == 1:
        ((tag, body),) = data.items()
        if tag in _SEQUENCES and type(body) is list:
            try:
                return _SEQUENCES[tag]([decode(item, depth + 1) for item in body])
            except TypeError as exc:  # an unhashable member of a set
                raise NotPlain(str(exc)) from None
        if tag == "dict" and type(body) is list:
            return _decode_dict(body, depth)
        if tag == "bytes" and type(body) is str:
            return base64.b64decode(body.encode("ascii"), validate=True)
        if (
            tag == "complex"
            and type(body) is list
            and [type(part) in (int, float) for part in body] == [True, True]
        ):
            return complex(body[0], body[1])
    raise NotPlain("data that stands for no plain value")


def _decode_dict(pairs: list[Any], depth: int) -> dict[Any, Any]:
    result = {}
    for pair in pairs:
        if type(pair) is not list or len(pair) != 2:
            raise NotPlain("a dict entry that is not a pair")
        try:
            result[decode(pair[0], depth + 1)] = decode(pair[1], depth + 1)
        except TypeError as exc:  # an unhashable key
            raise NotPlain(str(exc)) from None
    return result


def describe(exc: BaseException) -> str:
    """`Type: message` of an exception, even one whose `__str__` misbehaves."""
    try:
        message = str(exc)
    except BaseException:
        message = ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return text[:2000]


# ------------------------------------------------------------------------------------------------ the solution


def _write_line(fd: int, message: dict[str, Any]) -> None:
    data = memoryview((json.dumps(message) + "\n").encode("ascii"))
    while data:
        data = data[os.write(fd, data) :]


def _answer(fn: Callable[..., Any], line: bytes) -> dict[str, Any]:
    try:
        call = json.loads(line)
        args = [decode(a) for a in call["args"]]
        kwargs = {str(k): decode(v) for k, v in call["kwargs"].items()}
        return {"value": encode(fn(*args, **kwargs))}
    except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the test gets to know
        return {"raised": describe(exc)}


def serve() -> None:
    """The solution's process: run the sources from the first line, then answer calls of the entry point."""
    proto_in = os.fdopen(os.dup(0), "rb")
    proto_out = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # what the solution prints goes to stderr, never into the protocol
    setup = json.loads(proto_in.readline())
    namespace: dict[str, Any] = {"__name__": "__candidate__"}
    fn: Any = None
    try:
        for name, source in setup["sources"]:
            exec(compile(source, name, "exec"), namespace)
        fn = namespace.get(setup["entry_point"])
        if not callable(fn):
            raise NameError("the solution defines no function " + setup["entry_point"])
        _write_line(proto_out, {"ready": True})
    except BaseException as exc:
        _write_line(proto_out, {"raised": describe(exc)})
        os._exit(0)
    for line in iter(lambda: proto_in.readline(MAX_LINE), b""):
        _write_line(proto_out, _answer(fn, line))
    os._exit(0)


# ------------------------------------------------------------------------------------------------ the test


def _shield() -> None:
    """Make this process non-dumpable: its memory and descriptors become unreachable for its own user."""
    import ctypes

    if ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise SystemExit("the check cannot shield itself from the solution (prctl failed)")


class Candidate:
    """What the official test calls instead of the solution: one call, one round trip, plain values back."""

    def __init__(self, server: Any) -> None:
        self.server = server

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        request = {"args": [encode(a) for a in args], "kwargs": {k: encode(v) for k, v in kwargs.items()}}
        self.server.stdin.write((json.dumps(request) + "\n").encode("ascii"))
        self.server.stdin.flush()
        return self.read_answer("value")

    def read_answer(self, key: str) -> Any:
        line = self.server.stdout.readline(MAX_LINE)
        if not line.endswith(b"\n"):
            raise CandidateError("the solution's process ended (or sent a line longer than allowed)")
        try:
            answer = json.loads(line)
        except (ValueError, RecursionError):
            raise CandidateError("the solution's process sent something that is not JSON") from None
        if type(answer) is not dict or len(answer) != 1:
            raise CandidateError("the solution's process sent something that is not an answer")
        if type(answer.get("raised")) is str:
            raise CandidateError(answer["raised"])
        if key not in answer:
            raise CandidateError("the solution's process sent something that is not an answer")
        try:
            return decode(answer[key])
        except (NotPlain, ValueError, RecursionError) as exc:
            raise CandidateError(f"the solution returned no plain value ({describe(exc)})") from None


def run_check(
    sources: list[list[str]], entry_point: str, test: str, prompt: str, token: str, server_source: str
) -> None:
    """Run the official `check` on a stand-in for the solution; write `token` to stdout once it passed."""
    import subprocess  # here: the solution's interpreter does not need it, and starts faster without

    _shield()
    token_fd = os.dup(1)
    server = subprocess.Popen(
        [sys.executable, "-I", "-c", server_source + "\nserve()\n"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        close_fds=True,
    )
    try:
        candidate = Candidate(server)
        assert server.stdin is not None
        server.stdin.write(
            (json.dumps({"sources": sources, "entry_point": entry_point}) + "\n").encode("ascii")
        )
        server.stdin.flush()
        candidate.read_answer("ready")
        namespace: dict[str, Any] = {"__name__": "__check__"}
        exec(compile(prompt, "prompt.py", "exec"), namespace)
        namespace[entry_point] = candidate  # some tests call the function by its name, not as `candidate`
        exec(compile(test, "test.py", "exec"), namespace)
        namespace["check"](candidate)
    finally:
        server.kill()
        server.wait()
    os.write(token_fd, b"\n" + token.encode("ascii") + b"\n")
