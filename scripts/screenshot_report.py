"""Regenerate docs/report.png, the run report the README shows.

A real run of the loop (scripted model outputs, real tools over a folder of files made here) writes its
transcript; `qwq-agent report` makes the page; headless Chromium takes the screenshot, which is checked not to
be blank. Needs Chromium (`apt-get install chromium`, or $QWQ_AGENT_CHROMIUM).

Run: python scripts/screenshot_report.py [--out docs/report.png] [--html report.html]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent import Agent  # noqa: E402
from agent.models import ScriptedModel, completion_text, tool_call_text  # noqa: E402
from agent.reports import write_report  # noqa: E402
from agent.reports.browser import png_stats, screenshot  # noqa: E402

FILES = {
    "notes/todo.md": "# To do\n\n- fix the parser\n- write the report\n- measure the sandbox\n",
    "notes/ideas.md": "\n".join(f"- idea {i}: try a different prompt for task {i}" for i in range(1, 15))
    + "\n",
    "src/loop.py": "\n".join(f"def step_{i}(state):\n    return state + {i}\n" for i in range(40)),
    "src/tools.py": "\n".join(f"TOOL_{i} = {i}" for i in range(25)) + "\n",
}


def make_tools(root: Path) -> list[object]:
    def list_files(folder: str) -> str:
        """List the files in a folder of the project, with their sizes in bytes."""
        path = root / folder
        if not path.is_dir():
            raise FileNotFoundError(f"no folder {folder!r}; folders: notes, src")
        return "\n".join(f"{p.name}\t{p.stat().st_size} bytes" for p in sorted(path.iterdir()))

    def count_lines(path: str) -> int:
        """Count the lines of a file of the project."""
        return len((root / path).read_text().splitlines())

    return [list_files, count_lines]


OUTPUTS = [
    completion_text(
        "The user wants the largest file of the project and its line count. I do not know the layout yet, "
        "so I start by listing the files. The project probably has a `source` folder, and notes somewhere.",
        tool_call_text("list_files", {"folder": "source"}),
        tool_call_text("list_files", {"folder": "notes"}),
    ),
    completion_text(
        "There is no `source` folder: the error says the folders are `notes` and `src`. The notes are small "
        "(under a kilobyte). I list `src` as well before I compare sizes.",
        tool_call_text("list_files", {"folder": "src"}),
    ),
    completion_text(
        "`src/loop.py` is the largest file by far. Its size does not give the line count, so I count the "
        "lines, and those of the second largest file too, to be sure the answer is not a tie.",
        tool_call_text("count_lines", {"path": "src/loop.py"}),
        tool_call_text("count_lines", {"path": "notes/ideas.md"}),
    ),
    completion_text(
        "`src/loop.py` has 119 lines; `notes/ideas.md` only 14. The answer is clear.",
        content="The largest file is `src/loop.py` (1,699 bytes); it has 119 lines. "
        "The next largest, `notes/ideas.md`, has 14.",
    ),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "report.png")
    parser.add_argument("--html", type=Path, help="also keep the report page here")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qwq-report-demo-") as folder:
        work = Path(folder)
        for name, text in FILES.items():
            (work / "project" / name).parent.mkdir(parents=True, exist_ok=True)
            (work / "project" / name).write_text(text)
        previous = Path.cwd()
        os.chdir(work)  # so the page names the transcript runs/..., not a temporary path
        try:
            agent = Agent(ScriptedModel(OUTPUTS), make_tools(work / "project"), transcript_dir="runs")
            result = agent.run_sync(
                "Which file of the project is the largest, and how many lines does it have?"
            )
            assert result.stop_reason.value == "final_answer", result.stop_reason
            assert result.transcript_path is not None
            page = write_report(result.transcript_path, work / "report.html")
        finally:
            os.chdir(previous)
        shot = screenshot(page, args.out, width=args.width, height=args.height)
        stats = png_stats(shot)
        if stats.colors < 40 or stats.ink < 0.2:
            raise SystemExit(f"the screenshot looks blank ({stats}); not keeping it")
        if args.html is not None:
            shutil.copyfile(page, args.html)
    print(f"{args.out}: {stats.width}x{stats.height}, {stats.colors} colours, {stats.ink:.0%} ink")


if __name__ == "__main__":
    main()
