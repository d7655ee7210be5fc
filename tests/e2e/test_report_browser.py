"""Reports opened in a real headless Chromium: the DOM it built, screenshots, and hostile transcripts.

The runs are real: the loop with scripted model outputs and real tools writes the transcripts, and the eval
page is made of 164 such runs with rows shaped as `qwq-agent eval` writes them. Chromium is Debian's package
(`.ci/install_chromium.sh`); without it these tests are skipped, saying so.
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
from agent.reports import write_report
from agent.reports.browser import dump_dom, find_chromium, png_stats, screenshot

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        find_chromium() is None,
        reason="no Chromium: apt-get install chromium (.ci/install_chromium.sh), or set QWQ_AGENT_CHROMIUM",
    ),
]

NOTES = {
    "alpha": "The first letter of the Greek alphabet.",
    "omega": "The last letter.\n" + "\n".join(f"detail {i}" for i in range(40)),
}


def read_note(name: str) -> str:
    """Read a note by name."""
    if name not in NOTES:
        raise KeyError(f"no note {name!r}; notes: {', '.join(NOTES)}")
    return NOTES[name]


def count_words(text: str) -> int:
    """Count the words of a text."""
    return len(text.split())


class Dom(HTMLParser):
    """The elements and text of the DOM Chromium serialised."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.texts: list[str] = []
        self.title = ""
        self._in: list[str] = []
        self._tag = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        self._tag = tag

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self._tag == "title":
            self.title += data

    def handle_endtag(self, tag: str) -> None:
        self._tag = ""

    def find(self, tag: str | None = None, cls: str | None = None) -> list[dict[str, str]]:
        return [
            a
            for t, a in self.elements
            if (tag is None or t == tag) and (cls is None or cls in a.get("class", "").split())
        ]

    @property
    def text(self) -> str:
        return "".join(self.texts)


def twenty_step_run(directory: Path) -> tuple[Path, list[list[str]]]:
    """A real 20-step run; returns its transcript and the tool names called at each step."""
    outputs = []
    called: list[list[str]] = []
    for step in range(1, 20):
        thinking = f"Step {step}. " + "I weigh what the notes say and what is still missing. " * (
            3 + step % 4
        )
        if step % 5 == 0:
            calls = [tool_call_text("read_note", {"name": "gamma"})]  # fails: no such note
            names = ["read_note"]
        elif step % 3 == 0:
            calls = [
                tool_call_text("read_note", {"name": "omega"}),
                tool_call_text("count_words", {"text": f"note number {step}"}),
            ]
            names = ["read_note", "count_words"]
        else:
            calls = [tool_call_text("count_words", {"text": " ".join(["word"] * step)})]
            names = ["count_words"]
        outputs.append(completion_text(thinking, *calls))
        called.append(names)
    outputs.append(completion_text("Everything is read.", content="Alpha comes first, omega last."))
    called.append([])
    agent = Agent(ScriptedModel(outputs), [read_note, count_words], max_steps=20, transcript_dir=directory)
    result = agent.run_sync("Read the notes on alpha and omega and say which letter comes first.")
    assert result.steps == 20
    assert result.stop_reason.value == "final_answer"
    assert result.transcript_path is not None
    return result.transcript_path, called


def test_a_20_step_run_renders_every_step_with_its_tools_and_is_not_blank(tmp_path: Path) -> None:
    transcript, called = twenty_step_run(tmp_path / "runs")
    page = write_report(transcript, tmp_path / "run.html")
    dom = Dom(dump_dom(page))
    assert dom.title == f"Run {transcript.stem} · qwq-agent report"
    assert "Read the notes on alpha and omega and say which letter comes first." in dom.text
    steps = dom.find("article", "step")
    assert [s["id"] for s in steps] == [f"run-step-{i}" for i in range(1, 21)]
    assert [t for names in called for t in names] == [
        t for t in re.findall(r'<span class="call-name">([^<]*)</span>', page.read_text())
    ]
    assert "read_note" in dom.text
    assert "count_words" in dom.text
    failing = [i for i, s in enumerate(steps, start=1) if "has-error" in s["class"]]
    assert failing == [5, 10, 15]
    assert "is-final" in steps[-1]["class"]
    assert "Alpha comes first, omega last." in dom.text
    assert len(dom.find("span", "tokbar")) == 20
    assert len(dom.find("details", "reasoning")) == 20
    assert not any("open" in d for d in dom.find("details", "reasoning"))  # reasoning starts collapsed
    shot = screenshot(page, tmp_path / "run.png", width=1280, height=2000)
    stats = png_stats(shot)
    assert (stats.width, stats.height) == (1280, 2000)
    assert stats.colors > 40, stats
    assert stats.ink > 0.2, stats


