"""What a report shows, computed from a transcript or from result rows, before any HTML is written.

Everything here is plain data the templates lay out: texts already folded (a head that is always shown and a
rest behind a "show more"), figures already formatted, bar widths already scaled. Keeping the decisions here
keeps the templates dumb, which is what makes their escaping easy to trust.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.messages import AssistantMessage, ToolMessage
from agent.transcript import TranscriptRecord

__all__ = [
    "CallView",
    "Folded",
    "Histogram",
    "ResultsView",
    "RunView",
    "StepView",
    "TaskView",
    "fold",
    "results_view",
    "run_view",
]

# A text longer than this many lines or characters shows its head and folds the rest.
FOLD_LINES = 14
FOLD_CHARS = 1600
# Past this many characters a text is cut in the middle: the report is a view, the transcript keeps it all.
KEEP_CHARS = 200_000

_UNSAFE = re.compile("[\x00\ud800-\udfff]")
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def clean(text: str) -> str:
    """Text that can be written as UTF-8 and shown: NUL and lone surrogates (JSON allows both) become U+FFFD."""
    return _UNSAFE.sub("\ufffd", text)


def anchor(*parts: object) -> str:
    """An HTML id made only of safe characters, so no transcript text ever reaches an attribute unescaped."""
    return "-".join(_ID_UNSAFE.sub("_", str(p)).strip("_") or "x" for p in parts)


@dataclass(frozen=True)
class Folded:
    """A text split for display: `head` always shown, `rest` behind a toggle; `omitted` characters cut out."""

    head: str
    rest: str = ""
    omitted: int = 0
    lines: int = 1
    chars: int = 0

    @property
    def folded(self) -> bool:
        return bool(self.rest)

    @property
    def rest_lines(self) -> int:
        return self.rest.count("\n") + 1 if self.rest else 0


def fold(text: str, *, lines: int = FOLD_LINES, chars: int = FOLD_CHARS, keep: int = KEEP_CHARS) -> Folded:
    """Split `text` after about `lines` lines or `chars` characters (whichever comes first)."""
    text = clean(text)
    total_lines = text.count("\n") + 1
    total_chars = len(text)
    omitted = 0
    if total_chars > keep:
        half = keep // 2
        omitted = total_chars - 2 * half
        text = (
            text[:half]
            + f"\n\n[… {omitted:,} characters not shown here; the transcript has them all …]\n\n"
            + text[-half:]
        )
    if total_lines <= lines and total_chars <= chars:
        return Folded(text, lines=total_lines, chars=total_chars)
    cut = min(chars, len(text))
    newline = -1
    for _ in range(lines):
        newline = text.find("\n", newline + 1)
        if newline == -1 or newline >= cut:
            break
    if 0 <= newline < cut:
        cut = newline + 1
    return Folded(text[:cut], text[cut:], omitted, total_lines, total_chars)


def pretty_json(value: Any) -> str:
    """Indented JSON; values too deep to serialise (hostile nesting) are shown flat and shortened instead."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, default=str)
    except (RecursionError, ValueError, TypeError):
        return repr(value)[:KEEP_CHARS]


