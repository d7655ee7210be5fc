"""Whole runs fed hostile model output: every run ends with a stop reason and a transcript that reads back.

Issue 9 asks that nothing the model, a tool or a web page sends can crash a run. The parts have their own
hostile tests (parser, toolbox, sandbox frames, fetch); this file checks the whole: a seeded generator writes
model outputs full of lone surrogates (in reasoning, text, tool names, argument keys and values), JSON nested
50 to 100,000 deep, `1e999`, `NaN`, numbers of 400 and 5,000 digits, control characters and terminal escapes,
ChatML tags, malformed and unclosed `<tool_call>` blocks, the other call forms, calls to unknown tools and huge
strings. `ScriptedModel` plays them into a real `Agent` with a transcript on and these tools:

- our own function tools (`@tool`, sync and async, and `Tool.from_schema`), some of which hand back hostile
  values themselves (surrogates, deep or circular structures, huge integers, exceptions whose messages carry
  surrogates or cannot be rendered, `SystemExit`, `StopIteration`, timeouts);
- `web_fetch`, allowed onto a hostile HTTP server on 127.0.0.1 (surrogate escapes in JSON, deep JSON, charsets
  that name no text encoding, terminal escapes, invalid UTF-8, broken compression, redirect loops);
- the sandbox code tools on a real container (marked docker), whose code prints surrogates and escapes and
  forges runner frames through `/proc/1/fd/1`.

Each request the loop makes is also encoded the way both HTTP modes of `OpenAICompatModel` send it (the
rendered QwQ prompt as UTF-8, the chat body through httpx's JSON encoder), so text that would break the next
request fails here rather than on a server.

After each run: a `FinalAnswer` event came last with the run's stop reason; the transcript is strict JSONL
(UTF-8, no NaN or Infinity) that `read_transcript` reads back with the same steps and stop reason; and
resuming it works (an answered run returns its answer without asking the model, any other continues with a
new task to an answer). A failure names the seed it came from: `QWQ_FUZZ_SEED=<seed> QWQ_FUZZ_RUNS=1` replays
it alone.

The CLI part runs `qwq-agent run`, `replay` and `report` in-process (`agent.cli.main`) on hostile scripts and
on damaged transcripts, and checks that no traceback and no "unexpected error" reaches the terminal and that
the exit code is 0, 1 or 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gzip
import http.server
import io
import json
import os
import random
import shutil
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

import prompts
from agent import Agent, StopReason
from agent.events import Event, FinalAnswer, ToolCallFinished, ToolCallStarted
from agent.models import ModelChunk, ModelRequest, ScriptedModel
from agent.models._chat import chat_messages, tool_dict
from agent.transcript import read_transcript
from tools import Tool, tool
from tools.types import ToolResult

REPO = Path(__file__).resolve().parents[2]
SEED = int(os.environ.get("QWQ_FUZZ_SEED", "20261202"))
# QWQ_FUZZ_RUNS=N runs N of each kind instead of the defaults (with QWQ_FUZZ_SEED, one seed alone)
_ONLY = os.environ.get("QWQ_FUZZ_RUNS")

# How the 10,000 runs are spread: the fast path (function tools only) carries most of them.
FAST_RUNS = 9_140
WEB_RUNS = 600
CLI_RUNS = 200
SANDBOX_RUNS = 60


def runs(default: int) -> int:
    return int(_ONLY) if _ONLY else default


# ----------------------------------------------------------------- hostile pieces

SURROGATES = ("\ud800", "\udc80", "\udfff", "\udbff", "\ud83d")
ESCAPED_SURROGATES = ("\\ud800", "\\udc80", "\\udfff", "\\ud83d\\ud83d", "\\udbff")
ESCAPES = (
    "\x1b[2J",
    "\x1b[?1049h",
    "\x1b]0;pwned\x07",
    "\x1b]52;c;aGVsbG8=\x07",
    "\x1b[31m",
    "\x9b2J",
    "\r",
    "\x08",
    "\x00",
    "\x7f",
    "\u202e",
    "\u2028",
    "\ufeff",
    "\x1bP+q\x1b\\",
)
TAGS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|im_start|>user\n",
    "<think>",
    "</think>",
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<tools>",
    "</tools>",
    "```json\n",
    "```",
    "<function=echo>",
    "</function>",
    "<|endoftext|>",
)
WORDS = (
    "the",
    "answer",
    "is",
    "42",
    "let",
    "me",
    "call",
    "a",
    "tool",
    "héllo",
    "日本語",
    "😀",
    "{",
    "}",
    '"',
)
# JSON number texts a model may write; several overflow or exceed Python's 4,300-digit int limit
NUMBERS = (
    "1e999",
    "-1e999",
    "1E400",
    "NaN",
    "Infinity",
    "-Infinity",
    "1" + "0" * 400,
    "-" + "9" * 400,
    "9" * 5_000,
    "1e-999",
    "-0",
    "0.1e309",
    "3",
    "2.5",
    "1_000",
    "0x10",
    "1.",
)
DEPTHS = (50, 63, 64, 65, 100, 255, 256, 1_000, 10_000, 100_000)
TOOL_NAMES = ("echo", "compute", "store", "hostile", "lookup", "slow")
UNKNOWN_NAMES = (
    "unknown_tool",
    "rm -rf /",
    "",
    "a" * 300,
    "echo\ud800",
    "ech\\udc80o",
    "\x1b[2Jecho",
    "ECHO",
    "eco",
)


class Hostile:
    """A seeded source of hostile model output; the same seed writes the same outputs."""

    def __init__(self, seed: int, tool_names: Sequence[str] = TOOL_NAMES, urls: Sequence[str] = ()) -> None:
        self.rng = random.Random(seed)
        self.tool_names = tuple(tool_names)
        self.urls = tuple(urls)
        # One run in twenty carries the huge pieces (megabytes, 100,000 levels): they cost time, not coverage.
        self.big = self.rng.random() < 0.05
        self.sizes = (1_000, 30_000, 300_000) if self.big else (10, 100, 1_000)
        self.depths = DEPTHS if self.big else tuple(d for d in DEPTHS if d <= 1_000)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    # -- text

    def text(self, pieces: int = 8) -> str:
        rng = self.rng
        out = []
        for _ in range(rng.randint(0, pieces)):
            kind = rng.random()
            if kind < 0.35:
                out.append(rng.choice(WORDS))
            elif kind < 0.55:
                out.append(rng.choice(SURROGATES))
            elif kind < 0.72:
                out.append(rng.choice(ESCAPES))
            elif kind < 0.82:
                out.append(rng.choice(TAGS))
            elif kind < 0.9:
                out.append(chr(rng.randint(0, 0x10FFFF)))
            elif kind < 0.97:
                out.append(rng.choice(NUMBERS))
            else:
                out.append(rng.choice(("x", "\ud800", "\x1b[2J", "é")) * rng.choice(self.sizes))
        return " ".join(out)

    def json_string(self) -> str:
        """A JSON string literal with escaped and raw surrogates, escapes and control characters."""
        rng = self.rng
        parts = []
        for _ in range(rng.randint(0, 5)):
            kind = rng.random()
            if kind < 0.3:
                parts.append(rng.choice(ESCAPED_SURROGATES))
            elif kind < 0.5:
                parts.append(rng.choice(SURROGATES))  # raw, not escaped: JSON allows it, UTF-8 does not
            elif kind < 0.65:
                parts.append(rng.choice(("\\u001b[2J", "\\u0000", "\\u009b", "\\n", "\\\\", '\\"')))
            elif kind < 0.75:
                parts.append(rng.choice(ESCAPES).replace("\\", "\\\\").replace('"', '\\"'))
            elif kind < 0.8:
                parts.append("y" * rng.choice(self.sizes))
            else:
                parts.append(rng.choice(WORDS).replace('"', '\\"'))
        return '"' + "".join(parts) + '"'

    def deep(self) -> str:
        rng = self.rng
        n = rng.choice(self.depths)
        kind = rng.randrange(4)
        if kind == 0:
            return "[" * n + "]" * n
        if kind == 1:
            return '{"a": ' * n + "1" + "}" * n
        if kind == 2:
            return "[" * n + self.json_string() + "]" * n
        return "[" * n  # never closed

    def value(self, depth: int = 0) -> str:
        """A JSON(-ish) value as text: what a model writes as an argument."""
        rng = self.rng
        kind = rng.random()
        if kind < 0.3:
            return self.json_string()
        if kind < 0.5:
            return rng.choice(NUMBERS)
        if kind < 0.62:
            return self.deep()
        if kind < 0.7:
            return rng.choice(
                ("True", "None", "'single'", "null", "true", "undefined", "[1, 2,]", "{'a': 1}")
            )
        if kind < 0.85 and depth < 3:
            return self.arguments(depth + 1)
        if depth < 3:
            return "[" + ", ".join(self.value(depth + 1) for _ in range(rng.randint(0, 3))) + "]"
        return str(rng.randint(-(10**6), 10**6))

    def key(self) -> str:
        rng = self.rng
        if self.chance(0.7):
            return json.dumps(
                rng.choice(("text", "x", "n", "data", "kind", "size", "q", "opts", "url", "page"))
            )
        return self.json_string()

    def arguments(self, depth: int = 0) -> str:
        items = [f"{self.key()}: {self.value(depth)}" for _ in range(self.rng.randint(0, 3))]
        return "{" + ", ".join(items) + "}"

    def tool_name(self) -> str:
        rng = self.rng
        if self.chance(0.75) and self.tool_names:
            name = rng.choice(self.tool_names)
        else:
            name = rng.choice(UNKNOWN_NAMES)
        text = json.dumps(name, ensure_ascii=False)
        if self.chance(0.05):
            text = rng.choice(("123", "null", "[1]", "{}", self.json_string()))
        return text

    def good_arguments(self, name: str) -> str:
        """Arguments that validate (mostly), so the tools really run with hostile payloads."""
        rng = self.rng
        s = self.json_string
        if name == "echo":
            return f'{{"text": {s()}}}'
        if name == "compute":
            return f'{{"x": {rng.choice(NUMBERS)}, "n": {rng.choice(("2", "1" + "0" * 30, "-1"))}}}'
        if name == "store":
            return f'{{"data": {self.arguments()}}}'
        if name == "hostile":
            return f'{{"kind": "{rng.choice(HOSTILE_KINDS)}"}}'
        if name == "lookup":
            return f'{{"q": {s()}, "opts": {self.arguments()}}}'
        if name == "web_fetch" and self.urls:
            url = json.dumps(rng.choice(self.urls), ensure_ascii=False)
            return f'{{"url": {url}, "page": {rng.choice(("1", "2", "99", "0", "1e999"))}}}'
        if name in ("python", "shell"):
            return json.dumps({"code" if name == "python" else "command": rng.choice(SANDBOX_CODE[name])})
        if name == "write_file":
            return f'{{"path": {s()}, "content": {s()}}}'
        if name == "read_file":
            return f'{{"path": {rng.choice((s(), json.dumps("f.bin"), json.dumps("/etc/shadow")))}}}'
        return "{}"

    def call_body(self) -> str:
        rng = self.rng
        name_text = self.tool_name()
        try:
            name = json.loads(name_text)
        except ValueError:
            name = None
        arguments = (
            self.good_arguments(name) if isinstance(name, str) and self.chance(0.6) else self.arguments()
        )
        kind = rng.random()
        if kind < 0.75:
            return f'{{"name": {name_text}, "arguments": {arguments}}}'
        if kind < 0.82:
            return f'{{"name": {name_text}, "arguments": {json.dumps(arguments, ensure_ascii=False)}}}'
        if kind < 0.87:
            return f'{{"name": {name_text}, "arguments": {arguments}'  # cut short
        if kind < 0.9:
            return f"{{'name': {name_text}, 'arguments': {arguments}}}"
        if kind < 0.93:
            return f'[{{"name": {name_text}, "arguments": {arguments}}}]'
        if kind < 0.96:
            return self.deep()
        return self.text(3)

    def call(self) -> str:
        rng = self.rng
        body = self.call_body()
        form = rng.random()
        if form < 0.8:
            close = "" if self.chance(0.05) else "\n</tool_call>"
            return f"<tool_call>\n{body}{close}"
        if form < 0.85:
            return f"```json\n{body}\n```"
        if form < 0.9:
            return f"<tools>\n{body}\n</tools>"
        if form < 0.95:
            return f"<function={rng.choice(self.tool_names or ('x',))}>{body}</function>"
        return body  # a bare JSON line

    def output(self, *, final: bool = False) -> str:
        """One model turn as it follows the prompt's `<think>\\n`."""
        rng = self.rng
        thinking = self.text()
        if self.chance(0.1):
            thinking += "\n" + self.call()  # a draft inside the reasoning
        if final:
            return f"{thinking}\n</think>\n\n{self.text() or 'done'} final"
        if self.chance(0.07):
            return thinking  # reasoning that never closes
        content = self.text(4) if self.chance(0.5) else ""
        calls = [self.call() for _ in range(rng.choice((0, 1, 1, 1, 2, 3)))]
        tail = ""
        if self.chance(0.05):
            tail = "\n<tool_response>\n" + self.text(3) + "\n</tool_response>"
        return f"{thinking}\n</think>\n\n{content}" + "\n".join(calls) + tail

    def working_output(self) -> str:
        """A turn whose calls are well formed, so the tools really run the hostile payloads."""
        calls = []
        for _ in range(self.rng.choice((1, 1, 2))):
            name = self.rng.choice(self.tool_names)
            calls.append(
                f'<tool_call>\n{{"name": "{name}", "arguments": {self.good_arguments(name)}}}\n</tool_call>'
            )
        return f"{self.text(3)}\n</think>\n\n" + "\n".join(calls)

    def working_script(self) -> list[str]:
        """Mostly working turns, some hostile ones, maybe an answer."""
        rng = self.rng
        outputs = [
            self.working_output() if self.chance(0.8) else self.output() for _ in range(rng.randint(1, 4))
        ]
        if self.chance(0.5):
            outputs.append(self.output(final=True))
        return outputs

    def script(self) -> list[str]:
        rng = self.rng
        outputs = [self.output() for _ in range(rng.randint(1, 5))]
        if self.chance(0.1):  # the same turn again and again: stuck detection
            outputs += [outputs[-1]] * rng.randint(2, 5)
        if self.chance(0.6):
            outputs.append(self.output(final=True))
        return outputs


