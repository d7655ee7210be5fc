"""What the views print: outside text never drives the terminal, and no text makes a view raise."""

from __future__ import annotations

import io
import json

from rich.console import Console

from agent.cli.view import JsonView, LiveView, QuietView, terminal_safe
from agent.events import FinalAnswer, StepEnd, ThinkingDelta, ToolCallFinished, ToolCallStarted
from tools.types import ToolCall, ToolResult

HOSTILE = "clear\x1b[2J title\x1b]0;pwned\x07 clip\x1b]52;c;aGk=\x07 csi\x9b2J cr\rlone\ud800 tab\tend"


def test_terminal_safe_escapes_controls_and_replaces_lone_surrogates() -> None:
    shown = terminal_safe(HOSTILE)
    assert "\x1b" not in shown
    assert "\x07" not in shown
    assert "\x9b" not in shown
    assert "\r" not in shown
    assert "\\x1b[2J" in shown
    assert "\\x9b" in shown
    assert "\\x0d" in shown
    assert "\ufffd" in shown
    assert "\t" in shown
    assert terminal_safe("a\nb") == "a\nb"
    shown.encode("utf-8")


def test_live_view_prints_no_raw_control_characters() -> None:
    out = io.StringIO()
    view = LiveView(Console(file=out, width=100, highlight=False, force_terminal=False))
    call = ToolCall(name="py[/]thon" + HOSTILE, arguments={"code": HOSTILE, "n": [HOSTILE]}, id="c1")
    for event in (
        ThinkingDelta(text=HOSTILE + "\n"),
        ToolCallStarted(step=1, call=call),
        ToolCallFinished(step=1, call=call, result=ToolResult(content=HOSTILE), duration_s=0.5),
        StepEnd(step=1, prompt_tokens=10, completion_tokens=5, duration_s=1.0),
        FinalAnswer(answer=HOSTILE, stop_reason="final_answer", steps=1),
    ):
        view.handle(event)
    view.note(HOSTILE)
    view.close()
    text = out.getvalue()
    assert "\x1b" not in text
    assert "\x07" not in text
    assert "\x9b" not in text
    assert text.count("\\x1b[2J") >= 4


def test_json_and_quiet_views_survive_surrogates() -> None:
    out = io.StringIO()
    JsonView(out).handle(ThinkingDelta(text=HOSTILE))
    event = json.loads(out.getvalue())
    assert event["text"].startswith("clear\x1b[2J")  # JSON keeps the text; its escapes are inert
    assert "\ufffd" in event["text"]
    quiet = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(quiet):
        QuietView().handle(FinalAnswer(answer=HOSTILE, stop_reason="final_answer", steps=1))
    assert "\x1b" not in quiet.getvalue()


def test_replayed_status_line_shows_recorded_time() -> None:
    out = io.StringIO()
    view = LiveView(Console(file=out, width=100, highlight=False, force_terminal=False), recorded=True)
    view.handle(StepEnd(step=1, prompt_tokens=1200, completion_tokens=30, duration_s=12.25))
    view.handle(StepEnd(step=2, prompt_tokens=1300, completion_tokens=20, duration_s=7.5))
    text = out.getvalue()
    assert "tokens 1,200 in / 30 out · 12.2s" in text
    assert "tokens 2,500 in / 50 out · 19.8s" in text


def test_json_view_escapes_del_and_c1_controls_that_json_keeps() -> None:
    # U+009B is a CSI on terminals that take C1 controls; JSON itself escapes only U+0000-U+001F
    text = "a\x7fb\x9b2J\x1b[2J\u00a0é"
    out = io.StringIO()
    JsonView(out).handle(FinalAnswer(answer=text, stop_reason="final_answer", steps=1))
    line = out.getvalue()
    assert not any(0x7F <= ord(c) <= 0x9F or ord(c) < 0x20 for c in line.rstrip("\n"))
    assert json.loads(line)["answer"] == text
