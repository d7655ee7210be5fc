"""JSONL transcripts: every run is written as it happens, so a killed run can be resumed.

One JSON object per line. `run_start` holds the configuration and the opening messages; each finished step is
one `step` line (the assistant turn and its observations), written and flushed before the next step begins;
`run_end` says why the run stopped. A process killed mid-write can leave a torn last line: readers ignore it
and writers cut it off before appending, so no finished step is ever lost or duplicated.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.messages import Message, message_from_dict

__all__ = ["RecordedStep", "TranscriptError", "TranscriptRecord", "TranscriptWriter", "read_transcript"]

FORMAT_VERSION = 1


class TranscriptError(ValueError):
    """The file is not a qwq-agent transcript, or is damaged beyond its last line."""


@dataclass(frozen=True)
class RecordedStep:
    """One finished step: the model's text as it came, and the messages the step added.

    `usage`, `duration_s` and `tool_durations` (seconds per call id) are what the step line recorded, for
    reports; older transcripts have no `tool_durations`.
    """

    model_output: str
    messages: list[Message]
    step: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    duration_s: float | None = None
    tool_durations: dict[str, float] = field(default_factory=dict)


@dataclass
class TranscriptRecord:
    """What a transcript file holds, read back."""

    path: Path
    run_id: str
    task: str
    config: dict[str, Any]
    messages: list[Message]
    steps: int
    usage: dict[str, int]
    recorded_steps: list[RecordedStep] = field(default_factory=list)
    end: dict[str, Any] | None = None
    # byte offset just past the last complete line: where a resumed run appends
    valid_length: int = 0
    created: float | None = None
    # records this reader does not interpret itself (`resume`, `condensation`, types added later), each with
    # the number of steps recorded before it, so a report can show them where they happened
    other_records: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    @property
    def model_outputs(self) -> list[str]:
        return [step.model_output for step in self.recorded_steps]

    @property
    def finished(self) -> bool:
        return self.end is not None


def _dump(message: Message) -> dict[str, Any]:
    return message.model_dump(mode="json")


class TranscriptWriter:
    """Appends records to a transcript file, flushing and syncing each one.

    Opened lazily on the first write so that constructing an Agent has no side effects.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: Any = None

    def _open(self, truncate_to: int | None = None) -> Any:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "ab")  # noqa: SIM115 - kept open across steps, closed in close()
            if truncate_to is not None and handle.tell() > truncate_to:
                handle.truncate(truncate_to)
                handle.seek(truncate_to)
            self._file = handle
        return self._file

    def reopen_at(self, valid_length: int) -> None:
        """Continue an existing transcript, dropping a torn last line if the previous process left one."""
        self._open(truncate_to=valid_length)

    def write(self, record: dict[str, Any]) -> None:
        handle = self._open()
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        handle.write(line.encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())

    def start(self, *, run_id: str, task: str, config: dict[str, Any], messages: list[Message]) -> None:
        self.write(
            {
                "type": "run_start",
                "version": FORMAT_VERSION,
                "run_id": run_id,
                "created": time.time(),
                "task": task,
                "config": config,
                "messages": [_dump(m) for m in messages],
            }
        )

    def resume(self, *, messages: list[Message]) -> None:
        self.write({"type": "resume", "time": time.time(), "messages": [_dump(m) for m in messages]})

    def step(
        self,
        *,
        step: int,
        messages: list[Message],
        model_output: str,
        usage: dict[str, int],
        duration_s: float,
        tool_durations: dict[str, float] | None = None,
    ) -> None:
        record: dict[str, Any] = {
            "type": "step",
            "step": step,
            "model_output": model_output,
            "messages": [_dump(m) for m in messages],
            "usage": usage,
            "duration_s": round(duration_s, 4),
        }
        if tool_durations:
            record["tool_durations"] = {k: round(v, 4) for k, v in tool_durations.items()}
        self.write(record)

    def end(self, *, stop_reason: str, answer: str, steps: int, usage: dict[str, int]) -> None:
        self.write(
            {
                "type": "run_end",
                "time": time.time(),
                "stop_reason": stop_reason,
                "answer": answer,
                "steps": steps,
                "usage": usage,
            }
        )

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def read_transcript(path: str | os.PathLike[str]) -> TranscriptRecord:
    """Read a transcript back. A torn last line is ignored; damage anywhere else raises."""
    file_path = Path(path)
    try:
        data = file_path.read_bytes()
    except FileNotFoundError:
        raise TranscriptError(f"no transcript at {file_path}") from None
    lines = data.split(b"\n")
    records: list[dict[str, Any]] = []
    offset = 0
    valid_length = 0
    for index, line in enumerate(lines):
        is_last = index == len(lines) - 1
        end = offset + len(line) + (0 if is_last else 1)
        if line.strip():
            try:
                record = json.loads(line)
                if not isinstance(record, dict) or is_last:
                    # a last line without its newline was not fully written
                    raise ValueError("torn line")
            except ValueError:
                if index >= len(lines) - 2 and not any(x.strip() for x in lines[index + 1 :]):
                    break
                raise TranscriptError(f"{file_path}: line {index + 1} is not a transcript record") from None
            records.append(record)
        valid_length = end
        offset = end
    if not records or records[0].get("type") != "run_start":
        raise TranscriptError(f"{file_path} is not a qwq-agent transcript (no run_start record)")
    start = records[0]
    messages = [message_from_dict(m) for m in start.get("messages", [])]
    steps = 0
    recorded: list[RecordedStep] = []
    usage = {"prompt_tokens": 0, "completion_tokens": 0}
    end_record: dict[str, Any] | None = None
    others: list[tuple[int, dict[str, Any]]] = []
    for record in records[1:]:
        kind = record.get("type")
        if kind == "step":
            step_messages = [message_from_dict(m) for m in record.get("messages", [])]
            messages.extend(step_messages)
            steps = int(record.get("step", steps + 1))
            raw_usage, raw_durations = record.get("usage"), record.get("tool_durations")
            step_usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
            durations: dict[str, Any] = raw_durations if isinstance(raw_durations, dict) else {}
            duration = record.get("duration_s")
            recorded.append(
                RecordedStep(
                    str(record.get("model_output", "")),
                    step_messages,
                    step=steps,
                    usage={k: int(v) for k, v in step_usage.items() if isinstance(v, int | float)},
                    duration_s=float(duration) if isinstance(duration, int | float) else None,
                    tool_durations={
                        str(k): float(v) for k, v in durations.items() if isinstance(v, int | float)
                    },
                )
            )
            for key in usage:
                usage[key] += int(step_usage.get(key, 0))
            end_record = None
        elif kind == "resume":
            messages.extend(message_from_dict(m) for m in record.get("messages", []))
            others.append((len(recorded), record))
            end_record = None
        elif kind == "run_end":
            end_record = record
        else:
            others.append((len(recorded), record))
    return TranscriptRecord(
        path=file_path,
        run_id=str(start.get("run_id", "")),
        task=str(start.get("task", "")),
        config=dict(start.get("config", {})),
        messages=messages,
        steps=steps,
        usage=usage,
        recorded_steps=recorded,
        end=end_record,
        valid_length=valid_length,
        created=float(start["created"]) if isinstance(start.get("created"), int | float) else None,
        other_records=others,
    )
