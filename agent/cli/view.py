"""Terminal views of a run's events: the live view (rich), JSON lines for scripts, and quiet.

The same views show a live run and a replayed transcript, so what `qwq-agent replay` prints is what the user
saw. Reasoning is streamed dimmed line by line (whole lines keep the status line below them intact), tool
calls and results are compact panels, and a status line tells step, tokens, speed and elapsed time.

Everything shown comes from outside (the model, tools, web pages), so every text passes `terminal_safe`
first: control characters are shown escaped (`\x1b[2J` cannot clear the screen, OSC 52 cannot set the
clipboard) and lone surrogates, which no terminal encoding accepts, become U+FFFD. The events and the
transcript keep the text as it was.
"""

from __future__ import annotations

import functools
import re
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from agent.events import (
    ContentDelta,
    ContextCondensed,
    Event,
    FinalAnswer,
    MalformedCallEvent,
    NoteAdded,
    StepEnd,
    ThinkingDelta,
    ToolCallFinished,
    ToolCallStarted,
    TurnRestarted,
)

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

__all__ = ["JsonView", "LiveView", "QuietView", "View", "json_line", "make_view", "terminal_safe"]

_RESULT_LINES = 12
_ARGUMENT_CHARS = 400
# C0 controls but newline and tab, DEL, C1 controls (a lone \x9b starts a sequence on some terminals too)
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """`text` as it may reach a terminal: control characters escaped as `\\xNN`, lone surrogates U+FFFD."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


class View:
    """Consumes events; `close` is called once, also when the run was interrupted."""

    def handle(self, event: Event) -> None:
        raise NotImplementedError

    def note(self, text: str) -> None:
        """A message from the CLI itself (not the model): where the transcript is, what to do next."""
        print(terminal_safe(text), file=sys.stderr)

    def close(self) -> None:
        return None


class QuietView(View):
    """Prints only the final answer, on stdout."""

    def handle(self, event: Event) -> None:
        if isinstance(event, FinalAnswer) and event.answer:
            print(terminal_safe(event.answer), flush=True)


# What JSON leaves unescaped but a terminal may act on: DEL and the C1 controls (U+009B is a CSI on some).
_JSON_UNESCAPED_CONTROL = re.compile("[\x7f-\x9f]")


def json_line(value: Any) -> str:
    """`value` as one line of JSON that is safe on a terminal too.

    `json_text` survives surrogates and deep nesting, and JSON escapes the C0 controls itself; DEL and the C1
    controls, which it keeps as they are, are escaped here (they can only occur inside strings, so the line
    stays the same JSON).
    """
    from agent.transcript import json_text

    return _JSON_UNESCAPED_CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", json_text(value))


class JsonView(View):
    """One JSON object per event on stdout, for scripts; CLI notes go to stderr as JSON too."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def handle(self, event: Event) -> None:
        self.stream.write(json_line(event) + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        print(json_line({"type": "note", "text": text}), file=sys.stderr, flush=True)


def _short(value: Any, limit: int) -> str:
    if isinstance(value, str):
        text = value
    else:
        from agent.transcript import json_text

        text = json_text(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class LiveView(View):
    """The rich live view. `show_thinking=False` hides reasoning but keeps calls, results and the answer.

    `recorded=True` shows a replayed transcript: the time in the status line is then the sum of the recorded
    step durations, not the seconds the replay itself took.
    """

    def __init__(
        self, console: Console | None = None, *, show_thinking: bool = True, recorded: bool = False
    ) -> None:
        from rich.console import Console

        self.console = console or Console(highlight=False)
        self.show_thinking = show_thinking
        self.started = time.monotonic()
        self.recorded_elapsed: float | None = 0.0 if recorded else None
        self.step = 1
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.generating_since: float | None = None
        self.step_completion_chars = 0
        self._line = ""
        self._line_style = ""
        self._live: Live | None = None
        if self.console.is_terminal:
            from rich.live import Live

            self._live = Live(self._status(), console=self.console, transient=True, refresh_per_second=8)
            self._live.start()

    # ----------------------------------------------------------------- events

    def handle(self, event: Event) -> None:
        handler = self._handlers.get(type(event))
        if handler is not None:
            if not isinstance(event, ThinkingDelta | ContentDelta):
                self._flush_line()  # a streamed line ends where anything else is shown
            handler(event)
        if self._live is not None:
            self._live.update(self._status())

    @functools.cached_property
    def _handlers(self) -> dict[type[Any], Callable[[Any], None]]:
        """What each kind of event shows (kinds not listed show nothing but the status line); built once."""
        return {
            ThinkingDelta: self._on_delta,
            ContentDelta: self._on_delta,
            MalformedCallEvent: self._on_malformed,
            NoteAdded: self._on_note,
            ToolCallStarted: self._on_call_started,
            ToolCallFinished: self._on_call_finished,
            TurnRestarted: self._on_restart,
            ContextCondensed: self._on_condensed,
            StepEnd: self._on_step_end,
            FinalAnswer: self._on_final,
        }

    def _on_delta(self, event: ThinkingDelta | ContentDelta) -> None:
        if self.generating_since is None:
            self.generating_since = time.monotonic()
        self.step_completion_chars += len(event.text)
        thinking = isinstance(event, ThinkingDelta)
        if thinking and not self.show_thinking:
            return
        self._stream(event.text, "dim italic" if thinking else "")

    def _on_malformed(self, event: MalformedCallEvent) -> None:
        self._panel(
            event.raw.strip() or "(empty)", title="malformed tool call", style="yellow", subtitle=event.error
        )

    def _on_note(self, event: NoteAdded) -> None:
        self._print(f"[yellow]✎ note · {_escape(event.kind)}:[/] [dim]{_escape(event.text)}[/]")

    def _on_call_started(self, event: ToolCallStarted) -> None:
        arguments = ", ".join(f"{k}={_short(v, _ARGUMENT_CHARS)}" for k, v in event.call.arguments.items())
        self._print(f"[bold cyan]▶ {_escape(event.call.name)}[/]([cyan]{_escape(arguments)}[/])")

    def _on_call_finished(self, event: ToolCallFinished) -> None:
        lines = event.result.content.splitlines() or ["(no output)"]
        shown = lines[:_RESULT_LINES]
        if len(lines) > _RESULT_LINES:
            shown.append(f"… {len(lines) - _RESULT_LINES} more lines")
        self._panel(
            "\n".join(shown),
            title=f"{event.call.name} · {event.duration_s:.2f}s",
            style="red" if event.result.is_error else "green",
        )

    def _on_restart(self, event: TurnRestarted) -> None:
        self._print(
            f"[yellow]↻ the model's stream broke off; step {event.step} starts again[/] [dim]({_escape(event.reason)})[/]"
        )

    def _on_condensed(self, event: ContextCondensed) -> None:
        self._print(f"[dim magenta]⇣ {_escape(condensed_text(event))}[/]")

    def _on_step_end(self, event: StepEnd) -> None:
        self.prompt_tokens += event.prompt_tokens
        self.completion_tokens += event.completion_tokens
        if self.recorded_elapsed is not None:
            self.recorded_elapsed += event.duration_s
        self.step = event.step + 1
        self.generating_since = None
        self.step_completion_chars = 0
        if self._live is None:
            self._print(f"[dim]── {self._status_text(event.step)}[/]")

    def _on_final(self, event: FinalAnswer) -> None:
        live = self._live is not None
        self._stop_live()
        if live:  # the transient status line is gone: leave its final figures behind
            self._print(f"[dim]── {self._status_text(event.steps)}[/]")
        if event.stop_reason == "final_answer":
            self._panel(event.answer or "(empty answer)", title="answer", style="bold green")
        else:
            self._print(f"[bold yellow]stopped: {event.stop_reason}[/] after {event.steps} steps")

    def note(self, text: str) -> None:
        self._flush_line()
        self._print(f"[dim]{_escape(text)}[/]")

    def close(self) -> None:
        self._flush_line()
        self._stop_live()

    # ----------------------------------------------------------------- output

    def _stream(self, text: str, style: str) -> None:
        if style != self._line_style and self._line:
            self._flush_line()
        self._line_style = style
        *complete, self._line = (self._line + text).split("\n")
        for line in complete:
            self._print_plain(line, style)

    def _flush_line(self) -> None:
        if self._line:
            self._print_plain(self._line, self._line_style)
            self._line = ""

    def _print_plain(self, line: str, style: str) -> None:
        from rich.text import Text

        self.console.print(Text(terminal_safe(line), style=style))

    def _print(self, markup: str) -> None:
        self.console.print(markup)

    def _panel(self, body: str, *, title: str, style: str, subtitle: str | None = None) -> None:
        from rich.panel import Panel
        from rich.text import Text

        self.console.print(
            Panel(
                Text(terminal_safe(body)),
                title=_escape(title),
                subtitle=_escape(subtitle) if subtitle else None,
                border_style=style,
                expand=False,
            )
        )

    def _status_text(self, step: int | None = None) -> str:
        recorded = self.recorded_elapsed is not None
        elapsed = (
            self.recorded_elapsed if self.recorded_elapsed is not None else time.monotonic() - self.started
        )
        speed = ""
        if self.generating_since is not None and not recorded:
            spent = max(time.monotonic() - self.generating_since, 1e-6)
            speed = f" · ~{self.step_completion_chars / 4 / spent:.1f} tok/s"
        return (
            f"step {step or self.step} · tokens {self.prompt_tokens:,} in / {self.completion_tokens:,} out"
            f"{speed} · {elapsed:.1f}s"
        )

    def _status(self) -> Any:
        from rich.text import Text

        return Text(self._status_text(), style="bold")

    def _stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None


def condensed_text(event: ContextCondensed) -> str:
    """One line on a condensation of the context, for the live view and replay."""
    if event.strategy == "mask":
        what = f"masked {event.masked} old tool result{'s' if event.masked != 1 else ''}"
    elif event.hidden_steps is not None:
        first, last = event.hidden_steps
        what = f"steps {first}-{last} replaced by a {event.strategy}"
    else:
        what = event.strategy
    return (
        f"context: {what} before step {event.step} ({event.tokens_before:,} → {event.tokens_after:,} tokens)"
    )


def _escape(text: str) -> str:
    """Text made safe for the terminal and for rich's markup (a tool name like `[/]` is not markup)."""
    from rich.markup import escape

    return escape(terminal_safe(text))


def make_view(
    *, quiet: bool = False, json_lines: bool = False, show_thinking: bool = True, recorded: bool = False
) -> View:
    """The view the options ask for; `recorded`: the events come from a transcript (see `LiveView`)."""
    if json_lines:
        return JsonView()
    if quiet:
        return QuietView()
    return LiveView(show_thinking=show_thinking, recorded=recorded)
