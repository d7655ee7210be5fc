"""HTML reports built from real transcripts (runs of the real loop with scripted model outputs and real tools).

Structure and escaping are checked on the HTML text with the standard library's HTML parser; how Chromium
renders the same pages is tests/e2e/test_report_browser.py.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from agent import Agent
from agent.models import ScriptedModel, completion_text, tool_call_text
from agent.reports import ReportError, render_results_report, source_kind, write_report
from agent.reports.views import KEEP_CHARS, fold, histogram, latest_rows
from agent.transcript import read_transcript


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def shout(text: str) -> str:
    """Upper-case a text."""
    if not text:
        raise ValueError("nothing to shout")
    return text.upper()


def run_agent(
    tmp_path: Path, outputs: list[str], task: str = "Add 2 and 3, then shout it.", **options: Any
) -> Path:
    agent = Agent(ScriptedModel(outputs), [add, shout], transcript_dir=tmp_path / "runs", **options)
    result = agent.run_sync(task)
    assert result.transcript_path is not None
    return result.transcript_path


OUTPUTS = [
    completion_text(
        "First the sum, and I try an empty shout.",
        tool_call_text("add", {"a": 2, "b": 3}),
        tool_call_text("shout", {"text": ""}),
    ),
    completion_text("Now a real shout.", tool_call_text("shout", {"text": "five"})),
    completion_text("Done.", content="2 + 3 = 5, shouted: FIVE"),
]


class Page(HTMLParser):
    """Every element and text node of a page, for structural checks."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.texts: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    def tags(self) -> set[str]:
        return {tag for tag, _ in self.elements}

    def with_class(self, name: str, tag: str | None = None) -> list[dict[str, str]]:
        return [a for t, a in self.elements if name in a.get("class", "").split() and tag in (None, t)]

    @property
    def text(self) -> str:
        return "".join(self.texts)


# the only elements and attribute values the report's templates produce; anything else came from a transcript
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "main", "section", "header", "nav", "article", "aside",
    "div", "span", "a", "h1", "h2", "h3", "pre", "code", "details", "summary", "dl", "dt", "dd", "table",
    "thead", "tbody", "tr", "th", "td", "b", "i", "input", "label", "svg", "g", "rect", "line", "text",
}  # fmt: skip
STYLE = re.compile(r"^(width|height): \d+(\.\d+)?%$|^background:#[0-9a-f]{6}$")


def assert_inert(html: str) -> Page:
    """Nothing in the page can run or load anything: only the templates' own elements and attributes."""
    page = Page(html)
    assert page.tags() <= ALLOWED_TAGS, page.tags() - ALLOWED_TAGS
    for tag, attributes in page.elements:
        for name, value in attributes.items():
            assert not name.startswith("on"), (tag, name)
            if name == "href":
                assert re.fullmatch(r"#[A-Za-z0-9_-]+", value), value
            if name == "style":
                assert STYLE.match(value), value
            if name == "id":
                assert re.fullmatch(r"[A-Za-z0-9_-]+", value), value
    metas = [a for tag, a in page.elements if tag == "meta" and "http-equiv" in a]
    assert [m["http-equiv"] for m in metas] == ["Content-Security-Policy"]
    assert "default-src 'none'" in metas[0]["content"]
    assert "script-src" not in metas[0]["content"]  # falls back to 'none'
    return page


def test_transcripts_keep_per_step_usage_duration_and_tool_durations(tmp_path: Path) -> None:
    record = read_transcript(run_agent(tmp_path, OUTPUTS))
    first, second, third = record.recorded_steps
    assert [s.step for s in record.recorded_steps] == [1, 2, 3]
    assert set(first.tool_durations) == {"call_1_0", "call_1_1"}
    assert set(second.tool_durations) == {"call_2_0"}
    assert third.tool_durations == {}
    assert all(0 <= d < 5 for d in first.tool_durations.values())
    assert all(s.duration_s is not None and s.duration_s >= 0 for s in record.recorded_steps)
    assert first.usage == {
        "prompt_tokens": first.usage["prompt_tokens"],
        "completion_tokens": len(OUTPUTS[0]),
    }
    assert (
        sum(s.usage["completion_tokens"] for s in record.recorded_steps) == record.usage["completion_tokens"]
    )
    assert record.created is not None
    assert record.other_records == []