def eval_rows(directory: Path, count: int = 164) -> list[dict[str, Any]]:
    """`count` real runs and the rows `qwq-agent eval` would write for them (passed: every 4th fails)."""
    rows = []
    for i in range(count):
        if i % 10 == 7:  # the same call over and over: the loop stops it as stuck
            outputs = [completion_text("again", tool_call_text("count_words", {"text": "same"}))] * 4
        else:
            outputs = [
                completion_text(
                    f"Problem {i}, step {s}.", tool_call_text("count_words", {"text": "x " * (s + i)})
                )
                for s in range(i % 5)
            ] + [completion_text("Solved.", content=f"solution {i}")]
        agent = Agent(ScriptedModel(outputs), [count_words], transcript_dir=directory)
        result = agent.run_sync(f"Solve problem {i}.")
        passed = result.stop_reason.value == "final_answer" and i % 4 != 0
        rows.append(
            {
                "task_id": f"HumanEval/{i}",
                "kind": "agent",
                "variant": None,
                "passed": passed,
                "error": None if passed else f"AssertionError in check {i}",
                "steps": result.steps,
                "tokens": result.usage.prompt_tokens + result.usage.completion_tokens,
                "prompt_tokens": result.usage.prompt_tokens,
                "completion_tokens": result.usage.completion_tokens,
                "tool_calls": result.tool_calls,
                "stop_reason": result.stop_reason.value,
                "duration_s": 2.0 + i % 7,
                "transcript": str(result.transcript_path),
            }
        )
    return rows


def test_a_164_row_eval_report_shows_every_task_the_pass_counts_and_links_into_runs(tmp_path: Path) -> None:
    rows = eval_rows(tmp_path / "runs")
    results = tmp_path / "he.jsonl"
    results.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = write_report(results, tmp_path / "eval.html")
    dom = Dom(dump_dom(page))
    passed = sum(r["passed"] for r in rows)
    stuck = sum(r["stop_reason"] != "final_answer" for r in rows)
    assert stuck == 16  # tasks 7, 17, ..., 157
    table = dom.find("tr", "task")
    assert len(table) == 164
    assert sum("is-passed" in r["class"] for r in table) == passed
    assert sum("is-stuck" in r["class"] for r in table) == stuck
    assert f"{100 * passed / 164:.1f}%" in dom.text
    match = re.search(r'id="passed-count">(\d+)</b> of <b id="judged-count">(\d+)</b>', page.read_text())
    assert match is not None
    assert (int(match[1]), int(match[2])) == (passed, 164)
    assert f"Failed · {164 - passed}" in dom.text
    assert f"Stuck · {stuck}" in dom.text
    for i in (0, 57, 163):
        assert f"HumanEval/{i}" in dom.text
        assert f"Solve problem {i}." in dom.text
    assert len(dom.find("details", "run-section")) == 164
    assert len(dom.find("svg", "hist")) == 2
    # a link to a run opens its (collapsed) section: Chromium expands a <details> holding the target
    opened = dump_dom(f"{page.resolve().as_uri()}#run-57")
    sections = re.findall(r'<details class="run-section"( open="")?>.*?id="(run-\d+)"', opened, re.S)
    assert [run for is_open, run in sections if is_open] == ["run-57"]
    shot = screenshot(page, tmp_path / "eval.png", width=1280, height=1600)
    stats = png_stats(shot)
    assert stats.colors > 40, stats
    assert stats.ink > 0.15, stats


def test_a_hostile_transcript_renders_inert(tmp_path: Path) -> None:
    attack = (
        "<script>document.title='pwned';document.body.insertAdjacentHTML('beforeend','<div id=pwned></div>')"
        "</script><img src=x onerror=\"document.title='pwned'\"><svg onload=\"document.title='pwned'\"></svg>"
        "</textarea><textarea><a href=\"javascript:document.title='pwned'\">x</a>"
        "</pre></details></article></main><iframe src=\"javascript:parent.document.title='pwned'\"></iframe>"
        '<style>body{display:none}</style><base href="http://evil.invalid/">'
    )
    huge = "A" * 2_000_000  # one 2 MB line
    outputs = [
        completion_text(attack, tool_call_text("read_note", {"name": attack}), content=attack),
        completion_text(attack, tool_call_text("count_words", {"text": huge})),
        completion_text(attack, content=attack),
    ]
    agent = Agent(ScriptedModel(outputs), [read_note, count_words], transcript_dir=tmp_path / "runs")
    result = agent.run_sync(attack)
    assert result.transcript_path is not None
    page = write_report(result.transcript_path, tmp_path / "hostile.html")
    dom = Dom(dump_dom(page))
    assert dom.title == f"Run {result.transcript_path.stem} · qwq-agent report"  # no script changed it
    assert not [a for _, a in dom.elements if a.get("id") == "pwned"]
    tags = {tag for tag, _ in dom.elements}
    assert not tags & {"script", "img", "iframe", "textarea", "base", "object", "embed"}, tags
    assert all(a["href"].startswith("#") for a in dom.find("a"))
    assert not [a for _, a in dom.elements for name in a if name.startswith("on")]
    assert dom.text.count("<script>document.title='pwned'") >= 5  # as text: task, reasoning, text, answer...
    assert "A" * 1000 in dom.text
    # nothing hid the page: it is drawn like any other
    stats = png_stats(screenshot(page, tmp_path / "hostile.png", width=1280, height=1200))
    assert stats.ink > 0.1, stats
    assert stats.colors > 20, stats
