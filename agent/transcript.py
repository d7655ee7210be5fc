"""JSONL transcripts: every run is written as it happens, so a killed run can be resumed.

One JSON object per line. `run_start` holds the configuration and the opening messages; each finished step is
one `step` line (the assistant turn, its observations, the step's usage and durations); `run_end` says why the
run stopped. A `resume` line marks where another process continued the run.

Durability: a step's line is written and fsynced before the loop asks the model for the next step, so a killed
run resumes with every finished step. The writing and the fsync happen on a small pool of threads shared by
all transcripts (the loop awaits them without blocking, so many agents on one event loop do not stall each
other for an fsync each; fsyncs of different files then overlap, which the filesystem's journal commits
together). Each file is written by one thread at a time, in order, and lines queued while its fsync is under
way go to disk together with one fsync.

The file appears with the run's first finished step: a run that ends before it leaves no transcript, since
there would be nothing to resume. A process killed mid-write can leave a torn last line: readers ignore it and
writers cut it off before appending, so no finished step is ever lost or duplicated. A run whose last step is
a final answer is finished even when its `run_end` line is missing or torn.

The writing process holds an exclusive `flock` on the file, so a second process cannot resume a run that is
still going (its steps would be duplicated). The kernel drops the lock when the holder exits, however it dies.
The `run_start` and `resume` lines say which process (pid, host) wrote from when, which is how a refused
resume names the holder.

Text the writer cannot encode as it is (lone surrogates, values nested too deep or numbers too large for JSON)
is written in a safe form rather than raising: a transcript write never ends a run.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import socket
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from agent.messages import AssistantMessage, Message, message_from_dict
from prompts.errors import ConfigurationError

__all__ = [
    "RecordedStep",
    "TranscriptError",
    "TranscriptLockedError",
    "TranscriptRecord",
    "TranscriptWriter",
    "json_text",
    "open_for_resume",
    "read_transcript",
]

FORMAT_VERSION = 1
# Values nested deeper than this are written as a note instead (json.loads of a line recurses on read).
MAX_DEPTH = 100
# Python refuses to turn integers of more than 4,300 digits into text; beyond this many bits, write a note.
_MAX_INT_BITS = 14_000
# Threads that write and fsync, shared by every transcript of the process. Measured with 50 concurrent agents
# (benchmarks/transcript_concurrency.py): a thread per transcript stalled the loop longer (thread start-up
# and GIL hand-offs), 4 shared threads left too few fsyncs in flight; 16 kept both near their best.
WRITER_THREADS = 16
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _writer_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=WRITER_THREADS, thread_name_prefix="qwq-transcript")
        return _pool


class TranscriptError(ConfigurationError, ValueError):
    """The file is not a qwq-agent transcript, is damaged beyond its last line, or cannot be written."""


class TranscriptLockedError(TranscriptError):
    """Another process is writing this transcript (a run still going); `pid`, `host`, `since` name it if known."""

    def __init__(
        self, message: str, *, pid: int | None = None, host: str | None = None, since: float | None = None
    ) -> None:
        super().__init__(message)
        self.pid = pid
        self.host = host
        self.since = since


@dataclass(frozen=True)
class RecordedStep:
    """One finished step: the model's text as it came, the messages the step added, and what it cost.

    `usage`, `duration_s` and `tool_durations` (seconds per call id) are what the step line recorded, for
    replays and reports; older transcripts have no `tool_durations`.
    """

    model_output: str
    messages: list[Message]
    step: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    duration_s: float | None = None
    tool_durations: dict[str, float] = field(default_factory=dict)
    opens_thinking: bool = True
    """Whether the model's output started inside its reasoning (False for models whose format opens none)."""


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
    """The `run_end` record that closes the run; for a run whose last step is a final answer but whose
    `run_end` line is missing or torn, one made from that step (with `"inferred": True`)."""
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
        """The run stopped (an answer, a budget, an error) rather than being killed mid-run."""
        return self.end is not None

    @property
    def stop_reason(self) -> str | None:
        return None if self.end is None else str(self.end.get("stop_reason", ""))

    @property
    def answered(self) -> bool:
        """The run ended with a final answer: resuming it without a new task asks the model nothing."""
        return self.stop_reason == "final_answer"