# ----------------------------------------------------------------- tools that are hostile themselves

HOSTILE_KINDS = (
    "surrogate",
    "escapes",
    "deep",
    "circular",
    "bigint",
    "nan",
    "bytes",
    "huge",
    "raise_surrogate",
    "raise_unprintable",
    "raise_long",
    "exit",
    "stop_iteration",
    "tool_result",
    "unprintable_object",
    "surrogate_key",
)


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


class _BadObject:
    def __repr__(self) -> str:
        raise ValueError("\ud800")

    __str__ = __repr__


def _hostile_value(kind: str) -> Any:
    """What a badly behaved tool hands back (or raises) for `kind`."""
    if kind == "surrogate":
        return "a\ud800b\udc80c"
    if kind == "escapes":
        return "".join(ESCAPES)
    if kind == "deep":
        value: Any = 1
        for _ in range(100_000):
            value = [value]
        return value
    if kind == "circular":
        loop: dict[str, Any] = {}
        loop["self"] = loop
        return loop
    if kind == "bigint":
        return 10**5000
    if kind == "nan":
        return {"x": float("nan"), "y": float("inf")}
    if kind == "bytes":
        return b"\xff\xfe\x00"
    if kind == "huge":
        return "z\ud800" * 3_000_000
    if kind == "raise_surrogate":
        raise RuntimeError("bad \udc80 value \x1b[2J")
    if kind == "raise_unprintable":
        raise _Unprintable()
    if kind == "raise_long":
        raise ValueError("\ud800" * 1_000_000)
    if kind == "exit":
        raise SystemExit(3)
    if kind == "stop_iteration":
        raise StopIteration("\ud800")
    if kind == "tool_result":
        return ToolResult(content="forged \ud800 \x1b]52;c;aGk=\x07", is_error=True)
    if kind == "unprintable_object":
        return _BadObject()
    if kind == "surrogate_key":
        return {"\ud800key": "\udc80", "ok": [1, "\udfff"]}
    return f"unknown kind {kind}"


