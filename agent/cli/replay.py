"""`qwq-agent replay FILE`: show a recorded run as the live view showed it; `--rerun` checks it still holds.

Showing needs no model and no tools: the recorded model outputs go through the same parser the live run used,
and the recorded observations are shown as tool results. `--rerun` runs the loop again with the recorded
model outputs (a ScriptedModel) against real tools and compares every observation with the recorded one: a
GPU run recorded once becomes an offline regression test of the tools and the loop. Exit code 0 when every
observation matches, 1 when any differs (each difference is printed), 2 when the file cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.cli.view import View
    from agent.events import Event
    from agent.transcript import TranscriptRecord

__all__ = ["add_parser", "main", "recorded_events"]


def add_parser(sub: Any, name: str, help_text: str) -> None:
    parser = sub.add_parser(name, help=help_text, description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("file", type=Path, help="a transcript written by qwq-agent run (runs/*.jsonl)")
    parser.add_argument(
        "--rerun",
        action="store_true",
        help="re-run the loop with the recorded model outputs and real tools; compare the observations",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--quiet", "-q", action="store_true", help="print only the final answer")
    output.add_argument("--json", action="store_true", help="print events as JSON lines")
    parser.add_argument("--hide-thinking", action="store_true", help="do not show the reasoning")


def recorded_events(record: TranscriptRecord) -> list[Event]:
    """The events a live view saw, rebuilt from the transcript with the recorded usage and durations
    (transcripts from before tool durations were recorded show 0 for those)."""
    from agent.events import FinalAnswer, StepEnd, ToolCallFinished, ToolCallStarted, notes_added
    from agent.messages import AssistantMessage, ToolMessage
    from agent.parsing import StreamParser
    from tools.types import ToolResult

    events: list[Event] = []
    steps = record.recorded_steps
    condensations: dict[int, list[Event]] = {}
    for after, extra in record.other_records:  # shown where they happened: before the next step
        if extra.get("type") == "condensation":
            condensations.setdefault(after, []).append(_condensed(extra))
    for number, step in enumerate(steps, start=1):
        events.extend(condensations.get(number - 1, []))
        messages = step.messages
        parser = StreamParser(prompt_opened_think=step.opens_thinking)
        events.extend(parser.feed(step.model_output))
        events.extend(parser.finish())
        assistant = next((m for m in messages if isinstance(m, AssistantMessage)), None)
        calls = list(assistant.tool_calls) if assistant else []
        observations = [m for m in messages if isinstance(m, ToolMessage)]
        events.extend(ToolCallStarted(step=number, call=c) for c in calls)
        durations = step.tool_durations
        for call, observation in zip(calls, observations, strict=False):
            result = ToolResult(content=observation.content, is_error=observation.is_error)
            duration = durations.get(call.id, 0.0)
            events.append(ToolCallFinished(step=number, call=call, result=result, duration_s=duration))
        events.extend(notes_added(number, messages))
        events.append(
            StepEnd(
                step=number,
                prompt_tokens=step.usage.get("prompt_tokens", 0),
                completion_tokens=step.usage.get("completion_tokens", 0),
                duration_s=step.duration_s or 0.0,
            )
        )
    events.extend(condensations.get(len(steps), []))
    if record.end is not None:
        events.append(
            FinalAnswer(
                answer=str(record.end.get("answer", "")),
                stop_reason=str(record.end.get("stop_reason", "")),
                steps=int(record.end.get("steps", len(steps))),
            )
        )
    return events


def _condensed(record: dict[str, Any]) -> Event:
    from agent.events import ContextCondensed

    hidden = record.get("hidden_steps")
    return ContextCondensed(
        step=int(record.get("step", 0)),
        strategy=str(record.get("strategy", "")),
        tokens_before=int(record.get("tokens_before", 0)),
        tokens_after=int(record.get("tokens_after", 0)),
        masked=len(record.get("masked") or []),
        hidden_steps=(int(hidden[0]), int(hidden[1]))
        if isinstance(hidden, list) and len(hidden) == 2
        else None,
    )


async def _rerun(record: TranscriptRecord, view: View) -> int:
    """Run the loop again on the recorded outputs; print each observation that differs from the recording."""
    from agent.cli.run import open_tools_and_sandbox
    from agent.loop import Agent
    from agent.messages import SystemMessage, ToolMessage
    from agent.models import ScriptedModel

    config = record.config
    steps = record.recorded_steps
    if not steps:
        raise _NothingToRerun(f"{record.path} records no finished step: there is nothing to re-run")
    system = next((m.content for m in record.messages[:1] if isinstance(m, SystemMessage)), "")
    async with AsyncExitStack() as stack:
        tools, _ = await open_tools_and_sandbox(list(config.get("tools", [])), stack, view)
        agent = Agent(
            ScriptedModel(record.model_outputs),
            tools,
            system_prompt=system,
            max_steps=len(steps),
            tool_choice=str(config.get("tool_choice", "auto")),
            stuck_after=max(len(steps) + 1, 2),
        )
        run = agent.iter(record.task)
        async for event in run:
            view.handle(event)
        view.close()
    result = run.result
    assert result is not None
    recorded = [[m for m in step.messages if isinstance(m, ToolMessage)] for step in steps]
    fresh: list[list[ToolMessage]] = []
    current: list[ToolMessage] | None = None
    for message in result.messages:
        if message.role == "assistant":
            current = []
            fresh.append(current)
        elif isinstance(message, ToolMessage) and current is not None:
            current.append(message)
    differences = 0
    for number, (old, new) in enumerate(zip(recorded, fresh, strict=False), start=1):
        for index in range(max(len(old), len(new))):
            before = old[index].content if index < len(old) else "(none)"
            after = new[index].content if index < len(new) else "(none)"
            if before != after:
                differences += 1
                view.note(
                    f"step {number}, observation {index + 1} differs:\n--- recorded\n{before}\n+++ now\n{after}"
                )
    if len(fresh) != len(recorded):
        differences += 1
        view.note(f"the recording has {len(recorded)} steps, the re-run made {len(fresh)}")
    view.note(
        "rerun: every observation matches the recording"
        if differences == 0
        else f"rerun: {differences} difference(s) from the recording"
    )
    return 0 if differences == 0 else 1


class _NothingToRerun(Exception):
    """The transcript holds no step, so `--rerun` has nothing to compare."""


def main(args: argparse.Namespace) -> int:
    from agent.cli.common import exit_code_for, one_line
    from agent.cli.view import make_view
    from agent.transcript import TranscriptError, read_transcript

    try:
        record = read_transcript(args.file)
    except TranscriptError as exc:
        print(f"qwq-agent replay: {one_line(exc)}", file=sys.stderr)
        return 2
    view = make_view(
        quiet=args.quiet, json_lines=args.json, show_thinking=not args.hide_thinking, recorded=not args.rerun
    )
    if not args.rerun:
        try:
            for event in recorded_events(record):
                view.handle(event)
        finally:
            view.close()
        return 0
    try:
        return asyncio.run(_rerun(record, view))
    except KeyboardInterrupt:
        view.close()
        return 130
    except _NothingToRerun as exc:
        view.close()
        print(f"qwq-agent replay: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        view.close()
        return exit_code_for("replay", exc)