def number(value: float | int | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def seconds(value: float | None) -> str:
    """A duration as people read it: 85 ms, 2.4 s, 3 min 05 s."""
    if value is None or not math.isfinite(value):
        return "–"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 60:
        return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
    minutes, rest = divmod(round(value), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def percent(part: float, whole: float) -> str:
    """A CSS width, computed here so no transcript value ever reaches a style attribute."""
    if whole <= 0 or part <= 0:
        return "0%"
    return f"{min(100.0, 100.0 * part / whole):.2f}%"


# ----------------------------------------------------------------------------- one run


@dataclass
class ArgumentView:
    name: str
    text: Folded
    is_code: bool
    inline: bool


@dataclass
class CallView:
    name: str
    call_id: str
    arguments: list[ArgumentView]
    observation: Folded | None = None
    is_error: bool = False
    duration: str = ""


@dataclass
class NoteView:
    """An observation that answers no call: a malformed call, a nudge, a refusal. The model read it."""

    text: Folded
    is_error: bool
    name: str = ""


@dataclass
class ExtraView:
    """A record between steps: a resumed run, a condensation of the history, or a record type added later."""

    kind: str
    title: str
    fields: list[tuple[str, Folded]]


@dataclass
class StepView:
    number: int
    anchor: str
    duration: str
    prompt_tokens: int | None
    completion_tokens: int | None
    prompt_width: str
    completion_width: str
    tokens_label: str
    thinking: Folded | None
    thinking_words: int
    thinking_preview: str
    content: Folded | None
    calls: list[CallView]
    notes: list[NoteView]
    extras_after: list[ExtraView] = field(default_factory=list)
    is_final: bool = False

    @property
    def has_error(self) -> bool:
        return any(c.is_error for c in self.calls) or any(n.is_error for n in self.notes)

    @property
    def tool_names(self) -> list[str]:
        return [c.name for c in self.calls]


@dataclass
class RunView:
    anchor: str
    run_id: str
    task: Folded
    created: str
    model: str
    tools: list[str]
    config: list[tuple[str, str]]
    finished: bool
    stop_reason: str
    stop_class: str
    answer: Folded | None
    steps: list[StepView]
    extras_before: list[ExtraView]
    totals: list[tuple[str, str]]
    tool_calls: int
    tool_errors: int
    path: str


def _stop_class(reason: str) -> str:
    if reason == "final_answer":
        return "ok"
    if reason in ("", "unfinished"):
        return "muted"
    if reason in ("stuck", "malformed", "error"):
        return "bad"
    return "warn"


def _arguments(arguments: dict[str, Any]) -> list[ArgumentView]:
    views = []
    for key, value in arguments.items():
        text = value if isinstance(value, str) else pretty_json(value)
        inline = "\n" not in text and len(text) <= 120
        is_code = isinstance(value, str) and "\n" in value
        views.append(ArgumentView(clean(str(key)), fold(text), is_code, inline))
    return views


def _extra(record: dict[str, Any]) -> ExtraView:
    raw_kind = clean(str(record.get("type", "record")))
    kind = anchor(raw_kind)  # also a CSS class
    if raw_kind == "resume":
        messages = record.get("messages") or []
        texts = [str(m.get("content", "")) for m in messages if isinstance(m, dict)]
        fields = [("new user turn", fold(t)) for t in texts] or [("", fold("continued where it stopped"))]
        return ExtraView("resume", "Run resumed", fields)
    title = raw_kind.replace("_", " ").capitalize()
    if raw_kind == "condensation":  # agent.context: what was hidden from the model before the next step
        strategy = clean(str(record.get("strategy", "")))
        title = f"Condensation: {strategy}" if strategy else "Condensation"
    fields = []
    for key, value in record.items():
        if key == "type":
            continue
        text = value if isinstance(value, str) else pretty_json(value)
        fields.append((clean(str(key)), fold(text, lines=12, chars=1200)))
    return ExtraView(kind, title, fields)


def _step_view(
    index: int,
    record: TranscriptRecord,
    prefix: str,
    max_tokens: int,
    is_last: bool,
    stop_reason: str,
) -> StepView:
    recorded = record.recorded_steps[index]
    number_ = recorded.step or index + 1
    assistant = next((m for m in recorded.messages if isinstance(m, AssistantMessage)), None)
    observations = [m for m in recorded.messages if isinstance(m, ToolMessage)]
    calls: list[CallView] = []
    by_id: dict[str, CallView] = {}
    if assistant is not None:
        for call in assistant.tool_calls:
            duration = recorded.tool_durations.get(call.id)
            view = CallView(
                name=clean(call.name),
                call_id=clean(call.id),
                arguments=_arguments(call.arguments),
                duration=seconds(duration) if duration is not None else "",
            )
            calls.append(view)
            if call.id:
                by_id[call.id] = view
    notes: list[NoteView] = []
    for message in observations:
        target = by_id.get(message.tool_call_id) if message.tool_call_id else None
        if target is None and message.name:
            # refusals and stuck notes answer calls by name and order, without an id
            target = next((c for c in calls if c.name == message.name and c.observation is None), None)
        if target is not None and target.observation is None:
            target.observation = fold(message.content)
            target.is_error = message.is_error
        else:
            notes.append(NoteView(fold(message.content), message.is_error, clean(message.name)))
    prompt = recorded.usage.get("prompt_tokens")
    completion = recorded.usage.get("completion_tokens")
    thinking = assistant.thinking if assistant is not None else ""
    content = assistant.content if assistant is not None else ""
    return StepView(
        number=number_,
        anchor=anchor(prefix, "step", number_),
        duration=seconds(recorded.duration_s),
        prompt_tokens=prompt,
        completion_tokens=completion,
        prompt_width=percent(prompt or 0, max_tokens),
        completion_width=percent(completion or 0, max_tokens),
        tokens_label=f"{number(prompt)} in · {number(completion)} out",
        thinking=fold(thinking, lines=10_000, chars=KEEP_CHARS) if thinking else None,
        thinking_words=len(thinking.split()),
        thinking_preview=_preview(thinking),
        content=fold(content, lines=40, chars=4000) if content else None,
        calls=calls,
        notes=notes,
        is_final=is_last and stop_reason == "final_answer" and not calls,
    )


def _preview(text: str, limit: int = 150) -> str:
    """The start of a text on one line, for a collapsed section's title."""
    line = " ".join(clean(text[: limit * 4]).split())
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def _when(timestamp: float | None) -> str:
    if timestamp is None or not math.isfinite(timestamp):
        return ""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
    except (OverflowError, OSError, ValueError):
        return ""


def run_view(record: TranscriptRecord, *, prefix: str = "run") -> RunView:
    """The view of one transcript; `prefix` keeps ids unique when several runs share a page."""
    end = record.end or {}
    stop_reason = clean(str(end.get("stop_reason", ""))) if record.finished else "unfinished"
    max_tokens = max(
        (sum(v for v in s.usage.values() if isinstance(v, int)) for s in record.recorded_steps), default=0
    )
    count = len(record.recorded_steps)
    steps = [_step_view(i, record, prefix, max_tokens, i == count - 1, stop_reason) for i in range(count)]
    extras_before: list[ExtraView] = []
    for after, extra in record.other_records:
        view = _extra(extra)
        if after == 0 or not steps:
            extras_before.append(view)
        else:
            steps[min(after, count) - 1].extras_after.append(view)
    config = record.config
    tools = [clean(str(t)) for t in config.get("tools", []) if isinstance(t, str)]
    config_items = [
        (clean(str(k)), clean(v if isinstance(v, str) else pretty_json(v)))
        for k, v in config.items()
        if k not in ("tools", "model") and v is not None
    ]
    tool_calls = sum(len(s.calls) for s in steps)
    tool_errors = sum(1 for s in steps for c in s.calls if c.is_error)
    durations = [s.duration_s for s in record.recorded_steps if s.duration_s is not None]
    prompt_total = record.usage.get("prompt_tokens", 0)
    completion_total = record.usage.get("completion_tokens", 0)
    totals = [
        ("steps", number(record.steps)),
        ("tool calls", number(tool_calls) + (f" ({tool_errors} failed)" if tool_errors else "")),
        ("tokens in", number(prompt_total)),
        ("tokens out", number(completion_total)),
        ("time in steps", seconds(sum(durations)) if durations else "–"),
    ]
    ended = _float(end.get("time"))
    if ended is not None and record.created is not None and ended >= record.created:
        totals.append(("wall time", seconds(ended - record.created)))
    answer_text = str(end.get("answer", "")) if record.finished else ""
    return RunView(
        anchor=anchor(prefix),
        run_id=clean(record.run_id),
        task=fold(record.task, lines=40, chars=4000),
        created=_when(record.created),
        model=clean(str(config.get("model", ""))),
        tools=tools,
        config=config_items,
        finished=record.finished,
        stop_reason=stop_reason,
        stop_class=_stop_class(stop_reason),
        answer=fold(answer_text, lines=60, chars=6000) if answer_text else None,
        steps=steps,
        extras_before=extras_before,
        totals=totals,
        tool_calls=tool_calls,
        tool_errors=tool_errors,
        path=clean(str(record.path)),
    )


# ----------------------------------------------------------------------------- many runs (eval, batch)


@dataclass
class TaskView:
    index: int
    task_id: str
    kind: str
    passed: bool | None
    steps: int | None
    tokens: int | None
    duration: float | None
    stop_reason: str
    error: str
    transcript: str
    run: RunView | None = None
    run_note: str = ""
    harness_error: bool = False
    expected: bool | None = None
    """For `--check-harness` rows: whether the check came out as it must (canonical passed, broken failed)."""

    @property
    def failed(self) -> bool:
        if self.expected is not None:
            return not self.expected or self.harness_error
        return self.passed is False or self.harness_error

    @property
    def succeeded(self) -> bool:
        if self.expected is not None:
            return self.expected and not self.harness_error
        return bool(self.passed) and not self.harness_error

    @property
    def stuck(self) -> bool:
        """The run ended without an answer: stuck in a loop, or out of steps, time or tokens."""
        return bool(self.stop_reason) and self.stop_reason != "final_answer"

    @property
    def classes(self) -> str:
        names = ["task"]
        names.append("is-failed" if self.failed else "is-passed" if self.succeeded else "is-unknown")
        if self.stuck:
            names.append("is-stuck")
        return " ".join(names)

    @property
    def result_label(self) -> str:
        if self.harness_error:
            return "error"
        label = {True: "passed", False: "failed", None: "–"}[self.passed]
        if self.expected is not None:
            label += " as it must" if self.expected else " (wrong)"
        return label

    @property
    def anchor(self) -> str:
        return anchor("task", self.index)

    @property
    def run_anchor(self) -> str:
        return anchor("run", self.index)


@dataclass
class Bar:
    x: float
    width: float
    passed_height: float
    failed_height: float
    label: str
    count: int
    passed: int


@dataclass
class Histogram:
    title: str
    unit: str
    bars: list[Bar]
    height: float
    width: float
    max_count: int
    ticks: list[tuple[float, str]]


@dataclass
class ResultsView:
    title: str
    source: str
    shape: str
    total: int
    passed: int
    has_verdicts: bool
    pass_rate: str
    counts: dict[str, int]
    figures: list[tuple[str, str]]
    stop_reasons: list[tuple[str, int, str]]
    histograms: list[Histogram]
    tasks: list[TaskView]
    harness: list[tuple[str, str]]


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def row_shape(row: dict[str, Any]) -> str:
    """`eval` for `qwq-agent eval` rows (task_id, kind), `batch` for `qwq-agent batch` rows (id), else ``."""
    if "task_id" in row and "kind" in row:
        return "eval"
    if "id" in row:
        return "batch"
    return ""


def _row_key(row: dict[str, Any]) -> tuple[str, ...]:
    if row_shape(row) == "eval":
        return (str(row.get("task_id")), str(row.get("kind")), str(row.get("variant") or ""))
    return (str(row.get("id")),)


def latest_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The last row per check, in order of first appearance (a resumed file may hold older attempts)."""
    latest: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in rows:
        if isinstance(row, dict) and row_shape(row):
            latest[_row_key(row)] = row
    return list(latest.values())


def _tokens(row: dict[str, Any]) -> int | None:
    direct = _int(row.get("tokens"))
    if direct is not None:
        return direct
    usage = row.get("usage")
    if isinstance(usage, dict):
        parts = [_int(usage.get(k)) for k in ("prompt_tokens", "completion_tokens")]
        if any(p is not None for p in parts):
            return sum(p or 0 for p in parts)
    parts = [_int(row.get(k)) for k in ("prompt_tokens", "completion_tokens")]
    if any(p is not None for p in parts):
        return sum(p or 0 for p in parts)
    return None


def _duration(row: dict[str, Any]) -> float | None:
    for key in ("duration_s", "wall_s", "wall_time_s", "wall_time", "elapsed_s", "solve_s"):
        value = _float(row.get(key))
        if value is not None:
            return value
    return None


def _verdict(row: dict[str, Any]) -> bool | None:
    for key in ("passed", "solved", "ok"):
        if isinstance(row.get(key), bool):
            return bool(row[key])
    return None


def task_view(index: int, row: dict[str, Any]) -> TaskView:
    shape = row_shape(row)
    if shape == "eval":
        kind = str(row.get("kind", ""))
        variant = row.get("variant")
        label = kind + (f":{variant}" if variant else "")
        task_id = str(row.get("task_id", ""))
    else:
        label = ""
        task_id = str(row.get("id", ""))
    error = row.get("error")
    transcript = row.get("transcript") or row.get("transcript_path") or ""
    return TaskView(
        index=index,
        task_id=clean(task_id),
        kind=clean(label),
        passed=_verdict(row),
        steps=_int(row.get("steps")),
        tokens=_tokens(row),
        duration=_duration(row),
        stop_reason=clean(str(row.get("stop_reason") or "")),
        error=clean(str(error)) if error else "",
        transcript=clean(str(transcript)) if isinstance(transcript, str) else "",
        harness_error=bool(row.get("harness_error")),
        expected=bool(row["ok"])
        if shape == "eval" and label != "agent" and isinstance(row.get("ok"), bool)
        else None,
    )


def _nice_step(span: float, bins: int) -> float:
    raw = span / bins
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def histogram(title: str, unit: str, values: Sequence[tuple[float, bool]], *, integer: bool) -> Histogram:
    """Counts of `values` (value, passed) in at most 20 bins of a round width, passed and failed stacked."""
    width, height = 480.0, 160.0
    if not values:
        return Histogram(title, unit, [], height, width, 0, [])
    low = min(v for v, _ in values)
    high = max(v for v, _ in values)
    if integer and high - low < 20:
        step = 1.0
        start = float(math.floor(low))
    else:
        step = _nice_step(max(high - low, 1.0), 20)
        if integer:
            step = max(1.0, math.ceil(step))
        start = float(math.floor(low / step) * step)
    bins = max(1, math.floor((high - start) / step) + 1)
    passed = [0] * bins
    total = [0] * bins
    for value, ok in values:
        at = min(bins - 1, int((value - start) // step))
        total[at] += 1
        passed[at] += int(ok)
    max_count = max(total)
    bar_width = width / bins
    bars = []
    for i in range(bins):
        low_edge = start + i * step
        single = step == 1.0 and integer
        label = f"{low_edge:,.0f}" if single else f"{low_edge:,.0f}–{low_edge + step:,.0f}"
        scale = (height - 20) / max_count if max_count else 0
        bars.append(
            Bar(
                x=round(i * bar_width, 2),
                width=round(max(bar_width - 2, 1), 2),
                passed_height=round(passed[i] * scale, 2),
                failed_height=round((total[i] - passed[i]) * scale, 2),
                label=label,
                count=total[i],
                passed=passed[i],
            )
        )
    every = max(1, math.ceil(bins / 8))
    ticks = [(round(b.x + b.width / 2, 2), b.label.split("–")[0]) for b in bars[::every]]
    return Histogram(title, unit, bars, height, width, max_count, ticks)


def results_view(
    rows: Sequence[dict[str, Any]],
    runs: dict[int, RunView],
    notes: dict[int, str],
    *,
    title: str,
    source: str,
) -> ResultsView:
    """The view of eval or batch rows (already reduced to the latest per check) and the runs they name."""
    tasks = [task_view(i, row) for i, row in enumerate(rows)]
    for task in tasks:
        task.run = runs.get(task.index)
        task.run_note = notes.get(task.index, "")
    shapes = {row_shape(r) for r in rows}
    shape = "eval" if shapes == {"eval"} else "batch" if shapes == {"batch"} else "mixed"
    agent_tasks = [t for t in tasks if t.kind in ("agent", "")]
    judged = [t for t in agent_tasks if t.passed is not None]
    passed = sum(1 for t in judged if t.passed)
    has_verdicts = bool(judged)
    counts = {
        "all": len(tasks),
        "passed": sum(1 for t in tasks if t.succeeded),
        "failed": sum(1 for t in tasks if t.failed),
        "stuck": sum(1 for t in tasks if t.stuck),
    }
    steps = [t.steps for t in agent_tasks if t.steps is not None]
    tokens = [t.tokens for t in agent_tasks if t.tokens is not None]
    durations = [t.duration for t in agent_tasks if t.duration is not None]
    answered = sum(1 for t in agent_tasks if t.stop_reason == "final_answer")
    figures = [
        ("runs", number(len(agent_tasks))),
        ("answered", f"{answered:,} / {len(agent_tasks):,}"),
        ("steps (mean / max)", f"{sum(steps) / len(steps):.1f} / {max(steps)}" if steps else "–"),
        ("tokens (total)", number(sum(tokens)) if tokens else "–"),
        ("tokens per run (mean)", number(sum(tokens) / len(tokens)) if tokens else "–"),
        ("time per run (mean)", seconds(sum(durations) / len(durations)) if durations else "–"),
    ]
    reasons = Counter(t.stop_reason or "none" for t in agent_tasks)
    stop_reasons = [(reason, count, _stop_class(reason)) for reason, count in reasons.most_common()]
    histograms = [
        histogram(
            "Steps per run",
            "steps",
            [(float(t.steps), bool(t.passed)) for t in agent_tasks if t.steps is not None],
            integer=True,
        ),
        histogram(
            "Tokens per run",
            "tokens",
            [(float(t.tokens), bool(t.passed)) for t in agent_tasks if t.tokens is not None],
            integer=True,
        ),
    ]
    harness: list[tuple[str, str]] = []
    canonical = [t for t in tasks if t.kind == "canonical"]
    broken = [t for t in tasks if t.kind.startswith("broken")]
    if canonical or broken:
        harness.append(
            ("canonical solutions passed", f"{sum(1 for t in canonical if t.passed)} / {len(canonical)}")
        )
        variants = sorted({t.kind for t in broken})
        for variant in variants:
            group = [t for t in broken if t.kind == variant]
            harness.append(
                (f"{variant} failed", f"{sum(1 for t in group if t.passed is False)} / {len(group)}")
            )
    checks = [t for t in tasks if t.expected is not None or (t.kind not in ("agent", "") and t.harness_error)]
    if checks:
        harness.append(("checks as expected", f"{sum(1 for t in checks if t.succeeded)} / {len(checks)}"))
    pass_rate = f"{100.0 * passed / len(judged):.1f}%" if judged else "–"
    return ResultsView(
        title=clean(title),
        source=clean(source),
        shape=shape,
        total=len(judged),
        passed=passed,
        has_verdicts=has_verdicts,
        pass_rate=pass_rate,
        counts=counts,
        figures=figures,
        stop_reasons=stop_reasons,
        histograms=histograms,
        tasks=tasks,
        harness=harness,
    )


def resolve_transcript(path: str, results_path: Path | None) -> Path | None:
    """Where a row's transcript is: as written (relative to the working directory), else next to the results."""
    if not path:
        return None
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    if results_path is not None and not candidate.is_absolute():
        beside = results_path.parent / candidate
        if beside.is_file():
            return beside
    return None