@tool
def echo(text: str) -> str:
    """Repeat a text back.

    Args:
        text: what to repeat
    """
    return text


@tool
def compute(x: float, n: int = 1) -> float:
    """Multiply a number.

    Args:
        x: the number
        n: the factor
    """
    return x * n


@tool
async def store(data: dict[str, Any]) -> dict[str, Any]:
    """Store an object and return it.

    Args:
        data: the object
    """
    return data


@tool
def hostile(kind: str) -> Any:
    """Return something awkward.

    Args:
        kind: which awkward thing
    """
    return _hostile_value(kind)


async def _lookup(**arguments: Any) -> Any:
    return {"found": arguments, "kind": _hostile_value(str(arguments.get("q", ""))[:20])}


LOOKUP = Tool.from_schema(
    "lookup",
    "Look something up.",
    {
        "type": "object",
        "properties": {"q": {"type": "string"}, "opts": {"type": "object"}},
        "required": ["q"],
    },
    _lookup,
)


@tool(timeout=0.05)
async def slow(text: str = "") -> str:
    """Take too long.

    Args:
        text: ignored
    """
    await asyncio.sleep(5)
    return text


FUNCTION_TOOLS: list[Any] = [echo, compute, store, hostile, LOOKUP, slow]


# ----------------------------------------------------------------- the model: scripted, requests checked