def test_run_report_shows_task_steps_calls_errors_timing_and_tokens(tmp_path: Path) -> None:
    transcript = run_agent(tmp_path, OUTPUTS)
    out = write_report(transcript, tmp_path / "run.html")
    html = out.read_text(encoding="utf-8")
    page = assert_inert(html)
    text = page.text
    assert "Add 2 and 3, then shout it." in text
    assert "2 + 3 = 5, shouted: FIVE" in text
    steps = page.with_class("step")
    assert [s["id"] for s in steps] == ["run-step-1", "run-step-2", "run-step-3"]
    assert "has-error" in steps[0]["class"]
    assert "has-error" not in steps[1]["class"]
    assert "is-final" in steps[2]["class"]
    calls = page.with_class("call")
    assert len(calls) == 3
    assert ["error" in c["class"] for c in calls] == [False, True, False]
    assert "ValueError: nothing to shout" in text
    assert "FIVE" in text
    # reasoning is there, folded away
    assert re.search(
        r'<details class="reasoning"><summary>Reasoning · 9 words <span class="preview">First the sum, and I try '
        r"an empty shout.</span></summary>",
        html,
    )
    # one token bar per step, widths scaled to the largest step
    bars = re.findall(r'<span class="tokbar"[^>]*><span class="p" style="width: ([\d.]+)%"></span>'
                      r'<span class="c" style="width: ([\d.]+)%"></span>', html)  # fmt: skip
    assert len(bars) == 3
    assert max(float(p) + float(c) for p, c in bars) == pytest.approx(100, abs=0.02)
    # timing: per step and per call
    assert len(page.with_class("time")) == 3 + 3


def test_a_long_observation_is_folded_and_a_huge_one_cut_in_the_middle(tmp_path: Path) -> None:
    lines = "\n".join(f"line {i}" for i in range(100))
    assert fold("short").rest == ""
    folded = fold(lines)
    assert folded.head.count("\n") == 14
    assert folded.rest.startswith("line 14")
    assert folded.head + folded.rest == lines
    single = fold("x" * 10_000)
    assert len(single.head) == 1600
    assert len(single.rest) == 8400
    huge = fold("y" * (KEEP_CHARS + 50_000))
    assert huge.omitted == 50_000
    assert "characters not shown here" in huge.rest
    assert len(huge.head) + len(huge.rest) < KEEP_CHARS + 200


def test_text_json_cannot_encode_is_replaced_not_refused() -> None:
    folded = fold("a\ud800b\x00c")
    assert folded.head == "a\ufffdb\ufffdc"


def hostile_transcript(path: Path) -> Path:
    """A transcript whose every field a model, a tool or a web page could fill is an attack on the page."""
    payloads = [
        "<script>document.title='pwned';document.body.insertAdjacentHTML('beforeend','<div id=pwned></div>')</script>",
        "<img src=x onerror=\"document.title='pwned'\"><svg onload=alert(1)>",
        '[click me](javascript:alert(1)) <a href="javascript:alert(1)">link</a>',
        "</textarea><textarea>",
        "</pre></details></article></main><script>alert(1)</script>",
        '<!-- ]]> <style>body{display:none}</style> <base href="http://evil.invalid/">',
        '<meta http-equiv="refresh" content="0;url=http://evil.invalid/">',
        '" onmouseover="alert(1)" x="',
        "' style='background:url(http://evil.invalid/)'",
        "lone \ud800 surrogate and NUL \x00 here",
    ]
    hostile = "\n".join(payloads)
    nested: Any = "bottom"
    for _ in range(400):
        nested = {"<b>": [nested]}
    # written by hand: JSON escapes a lone surrogate (\\ud800), which TranscriptWriter cannot encode as UTF-8
    records: list[dict[str, Any]] = []
    records.append(
        {
            "type": "run_start",
            "version": 1,
            "run_id": "<script>alert('id')</script>",
            "created": 1.0e9,
            "task": hostile,
            "config": {"model": "<img src=x onerror=alert(1)>", "tools": ["<b>tool</b>"], "x": hostile},
            "messages": [{"role": "system", "content": hostile}, {"role": "user", "content": hostile}],
        }
    )
    call = {"name": "<script>x</script>", "arguments": {"code": hostile, "<k onclick=x>": nested}, "id": "c1"}
    records.append(
        {
            "type": "step",
            "step": 1,
            "model_output": hostile,
            "messages": [
                {
                    "role": "assistant",
                    "content": hostile + "x" * 300_000,
                    "thinking": hostile,
                    "tool_calls": [call],
                },
                {
                    "role": "tool",
                    "content": hostile,
                    "name": "<script>x</script>",
                    "tool_call_id": "c1",
                    "is_error": True,
                },
                {"role": "tool", "content": hostile, "is_error": True},
            ],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5},
            "duration_s": 0.5,
            "tool_durations": {"c1": 0.25},
        }
    )
    records.append(
        {"type": "condensation", "<i onclick=x>": hostile, "before": {"tokens": 900}, "after": 300}
    )
    records.append({"type": "<script>alert(1)</script>", "note": hostile})
    records.append(
        {"type": "run_end", "time": 1.0e9 + 3, "stop_reason": "<b>stuck</b>", "answer": hostile, "steps": 1,
         "usage": {}}
    )  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="ascii")
    return path


