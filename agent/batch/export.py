"""Trajectories as training data: each finished run as the exact text (chatml) or the messages (ShareGPT).

What a run becomes. A run's transcript holds every message; its final assistant turn is what the model
produced last, after seeing everything before it. So one run gives one training row:

* `chatml`: `prompt` is the text the model saw before its final turn, rendered with the run's own settings
  (its tools in the system turn, its `keep_thinking` policy: earlier reasoning dropped as in the official
  format, or kept for the current task), ending in the generation prompt; `completion` is what it wrote, with
  its reasoning kept (the exact generated text when the transcript has it), and the end-of-turn marker;
  `text` is the two joined. Pipelines that train on whole texts take `text`, those that mask the prompt
  take the pair.
* `sharegpt`: the conversation as LLaMA-Factory's ShareGPT shape reads it: `system`, `tools` (JSON text),
  and `conversations` of `human`, `gpt`, `function_call` (JSON of the call, or a list of calls) and
  `observation` turns (several results of one turn as a JSON list). Earlier reasoning is dropped as the
  model saw it; the final `gpt` turn keeps its reasoning (`<think>...</think>` before the answer). Text an
  assistant wrote next to its tool calls has no place in this shape and is left out: use chatml for that.

The renderer is a parameter (`ChatRenderer`), looked up by name in `RENDERERS`: the default `qwq` is
`prompts.render`, QwQ-32B's own format. Other models' chat formats plug in by adding an entry.

Sources: a directory of transcripts (every `*.jsonl` that is one), one transcript, or a results file of
`qwq-agent batch` or `qwq-agent eval` whose rows point at transcripts (relative paths are tried against the
working directory, then the results file's directory). Only finished runs are exported. Filters: solved only
(needs a results file: transcripts do not record checks), stop reasons, at most N steps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from prompts.errors import ConfigurationError

if TYPE_CHECKING:
    from agent.messages import AssistantMessage, Message
    from agent.transcript import TranscriptRecord

__all__ = [
    "RENDERERS",
    "ChatRenderer",
    "ExportError",
    "ExportFilter",
    "ExportStats",
    "QwQRenderer",
    "RunSource",
    "chatml_row",
    "export_runs",
    "find_runs",
    "sharegpt_row",
]

Format = Literal["chatml", "sharegpt"]


class ExportError(ConfigurationError, ValueError):
    """The source cannot be exported as asked (the message says why)."""


class ChatRenderer(Protocol):
    """A model's chat format, as the exporter needs it."""

    name: str

    def prompt(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], *, keep_thinking: str
    ) -> str:
        """The text the model saw before its turn, ending with the generation prompt."""
        ...

    def completion(self, message: AssistantMessage) -> str:
        """The text the model wrote for `message` (reasoning included) and its end-of-turn marker."""
        ...


class QwQRenderer:
    """QwQ-32B's format (`prompts.render`): the generation prompt opens `<think>\\n`, turns end `<|im_end|>`."""

    name = "qwq"
    end_of_turn = "<|im_end|>\n"

    def prompt(
        self, messages: Sequence[Message], tools: Sequence[dict[str, Any]], *, keep_thinking: str
    ) -> str:
        import prompts

        policy: prompts.KeepThinking = "current_task" if keep_thinking == "current_task" else "none"
        return prompts.render(list(messages), list(tools), add_generation_prompt=True, keep_thinking=policy)

    def completion(self, message: AssistantMessage) -> str:
        if message.raw is not None:
            return message.raw + self.end_of_turn
        # No exact text recorded (e.g. a chat-API backend): the renderer shows a last assistant turn with its
        # reasoning, as written after the generation prompt's `<think>\n`.
        import prompts

        head = "<|im_start|>assistant"
        rendered = prompts.render([message], add_generation_prompt=False)
        return rendered[len(head) :].removeprefix("\n")


RENDERERS: dict[str, ChatRenderer] = {"qwq": QwQRenderer()}


@dataclass
class RunSource:
    """One run to export: its transcript, and what a results row said about it (if it came from one)."""

    path: Path
    id: str
    solved: bool | None = None
    row: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportFilter:
    solved_only: bool = False
    stop_reasons: frozenset[str] = frozenset()
    max_steps: int | None = None


@dataclass
class ExportStats:
    exported: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


def _is_transcript(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            first = f.readline()
        record = json.loads(first)
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and record.get("type") == "run_start"


def _resolve(path_text: str, results: Path) -> Path | None:
    path = Path(path_text)
    candidates = [path] if path.is_absolute() else [path, results.parent / path]
    return next((c for c in candidates if c.is_file()), None)


def find_runs(source: Path, stats: ExportStats) -> tuple[list[RunSource], bool]:
    """The runs `source` names, and whether their solved state is known (it comes from a results file)."""
    if source.is_dir():
        runs = [RunSource(path=p, id=p.stem) for p in sorted(source.glob("*.jsonl")) if _is_transcript(p)]
        return runs, False
    if not source.is_file():
        raise ExportError(f"{source} is neither a directory of transcripts nor a file")
    if _is_transcript(source):
        return [RunSource(path=source, id=source.stem)], False
    from agent.batch.results import ResultsFileError, read_rows

    try:
        rows = read_rows(source)
    except ResultsFileError as exc:
        raise ExportError(str(exc)) from None
    if not rows:
        raise ExportError(f"{source} holds no results rows and is not a transcript")
    runs = []
    for row in rows:
        if row.get("kind", "agent") != "agent":
            continue  # eval --check-harness rows: no agent ran
        transcript = row.get("transcript")
        if not isinstance(transcript, str):
            stats.skip("no transcript")
            continue
        path = _resolve(transcript, source)
        if path is None:
            stats.skip("transcript file missing")
            continue
        solved = row.get("solved", row.get("passed"))
        runs.append(
            RunSource(
                path=path,
                id=str(row.get("id", row.get("task_id", path.stem))),
                solved=solved if isinstance(solved, bool) else None,
                row=row,
            )
        )
    return runs, True


def _final_turn(messages: Sequence[Message]) -> int | None:
    from agent.messages import AssistantMessage

    return next(
        (i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], AssistantMessage)), None
    )