_CHAT_URL = "http://127.0.0.1:9/v1/chat/completions"


def check_request(request: ModelRequest) -> None:
    """Encode `request` as both modes of `OpenAICompatModel` would send it; raises if either cannot."""
    messages, tools_ = list(request.messages), list(request.tools)
    prompts.render(messages, tools_, keep_thinking=request.keep_thinking).encode("utf-8")
    body: dict[str, Any] = {"messages": chat_messages(messages), "stream": True}
    if tools_:
        body["tools"] = [tool_dict(t) for t in tools_]
    httpx.Request("POST", _CHAT_URL, json=body).read()
    json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")


class CheckedModel(ScriptedModel):
    """`ScriptedModel` that first encodes each request the way the HTTP backend would send it."""

    async def stream(self, request: ModelRequest) -> AsyncIterator[ModelChunk]:
        check_request(request)
        async for chunk in super().stream(request):
            yield chunk


# ----------------------------------------------------------------- the checks after each run


@functools.cache
def _protocol_note() -> str:
    return prompts.render_note("sandbox_protocol")


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_transcript_lines(path: Path) -> int:
    """Every line is strict JSON in UTF-8 (no NaN, no Infinity) and an object; returns the line count."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), "the last line is torn"
    lines = data.split(b"\n")[:-1]
    for number, line in enumerate(lines, 1):
        text = line.decode("utf-8")  # strict: no surrogates, no invalid bytes
        record = json.loads(text, parse_constant=_no_constants)
        assert isinstance(record, dict), f"line {number} is not an object"
    return len(lines)


def final_script(rng: random.Random) -> list[str]:
    return [f"done\n</think>\n\nresumed answer {rng.randint(0, 999)}"]


@dataclass
class Outcome:
    seed: int
    stop_reason: str = ""
    steps: int = 0
    lines: int = 0
    error: str = ""
    calls: dict[str, int] = field(default_factory=dict)
    """Calls the loop started (then validated and run, or refused), by tool name."""
    replaced: int = 0
    """Results saying the sandbox was replaced because its output broke the protocol (a forged frame)."""


async def run_and_check(
    seed: int, outputs: list[str], tools_: Sequence[Any], directory: Path, **options: Any
) -> Outcome:
    """One run with its checks; anything wrong becomes `Outcome.error` (with the seed), never an exception."""
    outcome = Outcome(seed)
    rng = random.Random(seed)
    agent_options: dict[str, Any] = {
        "max_steps": rng.randint(1, 6),
        "max_malformed_turns": rng.randint(1, 3),
        "stuck_after": rng.randint(2, 3),
        "tool_timeout": 10.0,
        "transcript_dir": directory,
        **options,
    }
    if rng.random() < 0.1:
        agent_options["token_budget"] = rng.randint(1, 2_000)
    if rng.random() < 0.1:
        agent_options["max_tool_calls"] = rng.randint(1, 3)
    if rng.random() < 0.03:
        agent_options["timeout"] = rng.choice((0.001, 0.03, 0.2))
    if rng.random() < 0.1:
        agent_options["tool_choice"] = rng.choice(("required", "none", tools_[0].name if tools_ else "auto"))
    try:
        # small chunks test the parser's hold-backs; a huge output in 1-character chunks would only cost time
        chunk_size = max(rng.choice((1, 7, 64, 4096)), max(map(len, outputs), default=0) // 1_000)
        agent = Agent(CheckedModel(outputs, chunk_size=chunk_size), list(tools_), **agent_options)
        run = agent.iter(rng.choice(("solve it", "héllo \x1b[2J task")))
        events: list[Event] = [event async for event in run]
        for event in events:
            if isinstance(event, ToolCallStarted):
                name = event.call.name if event.call.name in agent.toolbox else "(unknown)"
                outcome.calls[name] = outcome.calls.get(name, 0) + 1
            elif isinstance(event, ToolCallFinished) and _protocol_note() in event.result.content:
                outcome.replaced += 1
        result = run.result
        assert result is not None, "the run ended without a result"
        assert isinstance(events[-1], FinalAnswer), f"the last event is {type(events[-1]).__name__}"
        assert events[-1].stop_reason == result.stop_reason.value
        assert result.stop_reason in set(StopReason)
        outcome.stop_reason, outcome.steps = result.stop_reason.value, result.steps
        path = run.transcript_path
        assert path is not None
        if result.steps == 0:
            assert not path.exists(), "a run without a finished step left a transcript"
            return outcome
        outcome.lines = check_transcript_lines(path)
        record = read_transcript(path)
        assert record.steps == result.steps, (record.steps, result.steps)
        assert record.stop_reason == result.stop_reason.value, (record.stop_reason, result.stop_reason)
        # resume: an answered run returns its answer as is; any other continues with a new task
        again = Agent(CheckedModel(final_script(rng)), list(tools_), transcript_dir=directory)
        if record.answered:
            resumed = await again.resume(path)
            assert resumed.answer == result.answer
        else:
            resumed = await again.resume(path, task=rng.choice(("go on", "go on \ud800 \x1b[2J")))
            assert resumed.stop_reason is StopReason.FINAL_ANSWER, (resumed.stop_reason, resumed.detail)
        check_transcript_lines(path)
        assert read_transcript(path).answered
        path.unlink()
    except Exception as exc:
        outcome.error = f"seed {seed}: {type(exc).__name__}: {str(exc)[:300]!r}\n" + "".join(
            traceback.format_exception(exc)[-6:]
        )
    return outcome


async def run_many(
    seeds: Sequence[int],
    make: Callable[[int], tuple[list[str], Sequence[Any]]],
    directory: Path,
    *,
    concurrency: int = 16,
    **options: Any,
) -> list[Outcome]:
    """The runs of `seeds`, `concurrency` at a time on this event loop."""
    gate = asyncio.Semaphore(concurrency)

    async def one(seed: int) -> Outcome:
        async with gate:
            outputs, tools_ = make(seed)
            return await run_and_check(seed, outputs, tools_, directory, **options)

    return list(await asyncio.gather(*(one(s) for s in seeds)))


def summarise(outcomes: list[Outcome], label: str) -> None:
    """Print what the runs did; fail with every seed that went wrong."""
    reasons: dict[str, int] = {}
    for o in outcomes:
        reasons[o.stop_reason or "error"] = reasons.get(o.stop_reason or "error", 0) + 1
    steps = sum(o.steps for o in outcomes)
    calls: dict[str, int] = {}
    for o in outcomes:
        for name, count in o.calls.items():
            calls[name] = calls.get(name, 0) + count
    print(f"\n{label}: {len(outcomes)} runs, {steps} steps, stop reasons {dict(sorted(reasons.items()))}")
    print(f"calls started: {dict(sorted(calls.items()))}")
    replaced = sum(o.replaced for o in outcomes)
    if replaced:
        print(f"sandbox replaced after a forged frame: {replaced} times")
    failures = [o.error for o in outcomes if o.error]
    assert not failures, f"{len(failures)} of {len(outcomes)} runs failed:\n" + "\n".join(failures[:5])


def seeds(offset: int, count: int) -> list[int]:
    base = SEED + offset
    return [base] if _ONLY == "1" else [base + i for i in range(count)]


@pytest.fixture
def fuzz_dir(tmp_path: Path) -> Iterator[Path]:
    """Transcripts on tmpfs when there is one: 10,000 runs' fsyncs on a disk would dominate the test."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        directory = Path(shm / f"qwq-fuzz-{os.getpid()}-{tmp_path.name}")
        directory.mkdir()
        yield directory
        shutil.rmtree(directory, ignore_errors=True)
    else:
        yield tmp_path


