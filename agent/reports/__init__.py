"""HTML reports: one self-contained page for a run (from its transcript) or for an eval or batch (its rows).

`write_report(source, out_path)` is the one entry point the CLI (`qwq-agent report`, `eval --report`, `batch
--report`) uses:
- `source` a transcript file (first record `run_start`): the run report — the task, each step with its
  reasoning (collapsed), text, calls with arguments and observations (long ones folded), errors highlighted,
  time per step and per call, a token bar per step, condensations and resumes where they happened;
- `source` a results file, or the rows themselves: the eval or batch report — pass@1, one table row per task
  (`qwq-agent eval` rows have `task_id` and `kind`; `qwq-agent batch` rows have `id`; both are accepted, told
  apart by their keys), filters for failed and stuck runs, histograms of steps and tokens, and each run's
  section, read from the transcript its row names.

The pages need no network and run no script: a Content-Security-Policy forbids scripts outright, every text
from a transcript or a row goes through Jinja's autoescaping, and ids and CSS widths are computed from safe
characters and numbers only (`agent.reports.views`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prompts.errors import ConfigurationError

__all__ = ["ReportError", "render_results_report", "render_run_report", "source_kind", "write_report"]


class ReportError(ConfigurationError):
    """The source is not something a report can be made of (the message says what it is and what is expected)."""


_ENVIRONMENT: Any = None


def _environment() -> Any:
    global _ENVIRONMENT
    if _ENVIRONMENT is None:
        import jinja2

        _ENVIRONMENT = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
    return _ENVIRONMENT


def _render(template: str, **context: Any) -> str:
    html: str = _environment().get_template(template).render(**context)
    return html


def source_kind(path: str | os.PathLike[str]) -> str:
    """`transcript` or `results`, from the first record of the file; raises `ReportError` for anything else."""
    file_path = Path(path)
    try:
        with file_path.open("rb") as handle:
            for raw in handle:
                if raw.strip():
                    break
            else:
                raise ReportError(
                    f"{file_path} is empty: give a run transcript or an eval/batch results file"
                )
    except FileNotFoundError:
        raise ReportError(f"no file at {file_path}") from None
    except IsADirectoryError:
        raise ReportError(
            f"{file_path} is a directory: give one transcript (.jsonl) or a results file"
        ) from None
    try:
        first = json.loads(raw)
    except (ValueError, RecursionError):
        raise ReportError(
            f"{file_path} does not start with a JSON line: it is not a transcript or results file"
        ) from None
    if isinstance(first, dict) and first.get("type") == "run_start":
        return "transcript"
    from agent.reports.views import row_shape

    if isinstance(first, dict) and row_shape(first):
        return "results"
    raise ReportError(
        f"{file_path} is neither a run transcript (first line a run_start record) nor eval/batch results "
        "(rows with task_id and kind, or with id)"
    )


def _read_transcript(path: Path) -> Any:
    from agent.transcript import TranscriptError, read_transcript

    try:
        return read_transcript(path)
    except TranscriptError as exc:
        raise ReportError(str(exc)) from None
    except RecursionError:
        raise ReportError(f"{path} holds JSON nested too deeply to read") from None
    except ValueError as exc:  # a record that is JSON but not a message (pydantic's ValidationError)
        raise ReportError(
            f"{path} holds a record that is not a valid message: {str(exc).splitlines()[0]}"
        ) from None


def render_run_report(transcript: str | os.PathLike[str]) -> str:
    """The HTML page of one run, from its transcript file."""
    from agent.reports.views import run_view

    record = _read_transcript(Path(transcript))
    return _render("run.html.j2", run=run_view(record))


def _read_rows(path: Path) -> list[dict[str, Any]]:
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            continue  # a line cut off by a kill mid-write
        if isinstance(row, dict):
            rows.append(row)
    return rows


def render_results_report(
    rows: Iterable[dict[str, Any]],
    *,
    results_path: str | os.PathLike[str] | None = None,
    title: str | None = None,
) -> str:
    """The HTML page of eval or batch rows; each run whose transcript can be read gets its own section.

    Transcript paths in rows are taken as written (relative to the working directory), else relative to
    `results_path`'s folder. Only the latest row per task (per check, for eval) counts, as in `eval --resume`.
    """
    from agent.reports.views import latest_rows, resolve_transcript, results_view, run_view

    latest = latest_rows(rows)
    if not latest:
        raise ReportError("no eval or batch rows to report on (rows need task_id and kind, or id)")
    base = Path(results_path) if results_path is not None else None
    runs = {}
    notes = {}
    for index, row in enumerate(latest):
        named = row.get("transcript") or row.get("transcript_path")
        if not isinstance(named, str) or not named:
            notes[index] = "no transcript recorded for this row"
            continue
        found = resolve_transcript(named, base)
        if found is None:
            notes[index] = f"transcript not found: {named}"
            continue
        try:
            runs[index] = run_view(_read_transcript(found), prefix=f"r{index}")
        except ReportError as exc:
            notes[index] = str(exc)
    source = str(results_path) if results_path is not None else f"{len(latest)} rows"
    if title is None:
        shapes = {"task_id" in r for r in latest}
        title = "Evaluation" if shapes == {True} else "Batch"
        if base is not None:
            title += f" · {base.name}"
    view = results_view(latest, runs, notes, title=title, source=source)
    return _render("results.html.j2", view=view)


def write_report(
    source: str | os.PathLike[str] | Iterable[dict[str, Any]],
    out_path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Write the report of `source` (a transcript, a results file, or result rows) to `out_path`; return it.

    Raises `ReportError` when the source is not a transcript or results (the message says which is which).
    """
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if source_kind(path) == "transcript":
            html = render_run_report(path)
        else:
            html = render_results_report(_read_rows(path), results_path=path, title=title)
    else:
        html = render_results_report(list(source), title=title)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    # `replace` only matters for text that slipped past views.clean: a report is never refused for one char
    out.write_bytes(html.encode("utf-8", errors="replace"))
    return out