def test_a_hostile_transcript_is_escaped_everywhere(tmp_path: Path) -> None:
    html = write_report(hostile_transcript(tmp_path / "hostile.jsonl"), tmp_path / "h.html").read_text(
        "utf-8"
    )
    page = assert_inert(html)
    assert "<script" not in html.lower().replace("&lt;script", "")
    assert "<textarea" not in html.lower()
    assert 'id="pwned"' not in html
    # the payloads are there, as text
    assert "<script>document.title='pwned'" in page.text
    assert "</textarea><textarea>" in page.text
    assert "javascript:alert(1)" in page.text
    assert "lone \ufffd surrogate and NUL \ufffd here" in page.text
    # the record the reader does not know is shown, generically, after step 1
    assert "Condensation" in page.text
    assert "<i onclick=x>" in page.text
    assert html.index('id="run-step-1"') < html.index("Condensation")
    assert "<script>alert(1)</script>" in page.text  # the unknown record's type, as its title


def test_the_report_says_what_is_wrong_with_a_file_that_is_no_source(tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "text.txt").write_text("hello\n")
    (tmp_path / "other.jsonl").write_text('{"a": 1}\n')
    (tmp_path / "deep.jsonl").write_text("[" * 100_000 + "\n")
    for name, message in [
        ("empty.jsonl", "is empty"),
        ("text.txt", "does not start with a JSON line"),
        ("other.jsonl", "neither a run transcript"),
        ("deep.jsonl", "does not start with a JSON line"),
        ("missing.jsonl", "no file at"),
    ]:
        with pytest.raises(ReportError, match=message):
            write_report(tmp_path / name, tmp_path / "out.html")
    assert not (tmp_path / "out.html").exists()


def eval_row(task: int, passed: bool, transcript: Path | None, **extra: Any) -> dict[str, Any]:
    return {
        "task_id": f"HumanEval/{task}",
        "kind": "agent",
        "variant": None,
        "passed": passed,
        "error": None if passed else "AssertionError: wrong <answer>",
        "steps": 3,
        "tokens": 1000 + task,
        "prompt_tokens": 800,
        "completion_tokens": 200 + task,
        "stop_reason": "final_answer",
        "duration_s": 1.5,
        "transcript": str(transcript) if transcript else None,
        **extra,
    }


def test_eval_rows_give_pass_at_1_filters_histograms_and_run_sections(tmp_path: Path) -> None:
    transcript = run_agent(tmp_path, OUTPUTS)
    rows = [
        eval_row(0, True, transcript),
        eval_row(1, False, transcript),
        eval_row(2, False, None, stop_reason="stuck", steps=9),
        eval_row(1, True, transcript),  # a resumed file: the later row for HumanEval/1 wins
        {
            "task_id": "HumanEval/3",
            "kind": "agent",
            "passed": False,
            "harness_error": True,
            "error": "engine gone",
        },
    ]
    results = tmp_path / "results.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"task_id": "HumanEval/4", "ki')
    assert source_kind(results) == "results"
    html = write_report(results, tmp_path / "eval.html").read_text("utf-8")
    page = assert_inert(html)
    assert len(latest_rows(rows)) == 4
    tasks = page.with_class("task", "tr")
    assert [t["id"] for t in tasks] == ["task-0", "task-1", "task-2", "task-3"]
    assert [t["class"] for t in tasks] == [
        "task is-passed",
        "task is-passed",
        "task is-failed is-stuck",
        "task is-failed",
    ]
    assert re.search(r'id="pass-rate">50.0%<', html)
    assert re.search(r'id="passed-count">2</b> of <b id="judged-count">4</b>', html)
    assert "All · 4" in page.text
    assert "Failed · 2" in page.text
    assert "Stuck · 1" in page.text
    assert "Passed · 2" in page.text
    # links to the runs' sections, which hold the whole run
    assert re.findall(r'href="#(run-\d+)"', html) == ["run-0", "run-1"]
    assert 'id="run-0"' in html
    assert 'id="r0-step-3"' in html
    # HumanEval/2's error only: HumanEval/1 passed on its later row
    assert page.text.count("AssertionError: wrong <answer>") == 1
    assert html.count('<svg class="hist"') == 2