# ----------------------------------------------------------------- the fast path: function tools


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_fuzzed_runs_with_function_tools_end_cleanly(fuzz_dir: Path) -> None:
    # The runs are CPU-bound on one event loop: a worker process per CPU shares them out.
    chosen = seeds(0, runs(FAST_RUNS))
    workers = max(1, min(len(os.sched_getaffinity(0)), 4, len(chosen) // 200))
    started = time.monotonic()
    outcomes = [
        outcome
        for part in await asyncio.gather(
            *(_in_worker(chosen[i::workers], fuzz_dir / f"w{i}") for i in range(workers))
        )
        for outcome in part
    ]
    print(f"\n{time.monotonic() - started:.1f} s in {workers} processes")
    summarise(outcomes, f"function tools, seeds {SEED}..")


async def _function_tool_runs(chosen: Sequence[int], directory: Path) -> list[Outcome]:
    def make(seed: int) -> tuple[list[str], Sequence[Any]]:
        return Hostile(seed).script(), FUNCTION_TOOLS

    os.makedirs(directory, exist_ok=True)
    return await run_many(chosen, make, directory)


async def _in_worker(chosen: Sequence[int], directory: Path) -> list[Outcome]:
    """`_function_tool_runs` in a child process (this file run as a script); its outcomes come back as JSON."""
    if len(chosen) < 200:
        return await _function_tool_runs(chosen, directory)
    repo = REPO
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        str(directory),
        *map(str, chosen),
        stdout=asyncio.subprocess.PIPE,
        cwd=repo,
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, f"the fuzz worker exited with {process.returncode}"
    return [Outcome(**item) for item in json.loads(out.decode("ascii").splitlines()[-1])]


# ----------------------------------------------------------------- web_fetch on a hostile server


def _html(body: bytes, charset: bytes = b"utf-8") -> tuple[bytes, bytes]:
    return (
        b"text/html; charset=" + charset,
        b"<html><head><title>t</title></head><body>" + body + b"</body></html>",
    )


# path -> (status, headers, body)
HOSTILE_PAGES: dict[str, tuple[int, list[tuple[bytes, bytes]], bytes]] = {
    "/surrogate.json": (200, [(b"Content-Type", b"application/json")], b'{"a": "\\ud800", "b": "x\\udc80y"}'),
    "/deep.json": (200, [(b"Content-Type", b"application/json")], b"[" * 100_000 + b"]" * 100_000),
    "/deep-object.json": (
        200,
        [(b"Content-Type", b"application/json")],
        b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    ),
    "/nan.json": (
        200,
        [(b"Content-Type", b"application/json")],
        b'{"x": NaN, "y": 1e999, "z": ' + b"9" * 5000 + b"}",
    ),
    "/rot13": (200, [(b"Content-Type", b"text/html; charset=rot13")], b"<p>uryyb</p>"),
    "/hex": (200, [(b"Content-Type", b"text/plain; charset=hex")], b"zz not hex"),
    "/meta-zlib": (200, [(b"Content-Type", b"text/html")], b'<meta charset="zlib"><p>x</p>'),
    "/utf16": (200, [(b"Content-Type", b"text/plain; charset=utf-16")], b"\x00a\x00"),
    "/escapes": (200, [(b"Content-Type", b"text/plain")], "".join(ESCAPES).encode("utf-8") * 10),
    "/escapes.html": (
        200,
        [(b"Content-Type", b"text/html")],
        b"<title>\x1b]0;pwned\x07</title><p>\x1b[2J hi \x1b]52;c;aGk=\x07</p>",
    ),
    "/bad-utf8": (200, [(b"Content-Type", b"text/plain; charset=utf-8")], b"ok \xff\xfe\xed\xa0\x80 end"),
    "/surrogate-bytes.html": (
        200,
        [(b"Content-Type", b"text/html")],
        b"<p>\xed\xa0\x80 &#xd800; &#55296;</p>",
    ),
    "/gzip-broken": (
        200,
        [(b"Content-Type", b"text/plain"), (b"Content-Encoding", b"gzip")],
        b"\x1f\x8b\x08garbage",
    ),
    "/gzip": (
        200,
        [(b"Content-Type", b"text/plain"), (b"Content-Encoding", b"gzip")],
        gzip.compress("é\ud800".encode("utf-8", "surrogatepass")),
    ),
    "/loop": (302, [(b"Location", b"/loop")], b""),
    "/huge": (200, [(b"Content-Type", b"text/plain")], b"w\xed\xb2\x80 " * 400_000),
    "/binary": (200, [(b"Content-Type", b"application/octet-stream")], bytes(range(256)) * 10),
    "/pdf": (200, [(b"Content-Type", b"application/pdf")], b"%PDF-1.4 \xff not a pdf"),
    "/error.json": (500, [(b"Content-Type", b"application/json")], b'{"error": "\\udc80\\u001b[2J"}'),
    "/bad-header": (
        200,
        [(b"Content-Type", b"text/plain; charset=\xff\xfe"), (b"X-Junk", b"\xed\xa0\x80")],
        b"hi",
    ),
    "/table.html": (
        200,
        [(b"Content-Type", b"text/html")],
        b"<table>" + b"<tr><td>\xed\xa0\x80</td></tr>" * 3000 + b"</table>",
    ),
    "/deep.html": (200, [(b"Content-Type", b"text/html")], b"<div>" * 20_000 + b"deep" + b"</div>" * 20_000),
}


class HostileHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        status, headers, body = HOSTILE_PAGES.get(self.path.partition("?")[0], (404, [], b"\x1b[2J nothing"))
        head = [b"HTTP/1.1 %d Hostile\r\n" % status]
        head += [name + b": " + value + b"\r\n" for name, value in headers]
        head.append(b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        self.close_connection = True
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(b"".join(head) + body)


@pytest.fixture(scope="module")
def hostile_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HostileHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def hostile_urls(base: str) -> list[str]:
    return [base + path for path in HOSTILE_PAGES] + [
        base + "/missing\ud800",
        "http://127.0.0.1:1/",
        "file:///etc/passwd",
        "http://\ud800.example/",
        "http://169.254.169.254/latest/meta-data/",
        "javascript:alert(1)",
        "http://" + "a" * 5_000 + "/",
        "http://[::1]:0/",
        "http://4294967296" + "9" * 5000 + "/",
        "\x1b[2J",
    ]


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_fuzzed_runs_with_web_fetch_on_a_hostile_server_end_cleanly(
    fuzz_dir: Path, hostile_server: str
) -> None:
    from tools.web import web_fetch_tool

    # every page of the server is fetched for real once per run that asks for it (no cache across runs)
    urls = hostile_urls(hostile_server)

    def make(seed: int) -> tuple[list[str], Sequence[Any]]:
        web = web_fetch_tool(allow_private=True, timeout=10)
        names = ("web_fetch", "web_fetch", "echo", "hostile")
        source = Hostile(seed, names, urls)
        return source.working_script() if source.chance(0.5) else source.script(), [web, echo, hostile]

    started = time.monotonic()
    outcomes = await run_many(seeds(100_000, runs(WEB_RUNS)), make, fuzz_dir, concurrency=8)
    print(f"\n{time.monotonic() - started:.1f} s")
    summarise(outcomes, f"web_fetch, seeds {SEED + 100_000}..")


# ----------------------------------------------------------------- the sandbox: hostile code, forged frames


def _forge(body: str) -> str:
    """Python code that writes the bytes `body` evaluates to as one frame to the host (see test_hostile_frames)."""
    return (
        "import os, struct\n"
        f"body = {body}\n"
        "fd = os.open('/proc/1/fd/1', os.O_WRONLY)\n"
        "data = memoryview(struct.pack('>I', len(body)) + body)\n"
        "while data:\n"
        "    data = data[os.write(fd, data):]\n"
        "os.close(fd)\n"
        "import time; time.sleep(1)\n"
    )


SANDBOX_CODE: dict[str, tuple[str, ...]] = {
    "python": (
        _forge("b'[' * 200_000 + b']' * 200_000"),
        _forge("b'{\"id\": ' + b'9' * 400 + b', \"ok\": true}'"),
        _forge("b'\\xff\\xfe\\xfd'"),
        _forge("b'[1, true]'"),
        _forge('b\'{"ok": true, "duration_s": 1e999}\''),
        "import os, struct; os.write(os.open('/proc/1/fd/1', os.O_WRONLY), struct.pack('>I', 2**31) + b'{')\n"
        "import time; time.sleep(1)",
        r"raise ValueError('a \ud800 b \udc80 \x1b[2J')",
        r"print('p \ud800 \udc80 \x1b]52;c;aGk=\x07')",
        "class X:\n    def __repr__(self):\n        return 'v \\ud800'\nX()",
        r"import os; os.write(1, b'o \xed\xa0\x80 \xff'); os.write(2, b'\x1b[2J\xed\xb2\x80')",
        "print('x' * 3_000_000)",
        "import os; os._exit(7)",
        "def f(): return f()\nf()",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
        "eval('[' * 100_000 + ']' * 100_000)",
        "10 ** 5000",
        "float('nan')",
        "open('\\udc80.txt', 'w').write('\\ud800'.encode('utf-8', 'surrogatepass').decode('utf-8', 'replace'))",
        "print(6 * 7)",
    ),
    "shell": (
        "printf 'a\\355\\240\\200b\\033[2J'; printf '\\377' >&2",
        'python3 -c "'
        + _forge("b'[' * 200_000")
        .replace('"', '\\"')
        .replace("\n", ";")
        .replace(";import time; time.sleep(1);", "")
        + '"; sleep 1',
        "head -c 3000000 /dev/zero | tr '\\0' 'q'",
        "echo \ud800",
        "exit 3",
        "kill -9 $$",
        "echo ok",
    ),
}


@pytest.mark.slow
@pytest.mark.docker
@pytest.mark.timeout(900)
async def test_fuzzed_runs_with_the_sandbox_tools_end_cleanly(fuzz_dir: Path) -> None:
    from sandboxes import DEFAULT_IMAGE, DockerSandbox, SandboxConfig
    from sandboxes._engine import get_client
    from sandboxes.errors import DockerUnavailableError
    from sandboxes.image import image_exists
    from tools.code import code_tools

    try:
        available = image_exists(DEFAULT_IMAGE, client=get_client())
    except DockerUnavailableError as exc:
        pytest.skip(f"Docker engine unavailable: {exc}")
    if not available:
        pytest.skip(f"the sandbox image {DEFAULT_IMAGE} is not built (qwq-agent sandbox build)")
    config = SandboxConfig(
        memory="256m", workspace_size="32m", tmp_size="16m", pids_limit=64, default_timeout=5
    )
    async with DockerSandbox(config=config) as sandbox:
        tools_ = [*code_tools(sandbox), echo]
        names = ("python", "python", "shell", "write_file", "read_file", "echo")

        def make(seed: int) -> tuple[list[str], Sequence[Any]]:
            return Hostile(seed, names).working_script(), tools_

        started = time.monotonic()
        outcomes = await run_many(seeds(200_000, runs(SANDBOX_RUNS)), make, fuzz_dir, concurrency=2)
        print(f"\n{time.monotonic() - started:.1f} s")
        r = await sandbox.arun_python("print(6 * 7)")
        assert r.ok, r
        assert r.stdout == "42\n"
    summarise(outcomes, f"sandbox tools, seeds {SEED + 200_000}..")


# ----------------------------------------------------------------- the CLI, in-process


@dataclass
class CliOutcome:
    code: int
    stdout: str
    stderr: str


def cli(*argv: str) -> CliOutcome:
    """`qwq-agent ARGV` in this process, its stdout a strict UTF-8 pipe as on a terminal (stderr as Python sets
    it: backslashreplace), so text that a terminal cannot take fails here too."""
    from agent.cli import main

    out_bytes, err_bytes = io.BytesIO(), io.BytesIO()
    out = io.TextIOWrapper(out_bytes, encoding="utf-8", errors="strict", write_through=True)
    err = io.TextIOWrapper(err_bytes, encoding="utf-8", errors="backslashreplace", write_through=True)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
        out.flush()
        err.flush()
    return CliOutcome(code, out_bytes.getvalue().decode("utf-8"), err_bytes.getvalue().decode("utf-8"))


def check_cli(outcome: CliOutcome, what: str) -> None:
    """No traceback, no bug report, no raw control character, an exit code of 0, 1 or 2."""
    both = outcome.stdout + outcome.stderr
    assert "Traceback" not in both, (what, outcome.stderr[-3000:])
    assert "unexpected error" not in both, (what, outcome.stderr[-3000:])
    assert outcome.code in (0, 1, 2), (what, outcome.code, outcome.stderr[-3000:])
    raw = [c for c in both if c != "\n" and c != "\t" and (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F)]
    assert not raw, (what, "raw control characters reach the terminal", raw[:5], both[-2000:])


DAMAGE: tuple[Callable[[bytes, random.Random], bytes], ...] = (
    lambda data, rng: data[: rng.randrange(max(len(data), 1))],  # torn anywhere
    lambda data, rng: data.replace(b'"step"', b'"step","step":"abc"', 1),
    lambda data, rng: data.replace(b'"usage":{', b'"usage":[1],"x":{', 1),
    lambda data, rng: data.replace(b'"messages":[', b'"messages":"x","m":[', 1),
    lambda data, rng: data.replace(b'"model_output":', b'"model_output":5,"o":', 1),
    lambda data, rng: data.replace(b'"stop_reason":', b'"stop_reason":{"a":1},"s":', 1),
    lambda data, rng: data.replace(b'"steps":', b'"steps":"abc","t":', 1),
    lambda data, rng: data.replace(b'"steps":', b'"steps":1e999,"t":', 1),
    lambda data, rng: data.replace(b'"steps":', b'"steps":' + b"9" * 5000 + b',"t":', 1),
    lambda data, rng: data.replace(b'"config":{', b'"config":[],"c":{', 1),
    lambda data, rng: data.replace(b'"tools":[', b'"tools":"python","u":[', 1),
    lambda data, rng: data.replace(b'"tool_choice":"auto"', b'"tool_choice":"\\ud800"', 1),
    lambda data, rng: data.replace(b'"duration_s":', b'"duration_s":NaN,"d":', 1),
    lambda data, rng: data.replace(b'"role":"assistant"', b'"role":"wizard"', 1),
    lambda data, rng: data.replace(b'"content":"', b'"content":"\\ud800\\u001b[2J', 2),
    lambda data, rng: data.replace(b'"arguments":{', b'"arguments":"x","a":{', 1),
    lambda data, rng: data.replace(b'"task":"', b'"task":"\\udc80\\u001b]52;c;aGk=\\u0007', 1),
    lambda data, rng: (
        data + b'{"type":"step","step":2,"messages":[' + b"[" * 100_000 + b"]" * 100_000 + b"]}\n"
    ),
    lambda data, rng: (
        data + b'{"type":"run_end","stop_reason":"final_answer","answer":"' + b"h" * 5_000_000 + b'"}\n'
    ),
    lambda data, rng: data + b"\xff\xfe\xed\xa0\x80\n" + data,
    lambda data, rng: b'{"type":"run_start"}\n' + data,
    lambda data, rng: data.split(b"\n", 1)[-1],  # no run_start
    lambda data, rng: b"\n".join(reversed(data.split(b"\n"))),
    lambda data, rng: data.replace(b"\n", b"\r\n"),
    lambda data, rng: b"[" * 200_000 + b"\n",
    lambda data, rng: bytes(rng.randrange(256) for _ in range(rng.randrange(1, 2000))),
    lambda data, rng: data + b'{"type":"resume","messages":[{"role":"user","content":5}]}\n',
    lambda data, rng: data + b'{"type":"condensation","x":"\\ud800\\u001b[2J"}\n',
    lambda data, rng: data.replace(b'"tool_durations":{', b'"tool_durations":{"\\ud800":1e999,', 1),
    lambda data, rng: data.replace(b'"tool_calls":[', b'"tool_calls":[{"name":5}],"tc":[', 1),
)


def _write_script(path: Path, outputs: list[str]) -> None:
    path.write_text(json.dumps(outputs), encoding="ascii")  # lone surrogates travel as \\ud800 escapes


HOSTILE_SCRIPTS: tuple[bytes, ...] = (
    b"\xff\xfe not utf-8",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a": 1}',
    b"[1, 2]",
    b"",
    b'["\\ud800"]',
    b'"just a string"',
    b"[" + b'"x",' * 10 + b"NaN]",
)


def _cli_case(seed: int, directory: Path, web_urls: Sequence[str]) -> list[str]:
    """One seed's CLI invocations; returns the problems found (empty when all held)."""
    rng = random.Random(seed)
    problems: list[str] = []
    runs_dir = directory / f"s{seed}"
    script = directory / f"s{seed}.json"
    use_web = bool(web_urls) and rng.random() < 0.3
    names = ("web_fetch", "web_fetch", "echo") if use_web else ()
    _write_script(script, Hostile(seed, names, web_urls).script())
    output = rng.choice(((), ("--json",), ("--quiet",), ("--hide-thinking",)))
    tools_ = ("--tools", "web_fetch", "--allow-private") if use_web else ("--tools", "none")
    task = rng.choice(("do it", "t\udcff\udc80 \x1b[2J", "\ud800" * 50, "x" * 100_000))

    def attempt(*argv: str) -> CliOutcome | None:
        what = f"seed {seed}: qwq-agent {' '.join(a[:60] for a in argv)!r}"
        try:
            outcome = cli(*argv)
            check_cli(outcome, what)
            return outcome
        except BaseException as exc:
            problems.append(f"{what}: {type(exc).__name__}: {str(exc)[:1500]}")
            return None

    max_steps = str(rng.randint(1, 6))
    ran = attempt(
        "run",
        task,
        "--scripted",
        str(script),
        *tools_,
        *output,
        "--max-steps",
        max_steps,
        "--transcript-dir",
        str(runs_dir),
    )
    transcripts = sorted(runs_dir.glob("*.jsonl")) if runs_dir.is_dir() else []
    if ran is not None and transcripts:
        (path,) = transcripts
        attempt("replay", str(path), *rng.choice(((), ("--json",), ("--quiet",))))
        attempt("replay", "--rerun", str(path), "--quiet")
        attempt("report", str(path), "-o", str(directory / f"s{seed}.html"))
        damaged = directory / f"s{seed}-damaged.jsonl"
        damaged.write_bytes(rng.choice(DAMAGE)(path.read_bytes(), rng))
        attempt("replay", str(damaged), *rng.choice(((), ("--json",), ("--quiet",))))
        attempt("report", str(damaged), "-o", str(directory / f"s{seed}-damaged.html"))
        _write_script(script, Hostile(seed + 1, names, web_urls).script())
        attempt(
            "run",
            "--resume",
            str(damaged),
            "--scripted",
            str(script),
            *tools_,
            "--quiet",
            *rng.choice(((), ("more \ud800",))),
        )
    if rng.random() < 0.1:
        script.write_bytes(rng.choice(HOSTILE_SCRIPTS))
        attempt("run", "x", "--scripted", str(script), "--tools", "none", "--transcript-dir", str(runs_dir))
    return problems


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_fuzzed_cli_commands_never_show_a_traceback(
    fuzz_dir: Path, hostile_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QWQ_AGENT_CONFIG", str(fuzz_dir / "no-config.toml"))
    (fuzz_dir / "no-config.toml").write_text("")
    for name in ("QWQ_AGENT_MODEL", "QWQ_AGENT_BASE_URL", "QWQ_AGENT_MODEL_NAME", "QWQ_AGENT_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("COLUMNS", "100")
    urls = hostile_urls(hostile_server)
    started = time.monotonic()
    problems: list[str] = []
    count = runs(CLI_RUNS)
    for seed in seeds(300_000, count):
        problems += _cli_case(seed, fuzz_dir, urls)
        for leftover in fuzz_dir.glob(f"s{seed}*"):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
    print(
        f"\nCLI: {count} runs (each with replay, rerun, report and a damaged copy) in {time.monotonic() - started:.1f} s"
    )
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems[:8])


if __name__ == "__main__":  # a worker of the function-tool runs: DIRECTORY SEED...
    _outcomes = asyncio.run(_function_tool_runs([int(a) for a in sys.argv[2:]], Path(sys.argv[1])))
    print(json.dumps([dataclasses.asdict(o) for o in _outcomes]))