def _tool_specs(record: TranscriptRecord) -> list[dict[str, Any]] | None:
    specs = record.config.get("tool_specs")
    if isinstance(specs, list):
        return [s for s in specs if isinstance(s, dict)]
    return None if record.config.get("tools") else []


def _meta(run: RunSource, record: TranscriptRecord) -> dict[str, Any]:
    end = record.end or {}
    return {
        "id": run.id,
        "run_id": record.run_id,
        "stop_reason": end.get("stop_reason"),
        "steps": record.steps,
        "solved": run.solved,
    }


def chatml_row(
    record: TranscriptRecord, tools: Sequence[dict[str, Any]], renderer: ChatRenderer
) -> dict[str, Any] | None:
    """`prompt`, `completion` and `text` of a run's final turn (None when the model never answered)."""
    from agent.messages import AssistantMessage

    index = _final_turn(record.messages)
    if index is None:
        return None
    final = record.messages[index]
    assert isinstance(final, AssistantMessage)
    keep = str(record.config.get("keep_thinking") or "none")
    prompt = renderer.prompt(record.messages[:index], tools, keep_thinking=keep)
    completion = renderer.completion(final)
    return {"text": prompt + completion, "prompt": prompt, "completion": completion}


def sharegpt_row(record: TranscriptRecord, tools: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The run as ShareGPT `conversations` up to its final assistant turn (see the module docstring)."""
    from agent.messages import AssistantMessage, SystemMessage, ToolMessage

    index = _final_turn(record.messages)
    if index is None:
        return None
    messages = record.messages[: index + 1]
    system = ""
    if messages and isinstance(messages[0], SystemMessage):
        system, messages = messages[0].content, messages[1:]
    turns: list[dict[str, str]] = []
    observations: list[str] = []

    def flush() -> None:
        if observations:
            value = (
                observations[0] if len(observations) == 1 else json.dumps(observations, ensure_ascii=False)
            )
            turns.append({"from": "observation", "value": value})
            observations.clear()

    for position, message in enumerate(messages):
        if isinstance(message, ToolMessage):
            observations.append(message.content)
            continue
        flush()
        if isinstance(message, AssistantMessage):
            last = position == len(messages) - 1
            if message.tool_calls:
                calls = [{"name": c.name, "arguments": c.arguments} for c in message.tool_calls]
                value = json.dumps(calls[0] if len(calls) == 1 else calls, ensure_ascii=False)
                turns.append({"from": "function_call", "value": value})
            else:
                text = message.content
                if last and message.thinking:
                    text = f"<think>\n{message.thinking}\n</think>\n\n{message.content}"
                turns.append({"from": "gpt", "value": text})
        else:  # a user turn, or a later system message shown as a plain turn
            turns.append({"from": "human", "value": message.content})
    flush()
    return {
        "system": system,
        "tools": json.dumps(list(tools), ensure_ascii=False) if tools else "",
        "conversations": turns,
    }


def _selected(run: RunSource, record: TranscriptRecord, keep: ExportFilter, stats: ExportStats) -> bool:
    if record.end is None:
        stats.skip("unfinished run")
        return False
    if keep.solved_only and run.solved is not True:
        stats.skip("not solved")
        return False
    if keep.stop_reasons and str(record.end.get("stop_reason")) not in keep.stop_reasons:
        stats.skip("stop reason")
        return False
    if keep.max_steps is not None and record.steps > keep.max_steps:
        stats.skip("too many steps")
        return False
    return True


def export_runs(
    source: Path,
    *,
    format: Format = "chatml",
    keep: ExportFilter | None = None,
    renderer: ChatRenderer | None = None,
    stats: ExportStats | None = None,
) -> Iterator[dict[str, Any]]:
    """Training rows for the runs `source` names that pass `keep` (counts of the others go to `stats`)."""
    from agent.transcript import TranscriptError, read_transcript

    keep = keep or ExportFilter()
    stats = stats if stats is not None else ExportStats()
    chat = renderer or RENDERERS["qwq"]
    runs, known_solved = find_runs(source, stats)
    if keep.solved_only and not known_solved:
        raise ExportError(
            "--solved-only needs a results file (from `qwq-agent batch` or `eval`): transcripts alone do not "
            "record whether a task was solved"
        )
    for run in runs:
        try:
            record = read_transcript(run.path)
        except TranscriptError:
            stats.skip("damaged transcript")
            continue
        if not _selected(run, record, keep, stats):
            continue
        tools = _tool_specs(record)
        if tools is None:
            stats.skip("tool definitions not recorded (older transcript)")
            continue
        body = chatml_row(record, tools, chat) if format == "chatml" else sharegpt_row(record, tools)
        if body is None:
            stats.skip("no model turn")
            continue
        stats.exported += 1
        yield {**_meta(run, record), **body}