def test_batch_rows_are_read_by_their_keys(tmp_path: Path) -> None:
    transcript = run_agent(tmp_path, OUTPUTS)
    rows = [
        {
            "id": f"task-{i}",
            "answer": "5",
            "stop_reason": "final_answer" if i % 4 else "max_steps",
            "steps": 3 + i,
            "tool_calls": 2,
            "usage": {"prompt_tokens": 100 * i, "completion_tokens": 10 * i},
            "wall_s": 2.0 + i,
            "transcript": str(transcript.relative_to(tmp_path)),  # relative to the results file
            "error": None,
        }
        for i in range(8)
    ]
    results = tmp_path / "batch.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    html = render_results_report(rows, results_path=results)
    page = assert_inert(html)
    assert "batch report" in page.text
    assert "no pass/fail verdicts" in page.text
    assert len(page.with_class("task", "tr")) == 8
    assert "Stuck · 2" in page.text  # max_steps twice: ended without an answer
    assert "6 / 8" in page.text  # answered
    assert len(re.findall(r'href="#run-\d+"', html)) == 8
    assert ">770<" in html  # tokens of task-7 from its usage
    # with verdicts (tasks that carry checks), pass@1 appears
    judged = [{**r, "passed": i % 2 == 0} for i, r in enumerate(rows)]
    assert re.search(r'id="pass-rate">50.0%<', render_results_report(judged, results_path=results))


def test_rows_whose_transcript_is_missing_or_broken_still_get_a_table_row(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"type": "run_start", "messages": [{"role": "wizard"}]}\n')
    rows = [eval_row(0, True, tmp_path / "gone.jsonl"), eval_row(1, True, broken)]
    page = assert_inert(render_results_report(rows))
    assert len(page.with_class("task", "tr")) == 2
    notes = [
        a.get("title", "") for tag, a in page.elements if tag == "span" and "muted" in a.get("class", "")
    ]
    assert any("transcript not found" in n for n in notes)
    assert any("not a valid" in n for n in notes)


def test_histogram_bins_are_round_and_count_everything() -> None:
    small = histogram("Steps", "steps", [(float(v), v % 2 == 0) for v in [1, 2, 2, 3, 3, 3]], integer=True)
    assert [b.label for b in small.bars] == ["1", "2", "3"]
    assert [(b.count, b.passed) for b in small.bars] == [(1, 0), (2, 2), (3, 0)]
    wide = histogram("Tokens", "tokens", [(float(v), True) for v in range(0, 100_000, 7)], integer=True)
    assert len(wide.bars) <= 21
    assert sum(b.count for b in wide.bars) == len(range(0, 100_000, 7))
    assert max(b.passed_height + b.failed_height for b in wide.bars) == pytest.approx(wide.height - 20)


def test_harness_rows_count_checks_that_came_out_as_they_must() -> None:
    def check(task: int, kind: str, variant: str | None, passed: bool) -> dict[str, Any]:
        expected = kind == "canonical"
        return {
            "task_id": f"HumanEval/{task}",
            "kind": kind,
            "variant": variant,
            "passed": passed,
            "expected_pass": expected,
            "ok": passed == expected,
            "error": None,
            "duration_s": 0.4,
        }

    rows = [
        check(0, "canonical", None, True),
        check(0, "broken", "raise", False),
        check(0, "broken", "exit", True),  # a broken solution that passed: the harness is wrong
        check(1, "canonical", None, True),
        check(1, "broken", "raise", False),
    ]
    html = render_results_report(rows)
    page = assert_inert(html)
    assert '<div class="big-number">4 / 5</div>' in html
    assert [t["class"] for t in page.with_class("task", "tr")] == [
        "task is-passed",
        "task is-passed",
        "task is-failed",
        "task is-passed",
        "task is-passed",
    ]
    assert "failed as it must" in page.text
    assert "passed (wrong)" in page.text
    assert "Failed · 1" in page.text
    assert "broken:raise failed" in page.text
