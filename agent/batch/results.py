"""The output of a batch: one `BatchResult` per task, written as one JSONL line by the driver alone.

Each row is written and flushed as soon as its task ends, so a driver killed at any moment leaves every
finished task in the file (the kernel holds what a dead process wrote). Syncing to the disk itself, which only
a machine crash needs, happens at most once a second, on a thread of its own, and at the end: an fsync (4 ms
on this project's test machine, far more on a busy disk) blocks its caller, which is the driver's event loop
with every run in flight. A kill in the middle of a write can leave a torn last line;
`ResultsFile.open(resume=True)` cuts it off before appending, so the file stays valid JSONL and the torn task
simply runs again.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from prompts.errors import ConfigurationError

__all__ = ["BatchResult", "ResultsFile", "ResultsFileError", "read_rows"]


@dataclass
class BatchResult:
    """What one task produced. `error` is set when the run could not finish (the model or engine failed, the
    worker died more often than retries allow); `solved` is None when the task has no check.

    `worker` says where the task ran (`host`, `pid`, and on Ray the `node` id); `started_at` is the wall-clock
    time (epoch seconds) the successful attempt began on that worker.
    """

    id: str
    answer: str | None = None
    stop_reason: str | None = None
    steps: int = 0
    tool_calls: int = 0
    usage: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    transcript: str | None = None
    error: str | None = None
    error_type: str | None = None
    solved: bool | None = None
    started_at: float = 0.0
    worker: dict[str, Any] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """The run did not end normally (an error, not merely a budget)."""
        return self.error is not None

    def to_row(self) -> dict[str, Any]:
        """Every field, in order (copies of the dicts); the times rounded to 0.1 ms."""
        return asdict(self) | {"wall_s": round(self.wall_s, 4), "started_at": round(self.started_at, 4)}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> BatchResult:
        known = {f: row[f] for f in cls.__dataclass_fields__ if f in row}
        known["id"] = str(row.get("id"))
        return cls(**known)


class ResultsFileError(ConfigurationError):
    """The results file cannot be used as asked (it has rows and --resume was not given, or it is damaged)."""


def _valid_prefix(data: bytes) -> tuple[int, list[dict[str, Any]]]:
    """The byte length of the complete JSON-object lines at the start of `data`, and those rows.

    Only a last line may be torn (no newline, or not JSON): damage before the end is not a kill mid-write.
    """
    rows: list[dict[str, Any]] = []
    offset = 0
    while offset < len(data):
        end = data.find(b"\n", offset)
        if end < 0:
            break  # a last line without its newline was not completely written
        line = data[offset:end]
        if line.strip():
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict):
                if data[end + 1 :].strip():
                    number = data.count(b"\n", 0, offset) + 1
                    raise ResultsFileError(f"line {number} is not a JSON object")
                break
            rows.append(row)
        offset = end + 1
    return offset, rows


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The complete rows of a results file (a torn last line is ignored)."""
    file = Path(path)
    if not file.exists():
        return []
    try:
        return _valid_prefix(file.read_bytes())[1]
    except ResultsFileError as exc:
        raise ResultsFileError(f"{file}: {exc}") from None


class ResultsFile:
    """RESULTS.jsonl, appended to row by row by one writer (the driver)."""

    SYNC_INTERVAL_S = 1.0

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._handle: Any = None
        self._synced = 0.0
        self._syncer: ThreadPoolExecutor | None = None
        self._sync: Future[None] | None = None
        self.done_ids: set[str] = set()
        """Ids that already have a row (filled by `open`)."""

    def open(self, *, resume: bool) -> set[str]:
        """Open for appending; returns the ids already present. Without `resume` the file must be empty."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = self.path.read_bytes() if self.path.exists() else b""
        if data.strip() and not resume:
            raise ResultsFileError(
                f"{self.path} already has results; continue it with --resume, or choose another output file"
            )
        try:
            valid, rows = _valid_prefix(data)
        except ResultsFileError as exc:
            raise ResultsFileError(f"{self.path}: {exc}; repair or move the file") from None
        handle = open(self.path, "ab")  # noqa: SIM115 - kept open across rows, closed in close()
        if handle.tell() > valid:
            handle.truncate(valid)  # a row torn by a kill: that task runs again
            handle.seek(valid)
        self._handle = handle
        self.done_ids = {str(r.get("id")) for r in rows}
        return set(self.done_ids)

    def append(self, row: dict[str, Any]) -> None:
        if self._handle is None:
            raise RuntimeError("ResultsFile.open() was not called")
        line = json.dumps(row, ensure_ascii=False) + "\n"
        self._handle.write(line.encode("utf-8"))
        self._handle.flush()
        self._raise_sync_error()
        now = time.monotonic()
        if now - self._synced >= self.SYNC_INTERVAL_S and (self._sync is None or self._sync.done()):
            if self._syncer is None:
                self._syncer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qwq-results-sync")
            self._sync = self._syncer.submit(os.fsync, self._handle.fileno())
            self._synced = now
        self.done_ids.add(str(row.get("id")))

    def close(self) -> None:
        """Sync the file (after any sync still under way) and close it."""
        if self._syncer is not None:
            self._syncer.shutdown(wait=True)
            self._syncer = None
        if self._handle is not None:
            handle, self._handle = self._handle, None
            try:
                self._raise_sync_error()
                os.fsync(handle.fileno())
            finally:
                handle.close()

    def _raise_sync_error(self) -> None:
        """A background sync that failed (a full or failing disk) fails the next call, as a sync of its own would."""
        sync = self._sync
        if sync is not None and sync.done():
            self._sync = None
            error = sync.exception()
            if error is not None:
                raise error

    def __enter__(self) -> ResultsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