# ----------------------------------------------------------------- encoding that never raises


def _dump(message: Message) -> dict[str, Any]:
    try:
        return message.model_dump(mode="json")
    except (ValueError, TypeError, RecursionError):
        # pydantic refuses values nested a few hundred levels deep; write what can be written
        plain: dict[str, Any] = _plain(message, 0)
        return plain


def _plain(value: Any, depth: int) -> Any:
    """A JSON-ready copy of `value` with anything that cannot be written as it is replaced by a note."""
    if depth > MAX_DEPTH:
        return f"[nested more than {MAX_DEPTH} levels deep: not recorded]"
    if value is None or isinstance(value, bool | str | float):
        return value
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            return f"[an integer of {value.bit_length()} bits: not recorded]"
        return value
    if isinstance(value, BaseModel):
        return {name: _plain(getattr(value, name), depth + 1) for name in type(value).model_fields}
    if isinstance(value, dict):
        return {str(key): _plain(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item, depth + 1) for item in value]
    return repr(value)


def _without_surrogates(text: str) -> str:
    """Join surrogate pairs into the characters they stand for; replace lone surrogates with U+FFFD."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _dumps(value: Any) -> str:
    if isinstance(value, BaseModel):
        try:
            value = value.model_dump(mode="json")
        except (ValueError, TypeError, RecursionError):
            value = _plain(value, 0)
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return json.dumps(_plain(value, 0), ensure_ascii=False, separators=(",", ":"))


def json_text(value: Any) -> str:
    """`value` as one line of compact JSON that always encodes to UTF-8, whatever it holds.

    What the transcript writes, and what `--json` prints: values that cannot be written as they are (see
    `_plain`) become notes, lone surrogates become U+FFFD.
    """
    text = _dumps(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _without_surrogates(text)
    return text


def _encode(record: dict[str, Any]) -> bytes:
    """One line of valid UTF-8 JSON for `record` (as `json_text`, encoding once on the common path)."""
    text = _dumps(record)
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (_without_surrogates(text) + "\n").encode("utf-8")


# ----------------------------------------------------------------- writing


class TranscriptWriter:
    """Appends records to a transcript file from the writer threads; `durable()` waits until they are on disk.

    Nothing touches the disk until the first step is recorded (`start` only keeps the opening record), so
    constructing an Agent, or a run that ends before its first step, leaves no file behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._created = False
        self._pending_start: bytes | None = None
        # (line, or None for "close the file", and the future that completes once it is done)
        self._queue: list[tuple[bytes | None, Future[None]]] = []
        self._draining = False
        self._mutex = threading.Lock()
        self._last: Future[None] | None = None
        self._failure: OSError | None = None
        self._closed = False

    @property
    def created(self) -> bool:
        """Whether the file exists (or is being created by a writer thread): a step has been recorded."""
        return self._created

    # -- resuming an existing file

    def lock_existing(self) -> None:
        """Open an existing transcript for appending and take its lock; raises if another process holds it."""
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except FileNotFoundError:
            raise TranscriptError(f"no transcript at {self.path}") from None
        except IsADirectoryError:
            raise TranscriptError(_directory_message(self.path)) from None
        except OSError as exc:
            raise TranscriptError(f"cannot open the transcript {self.path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _locked_error(self.path) from None
        self._fd = fd
        self._created = True

    def cut_to(self, valid_length: int) -> None:
        """Drop a torn last line the previous process left (call with the lock held, before appending)."""
        assert self._fd is not None, "lock_existing() first"
        if os.fstat(self._fd).st_size > valid_length:
            os.ftruncate(self._fd, valid_length)

    # -- records

    def start(self, *, run_id: str, task: str, config: dict[str, Any], messages: list[Message]) -> None:
        """Keep the opening record; it is written together with the first step."""
        self._pending_start = _encode(
            {
                "type": "run_start",
                "version": FORMAT_VERSION,
                "run_id": run_id,
                "created": time.time(),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "task": task,
                "config": config,
                "messages": [_dump(m) for m in messages],
            }
        )

    def resume(self, *, messages: list[Message]) -> None:
        self.write(
            {
                "type": "resume",
                "time": time.time(),
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "messages": [_dump(m) for m in messages],
            }
        )

    def step(
        self,
        *,
        step: int,
        messages: list[Message],
        model_output: str,
        usage: dict[str, int],
        duration_s: float,
        tool_durations: dict[str, float] | None = None,
        opens_thinking: bool = True,
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
        if not opens_thinking:
            record["opens_thinking"] = False
        self.write(record)

    def end(
        self, *, stop_reason: str, answer: str, steps: int, usage: dict[str, int], detail: str = ""
    ) -> None:
        """Record how the run ended; nothing is written for a run that never recorded a step."""
        if not self._created:
            return
        record: dict[str, Any] = {
            "type": "run_end",
            "time": time.time(),
            "stop_reason": stop_reason,
            "answer": answer,
            "steps": steps,
            "usage": usage,
        }
        if detail:
            record["detail"] = detail
        self.write(record)

    def write(self, record: dict[str, Any]) -> Future[None]:
        """Queue one record; the returned future (and `durable()`) completes once it is fsynced."""
        if self._closed:
            raise TranscriptError(f"the transcript {self.path} is closed")
        line = _encode(record)
        if not self._created:
            self._created = True
            if self._pending_start is not None:
                line = self._pending_start + line
                self._pending_start = None
        return self._enqueue(line)

    async def durable(self) -> None:
        """Wait, without blocking the event loop, until every record written so far is on disk."""
        if self._last is not None:
            try:
                await asyncio.wrap_future(self._last)
            except OSError as exc:
                raise TranscriptError(f"cannot write the transcript {self.path}: {exc}") from exc

    def close(self) -> Future[None] | None:
        """Write what is queued, fsync, release the lock and close, on a writer thread; does not block.

        Returns a future to wait on (None when nothing is pending); the interpreter also waits for it at
        exit, so a run interrupted by Ctrl-C still gets its last lines to disk.
        """
        if self._closed:
            return self._last
        self._closed = True
        if self._last is None:  # nothing was ever queued: only a lock taken for a resume to release
            self._release()
            return None
        return self._enqueue(None)

    async def aclose(self) -> None:
        """`close`, and wait until the file is complete."""
        self.close()
        await self.durable()

    # -- the writer threads

    def _enqueue(self, line: bytes | None) -> Future[None]:
        done: Future[None] = Future()
        with self._mutex:
            self._queue.append((line, done))
            start = not self._draining
            self._draining = True
        if start:
            _writer_pool().submit(self._drain)
        self._last = done
        return done

    def _drain(self) -> None:
        """Write everything queued for this file with one fsync per batch, until the queue is empty.

        At most one `_drain` of a file runs at a time (`_draining`), which keeps its lines in order.
        """
        while True:
            with self._mutex:
                batch, self._queue = self._queue, []
                if not batch:
                    self._draining = False
                    return
            failure: Exception | None = None
            try:
                self._write([line for line, _ in batch if line is not None])
            except Exception as exc:  # never leave a waiter hanging: every future completes
                failure = exc
                if isinstance(exc, OSError):
                    self._failure = exc
            if any(line is None for line, _ in batch):
                try:
                    self._release()  # before the futures complete: whoever waits on close may lock the file next
                except OSError as exc:
                    failure = failure or exc
            for _, done in batch:
                if failure is not None:
                    done.set_exception(failure)
                else:
                    done.set_result(None)

    def _write(self, lines: list[bytes]) -> None:
        if self._failure is not None:
            raise self._failure
        if not lines:
            return
        if self._fd is None:
            self._create()
        assert self._fd is not None
        data = memoryview(b"".join(lines))
        while data:
            data = data[os.write(self._fd, data) :]
        os.fsync(self._fd)

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a new file: nobody else knows its name yet
        self._fd = fd
        # the new directory entry must survive a crash too, or the fsynced lines are in no file
        directory = os.open(self.path.parent, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def _release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)  # closing the last descriptor releases the flock


def _holder(path: Path) -> tuple[int | None, str | None, float | None, str]:
    """Who last started or resumed writing `path`, from its own records: (pid, host, since, what they did)."""
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError:
        return None, None, None, ""
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if isinstance(record, dict) and record.get("type") in ("run_start", "resume"):
            pid, host = record.get("pid"), record.get("host")
            since = record.get("created", record.get("time"))
            what = "started the run" if record["type"] == "run_start" else "resumed the run"
            return (
                pid if isinstance(pid, int) else None,
                host if isinstance(host, str) else None,
                float(since) if isinstance(since, int | float) else None,
                what,
            )
    return None, None, None, ""


def _locked_error(path: Path) -> TranscriptLockedError:
    pid, host, since, what = _holder(path)
    advice = (
        "wait for it to end, or stop it first: resuming a run that is still going would duplicate its steps"
    )
    if pid is None:
        return TranscriptLockedError(f"{path} is being written by another process; {advice}")
    when = (
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if since is not None else "an unknown time"
    )
    return TranscriptLockedError(
        f"{path} is being written by process {pid} on {host or 'an unknown host'}, which {what} at {when}; "
        f"{advice}",
        pid=pid,
        host=host,
        since=since,
    )


def open_for_resume(path: str | os.PathLike[str]) -> tuple[TranscriptRecord, TranscriptWriter]:
    """Lock a transcript, read it, and cut a torn last line: the writer then appends where the run stopped."""
    writer = TranscriptWriter(Path(path))
    writer.lock_existing()
    try:
        record = read_transcript(path)
        writer.cut_to(record.valid_length)
    except BaseException:
        writer.close()
        raise
    return record, writer


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


# ----------------------------------------------------------------- reading


def _directory_message(path: Path) -> str:
    newest = max(path.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, default=None)
    hint = f", e.g. the newest: {newest}" if newest is not None else " (it holds no .jsonl files)"
    return f"{path} is a directory: name one transcript file in it{hint}"


def _is_final_step(messages: list[Message]) -> bool:
    """A step that ended the run with an answer: the loop records such a step as one assistant turn with no
    calls; every other step also holds observations (results, or notes on what went wrong)."""
    return len(messages) == 1 and isinstance(messages[0], AssistantMessage) and not messages[0].tool_calls


# The fields of a run_end record that readers use as they are, and the type each must have.
_END_FIELDS: dict[str, type | tuple[type, ...]] = {
    "stop_reason": str,
    "answer": str,
    "steps": int,
    "detail": str,
    "usage": dict,
    "time": (int, float),
}


def _checked_end(record: dict[str, Any]) -> dict[str, Any]:
    """A `run_end` record whose fields have the types readers rely on; raises TypeError for one that does not
    (a damaged line: its `steps` as `1e999` would otherwise raise in whoever reads it, far from here)."""
    for name, kind in _END_FIELDS.items():
        value = record.get(name)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            raise TypeError(f"the run_end record's {name} is not a {getattr(kind, '__name__', 'number')}")
    return record


def read_transcript(path: str | os.PathLike[str]) -> TranscriptRecord:
    """Read a transcript back. A torn last line is ignored; damage anywhere else raises `TranscriptError`."""
    file_path = Path(path)
    records, valid_length = _json_records(file_path, _read_bytes(file_path))
    if not records or records[0][1].get("type") != "run_start":
        raise TranscriptError(f"{file_path} is not a qwq-agent transcript (no run_start record)")
    fold = _Fold()
    number = records[0][0]
    try:
        start = records[0][1]
        fold.messages = [message_from_dict(m) for m in start.get("messages", [])]
        for line_number, record in records[1:]:
            number = line_number  # named in the error below if this record is not valid
            fold.add(record)
        config = start.get("config", {})
        if not isinstance(config, dict):
            raise TypeError("config is not an object")
    except (ValueError, TypeError, AttributeError, KeyError, RecursionError, OverflowError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TranscriptError(
            f"{file_path}: line {number} is not a valid transcript record ({reason})"
        ) from None
    return TranscriptRecord(
        path=file_path,
        run_id=str(start.get("run_id", "")),
        task=str(start.get("task", "")),
        config=dict(config),
        messages=fold.messages,
        steps=fold.steps,
        usage=fold.usage,
        recorded_steps=fold.recorded,
        end=fold.end,
        valid_length=valid_length,
        created=float(start["created"]) if isinstance(start.get("created"), int | float) else None,
        other_records=fold.others,
    )


def _read_bytes(file_path: Path) -> bytes:
    try:
        return file_path.read_bytes()
    except FileNotFoundError:
        raise TranscriptError(f"no transcript at {file_path}") from None
    except IsADirectoryError:
        raise TranscriptError(_directory_message(file_path)) from None
    except OSError as exc:
        raise TranscriptError(f"cannot read {file_path}: {exc.strerror or exc}") from None


def _json_records(file_path: Path, data: bytes) -> tuple[list[tuple[int, dict[str, Any]]], int]:
    """The (line number, record) pairs and the length of the valid prefix; a torn last line is left out."""
    lines = data.split(b"\n")
    records: list[tuple[int, dict[str, Any]]] = []
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
            except (ValueError, RecursionError):
                if index >= len(lines) - 2 and not any(x.strip() for x in lines[index + 1 :]):
                    break
                raise TranscriptError(f"{file_path}: line {index + 1} is not a transcript record") from None
            records.append((index + 1, record))
        valid_length = end
        offset = end
    return records, valid_length


@dataclass
class _Fold:
    """What the records after `run_start` add up to, one record at a time (`read_transcript`)."""

    messages: list[Message] = field(default_factory=list)
    steps: int = 0
    recorded: list[RecordedStep] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    end: dict[str, Any] | None = None
    others: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    def add(self, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "step":
            self._step(record)
        elif kind == "resume":
            self.messages.extend(message_from_dict(m) for m in record.get("messages", []))
            self.others.append((len(self.recorded), record))
            self.end = None
        elif kind == "run_end":
            self.end = _checked_end(record)
        else:
            self.others.append((len(self.recorded), record))

    def _step(self, record: dict[str, Any]) -> None:
        step_messages = [message_from_dict(m) for m in record.get("messages", [])]
        self.messages.extend(step_messages)
        self.steps = int(record.get("step", self.steps + 1))
        step_usage = {key: int(record.get("usage", {}).get(key, 0)) for key in self.usage}
        duration = record.get("duration_s")
        durations = record.get("tool_durations")
        self.recorded.append(
            RecordedStep(
                str(record.get("model_output", "")),
                step_messages,
                step=self.steps,
                usage=step_usage,
                duration_s=float(duration) if isinstance(duration, int | float) else None,
                tool_durations={
                    str(k): float(v)
                    for k, v in (durations.items() if isinstance(durations, dict) else ())
                    if isinstance(v, int | float)
                },
                opens_thinking=record.get("opens_thinking") is not False,
            )
        )
        for key in self.usage:
            self.usage[key] += step_usage[key]
        self.end = None
        if _is_final_step(step_messages):
            # the run_end line may be missing or torn: the run ended here all the same
            answer = step_messages[0].content.strip()
            self.end = {"type": "run_end", "stop_reason": "final_answer", "answer": answer}
            self.end.update(steps=self.steps, usage=dict(self.usage), inferred=True)
