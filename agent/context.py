"""Long runs inside a fixed context: token accounting, and condensing what the model is shown.

QwQ-32B thinks for thousands of tokens per turn and tool results pile up, so a run of tens of steps outgrows
any context. The history is never changed (it is the run's record, only ever appended to); what changes is
the *view* of it sent to the model. Before each request `ContextKeeper.fit` counts the prompt and, while the
prompt plus the room kept for the reply does not fit, condenses the view, in this order:

1. earlier reasoning is already gone (`keep_thinking="none"`, QwQ-32B's own format);
2. **mask**: tool results older than the last `keep_turns` turns become a one-line note — which tool, how
   large, and where the full text is (`/workspace/.observations/<call-id>.txt` when a sandbox is given, so
   the model can `read_file` it; otherwise: call the tool again);
3. **condense the middle**: the steps between the task and the last `keep_turns` turns become one note, a
   digest the framework writes (`condense="digest"`) or a summary the model writes (`condense="summary"`).
   The system prompt, the task and every user message stay verbatim;
4. the same two with only the last turn kept whole.

If even that does not fit, `fit` says so and the run stops with `stop_reason="context_full"` (resumable
with a larger context). Condensing is monotonic and happens in blocks: everything eligible is masked at once
and stays masked, so the view is the same from one step to the next between two condensations, and a
backend that reuses its KV cache by prefix (`agent.models._llama_cache`) re-evaluates only from the first
newly hidden message, once per block rather than every step (`benchmarks/context.py` measures the cost).

Counts are exact where the backend can count (`CountsTokens`: the in-process tokenizer, a server's
`/tokenize`); otherwise `estimate_tokens` on the QwQ rendering, corrected by the `prompt_tokens` the server
reported for the previous request.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal, Protocol

import prompts
from agent.events import ContextCondensed
from agent.messages import AssistantMessage, Message, NoteMessage, SystemMessage, ToolMessage, UserMessage
from agent.models.base import CountsTokens, Model, ModelRequest, Usage
from agent.models.errors import ModelError

__all__ = [
    "OBSERVATIONS_DIR",
    "Condensation",
    "ContextKeeper",
    "ContextPolicy",
    "FileStore",
    "Fitted",
    "estimate_tokens",
]

OBSERVATIONS_DIR = "/workspace/.observations"
"""Where masked tool results are saved in the sandbox, one `<call-id>.txt` per call."""

Condense = Literal["digest", "summary", "none"]
_ESTIMATE_MARGIN = 1.1  # an estimate may be this much short (tests/agent/test_context.py keeps it within 10%)
# An exact count may still differ by a few tokens from what a KV cache holds: it tokenizes the new part of a
# prompt after the cached part, and token boundaries can fall differently there.
_EXACT_SLACK = 16
# An estimate this many times over that still fits needs no exact count: estimates are within 10%.
_SURELY_FITS = 1.5
_SUMMARY_STEP_CHARS = 1200  # what the summariser sees of one result or one visible text


class FileStore(Protocol):
    """Where masked observations are written: `sandboxes.DockerSandbox` is one."""

    async def awrite_file(self, path: str, data: str | bytes) -> str: ...


@dataclass(frozen=True)
class ContextPolicy:
    """How a run stays inside the model's context; `Agent(context=ContextPolicy(...))`, on by default.

    `keep_turns`: the last turns (a model turn and its results) always shown whole. `mask`: hide older tool
    results behind a one-line note. `condense`: what replaces the middle of the history when masking is not
    enough — "digest" (a note the framework writes: which calls were made, where their results are),
    "summary" (the model summarises it, with `prompts/templates/context_summary.j2`; the digest if that
    fails) or "none" (the run stops with "context_full" instead). `n_ctx`: the context size, when the
    backend cannot say (or to condense within less). `reserve`: tokens kept for the reply (default: the
    agent's `max_tokens_per_step`, else the model's `max_tokens`, at most half the context). `sandbox`:
    where hidden results are saved for the model to read back (`/workspace/.observations/<call-id>.txt`).
    `min_mask_chars`: results shorter than this are never masked (the note would not be much shorter).
    `summary_tokens`: the summariser's reply budget.
    """

    keep_turns: int = 3
    mask: bool = True
    condense: Condense = "digest"
    n_ctx: int | None = None
    reserve: int | None = None
    sandbox: FileStore | None = field(default=None, compare=False, repr=False)
    min_mask_chars: int = 400
    summary_tokens: int = 1024

    def __post_init__(self) -> None:
        if self.keep_turns < 1:
            raise ValueError("keep_turns must be at least 1: the model must see its last results")
        if self.condense not in ("digest", "summary", "none"):
            raise ValueError(f"condense must be 'digest', 'summary' or 'none'; got {self.condense!r}")
        if self.n_ctx is not None and self.n_ctx < 256:
            raise ValueError("n_ctx must be at least 256 tokens")
        if self.reserve is not None and self.reserve < 1:
            raise ValueError("reserve must be at least 1 token")

    def as_config(self) -> dict[str, Any]:
        """The policy as the transcript's configuration records it."""
        return {
            "keep_turns": self.keep_turns,
            "mask": self.mask,
            "condense": self.condense,
            "n_ctx": self.n_ctx,
            "reserve": self.reserve,
            "observations": OBSERVATIONS_DIR if self.sandbox is not None else None,
        }


# ----------------------------------------------------------------- the estimate

# Roughly the pre-tokenizer of Qwen2's tokenizer: letters with an optional leading non-letter, single digits,
# punctuation runs with a leading space, newlines, other whitespace.
_PIECES = re.compile(
    r"'(?:s|t|re|ve|m|ll|d)|[^\r\n\w]?[^\W\d_]+|\d| ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+|_+"
)
_SPECIAL = re.compile(r"<\|im_(?:start|end)\|>|</?(?:think|tool_call|tool_response|tools)>")


def _word_tokens(word: str) -> float:
    if not word.isascii():
        wide = sum(1 for ch in word if ord(ch) > 0x2E80)  # CJK and the like: about 0.55 tokens per character
        return max(1.0, wide * 0.55 + (len(word) - wide) / 3.0)
    if len(word) <= 4:
        return 1.0
    return 1.13 if len(word) < 10 else max(1.2, len(word) / 6.0)


def _piece_tokens(piece: str) -> float:
    """What one pre-tokenized piece costs on average, by its kind (measured against Qwen2's tokenizer)."""
    if piece[0].isdigit():
        return 1.0
    if piece.isspace():
        return 1.0 + len(piece) // 16
    if piece[0].isalpha() or (piece[0] == " " and len(piece) > 1 and piece[1].isalpha()):
        return _word_tokens(piece.lstrip())
    if len(piece) > 1 and piece[1].isalpha():  # a word led by punctuation: "(self", ".join", "。它"
        return _LEAD + _word_tokens(piece[1:])
    size = len(piece.strip())
    return 1.0 if size <= 2 else _PUNCT_RUN.get(size, size / 4.0)


_LEAD = 0.5
_PUNCT_RUN = {3: 1.7, 4: 1.3, 5: 1.2}


def estimate_tokens(text: str) -> int:
    """About how many tokens QwQ-32B's tokenizer makes of `text`, without the tokenizer.

    Pieces are cut roughly as Qwen2's pre-tokenizer cuts them and each costs what such pieces cost on
    average; the chat format's special tokens count one each. Within 10% of the real count on prose, code,
    JSON, numbers and CJK text (tests/agent/test_context.py); `ContextKeeper` corrects it further with the
    counts a server reports.
    """
    specials = len(_SPECIAL.findall(text))
    text = _SPECIAL.sub(" ", text)
    return specials + round(sum(_piece_tokens(p) for p in _PIECES.findall(text)))


# ----------------------------------------------------------------- records


@dataclass
class Condensation:
    """One change of the view, as the transcript records it and `qwq-agent replay` shows it.

    `strategy` is "mask", "digest" or "summary"; `masked` lists the hidden results (call id, tool, size,
    where the full text is saved); `hidden_steps` the steps a digest or summary replaced; token counts are
    of the whole prompt before and after (`exact` when the backend counted them).
    """

    step: int
    strategy: str
    tokens_before: int = 0
    tokens_after: int = 0
    exact: bool = False
    masked: list[dict[str, Any]] = field(default_factory=list)
    hidden_steps: tuple[int, int] | None = None
    through: int = 0
    note: str = ""

    def event(self) -> ContextCondensed:
        return ContextCondensed(
            step=self.step,
            strategy=self.strategy,
            tokens_before=self.tokens_before,
            tokens_after=self.tokens_after,
            masked=len(self.masked),
            hidden_steps=self.hidden_steps,
        )

    def record(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "condensation",
            "step": self.step,
            "strategy": self.strategy,
            "tokens_before": self.tokens_before,
            "tokens_after": self.tokens_after,
            "exact": self.exact,
        }
        if self.masked:
            data["masked"] = self.masked
        if self.hidden_steps is not None:
            data.update(hidden_steps=list(self.hidden_steps), through=self.through, note=self.note)
        return data


@dataclass
class Fitted:
    """What `fit` decided: the request to send (None: it cannot fit), what changed, and what it cost."""

    request: ModelRequest | None
    condensations: list[Condensation] = field(default_factory=list)
    detail: str = ""
    usage: Usage = field(default_factory=Usage)
    prompt_tokens: int = 0


# ----------------------------------------------------------------- the keeper


@dataclass
class _Count:
    tokens: int
    exact: bool
    estimate: int = 0


class ContextKeeper:
    """The context of one run: counts each request and condenses the view when it would not fit.

    Its state (what is masked, what the middle note says) only grows, and is rebuilt from the transcript's
    condensation records on resume (`restore`), so a resumed run shows the model the same view.
    """

    def __init__(self, policy: ContextPolicy, model: Model) -> None:
        self.policy = policy
        self.model = model
        self._window: int | None = None
        self._window_known = False
        self._ratio = 1.0  # reported / estimated prompt tokens, for backends that cannot count
        self._last_estimate = 0
        self._masked: dict[int, str] = {}  # history index -> the note shown instead
        self._saved: dict[int, str] = {}  # history index -> where its full text is in the sandbox
        self._through = 0  # history[opening:through] is replaced by the middle note
        self._middle: NoteMessage | None = None
        self._summary = ""  # the model's latest summary, handed to the next one
        self._resave: list[int] = []  # masked before a resume: saved again (the sandbox may be a new one)

    # -- public ------------------------------------------------------------------------------------------

    def observe(self, prompt_tokens: int, requests: int = 1) -> None:
        """The prompt tokens the backend reported for the last request: corrects the estimate."""
        if self._last_estimate > 0 and prompt_tokens > 0 and requests == 1:
            self._ratio = min(2.0, max(0.5, prompt_tokens / self._last_estimate))

    def restore(self, messages: Sequence[Message], records: Sequence[dict[str, Any]]) -> None:
        """Take up the condensations a transcript recorded, so a resumed run sees the same view."""
        index_of = {m.tool_call_id: i for i, m in enumerate(messages) if isinstance(m, ToolMessage)}
        for record in records:
            if record.get("type") != "condensation":
                continue
            for item in record.get("masked") or []:
                index = index_of.get(str(item.get("call_id", "")))
                if index is not None:
                    self._masked[index] = self._mask_note(item)
                    if item.get("path"):
                        self._resave.append(index)
            if record.get("hidden_steps") and isinstance(record.get("through"), int):
                self._through = max(self._through, int(record["through"]))
                kind = "context_summary" if record.get("strategy") == "summary" else "context_digest"
                self._middle = NoteMessage(content=str(record.get("note", "")), kind=kind)

    async def fit(self, step: int, messages: Sequence[Message], request: ModelRequest) -> Fitted:
        """The request to send for `step`: `request` with the view of `messages` that fits, or None."""
        for index in self._resave:
            message = messages[index]
            if isinstance(message, ToolMessage):
                await self._save(index, message)
        self._resave = []
        window = await self._context_window()
        if window is None:
            return Fitted(replace(request, messages=tuple(messages)))
        reserve = self._reserve(window, request)
        fitted = Fitted(None)
        count = await self._count(self._viewed(request, messages), reserve, window)
        for stage in self._stages(step, messages, window, fitted):
            if self._fits(count, reserve, window):
                break
            condensation = await stage()
            if condensation is None:
                continue
            after = await self._count(self._viewed(request, messages))
            condensation.tokens_before, condensation.tokens_after = count.tokens, after.tokens
            condensation.exact = count.exact and after.exact
            fitted.condensations.append(condensation)
            count = after
        fitted.prompt_tokens = count.tokens
        if not self._fits(count, reserve, window):
            fitted.detail = self._full_detail(count, reserve, window)
            return fitted
        room = window - self._margin(count)
        max_tokens = request.max_tokens or _model_max_tokens(self.model) or room
        fitted.request = replace(self._viewed(request, messages), max_tokens=min(max_tokens, room))
        return fitted

    # -- counting ----------------------------------------------------------------------------------------

    async def _context_window(self) -> int | None:
        if not self._window_known:
            self._window_known = True
            self._window = self.policy.n_ctx
            if self._window is None and isinstance(self.model, CountsTokens):
                self._window = await self.model.context_window()
        return self._window

    def _reserve(self, window: int, request: ModelRequest) -> int:
        wanted = self.policy.reserve or request.max_tokens or _model_max_tokens(self.model) or window // 4
        return min(wanted, window // 2)

    def _viewed(self, request: ModelRequest, messages: Sequence[Message]) -> ModelRequest:
        return replace(request, messages=tuple(self._view(messages)))

    async def _count(
        self, viewed: ModelRequest, reserve: int | None = None, window: int | None = None
    ) -> _Count:
        """The prompt's tokens: exact where the backend can count, unless the estimate is far inside the window.

        Given `reserve` and `window`, a prompt whose estimate fits even `_SURELY_FITS` times over is not
        counted exactly: that saves a `/tokenize` request (the whole prompt sent once more) or a local
        tokenization on every step of a run that is nowhere near its limit.
        """
        text = prompts.render(viewed.messages, viewed.tools, keep_thinking=viewed.keep_thinking)
        estimate = estimate_tokens(text)
        self._last_estimate = estimate
        guess = _Count(math.ceil(estimate * self._ratio), False, estimate)
        surely = window is not None and math.ceil(guess.tokens * _SURELY_FITS) + (reserve or 0) <= window
        if not surely and isinstance(self.model, CountsTokens):
            exact = await self.model.count_prompt_tokens(viewed)
            if exact is not None:
                return _Count(exact, True)
        return guess

    @staticmethod
    def _margin(count: _Count) -> int:
        return count.tokens + _EXACT_SLACK if count.exact else math.ceil(count.tokens * _ESTIMATE_MARGIN)

    def _fits(self, count: _Count, reserve: int, window: int) -> bool:
        return self._margin(count) + reserve <= window

    def _full_detail(self, count: _Count, reserve: int, window: int) -> str:
        what = "counted" if count.exact else "estimated"
        return (
            f"the prompt needs {count.tokens:,} tokens ({what}) and {reserve:,} are kept for the reply, but the "
            f"context holds {window:,} even with old results masked and the middle of the history condensed; "
            f"resume the run with a larger context (e.g. --n-ctx {_next_size(count.tokens + reserve)}), or give "
            "the model less to read at once"
        )

    # -- the view ----------------------------------------------------------------------------------------

    def _view(self, messages: Sequence[Message]) -> list[Message]:
        opening = _opening_end(messages)
        view = list(messages[:opening])
        start = opening
        if self._middle is not None and self._through > opening:
            view.extend(m for m in messages[opening : self._through] if isinstance(m, UserMessage))
            view.append(self._middle)
            start = self._through
        for index in range(start, len(messages)):
            message = messages[index]
            note = self._masked.get(index)
            view.append(message.model_copy(update={"content": note}) if note is not None else message)
        return view

    # -- the strategies ----------------------------------------------------------------------------------

    def _stages(
        self, step: int, messages: Sequence[Message], window: int, fitted: Fitted
    ) -> list[Callable[[], Awaitable[Condensation | None]]]:
        """The condensations to try in turn, each keeping the last `keep_turns` turns, then only the last one."""
        keep, policy = self.policy.keep_turns, self.policy
        stages: list[Callable[[], Awaitable[Condensation | None]]] = []
        for turns in (keep, 1) if keep > 1 else (keep,):
            if policy.mask:
                stages.append(partial(self._mask, turns, step, messages))
            if policy.condense != "none":
                stages.append(partial(self._condense, turns, step, messages, window, fitted))
        return stages

    async def _mask(self, turns: int, step: int, messages: Sequence[Message]) -> Condensation | None:
        """Hide every result older than the last `turns` turns that is long enough to be worth it."""
        begin = max(_opening_end(messages), self._through)
        end = _tail_start(messages, turns)
        chosen = [
            i
            for i in range(begin, end)
            if isinstance(messages[i], ToolMessage)
            and i not in self._masked
            and len(messages[i].content) >= self.policy.min_mask_chars
        ]
        if not chosen:
            return None
        masked = []
        for index in chosen:
            message = messages[index]
            assert isinstance(message, ToolMessage)
            item = {
                "call_id": message.tool_call_id,
                "tool": message.name,
                "chars": len(message.content),
                "tokens": math.ceil(estimate_tokens(message.content) * self._ratio),
                "path": await self._save(index, message),
            }
            self._masked[index] = self._mask_note(item)
            masked.append(item)
        return Condensation(step=step, strategy="mask", masked=masked)

    async def _condense(
        self, turns: int, step: int, messages: Sequence[Message], window: int, fitted: Fitted
    ) -> Condensation | None:
        """Replace the steps before the last `turns` turns by one note: a summary, else a digest."""
        opening = _opening_end(messages)
        end = _tail_start(messages, turns)
        if end <= max(opening, self._through):
            return None
        for index in range(max(opening, self._through), end):  # their full text stays reachable
            message = messages[index]
            if isinstance(message, ToolMessage) and index not in self._saved:
                await self._save(index, message)
        first = _step_number(messages, opening)
        last = _step_number(messages, end) - 1
        folder = OBSERVATIONS_DIR if self.policy.sandbox is not None else ""
        strategy, summary = "digest", None
        if self.policy.condense == "summary":
            summary = await self._summarise(messages, opening, end, window, fitted)
        if summary:
            strategy, self._summary = "summary", summary
            text = prompts.render_note(
                "context_summary", first_step=first, last_step=last, summary=summary, folder=folder
            )
        else:
            calls = Counter(
                c.name for m in messages[opening:end] if isinstance(m, AssistantMessage) for c in m.tool_calls
            )
            text = prompts.render_note(
                "context_digest", first_step=first, last_step=last, calls=sorted(calls.items()), folder=folder
            )
        self._middle = NoteMessage(content=text, kind=f"context_{strategy}")
        self._through = end
        return Condensation(step=step, strategy=strategy, hidden_steps=(first, last), through=end, note=text)

    async def _summarise(
        self, messages: Sequence[Message], opening: int, end: int, window: int, fitted: Fitted
    ) -> str | None:
        """The model's summary of the steps about to be hidden (with its earlier summary), or None."""
        from agent.parsing import parse_completion

        budget = self.policy.summary_tokens
        task = next((m.content for m in messages[:opening] if isinstance(m, UserMessage)), "")
        text = prompts.render_format(
            "summary_request",
            task=task,
            previous=self._summary,
            steps=_steps_for_summary(messages, max(opening, self._through), end, self._masked),
        )
        system = prompts.render_system_prompt("context_summary", max_words=max(50, budget // 3))
        request = ModelRequest(
            messages=(SystemMessage(content=system), UserMessage(content=text)),
            tool_choice="none",
            max_tokens=budget,
            thinking_budget=budget // 2,
        )
        counted = await self._count(request)
        if not self._fits(counted, budget, window):
            return None
        raw: list[str] = []
        opens = True
        try:
            async for chunk in self.model.stream(request):
                if chunk.opens_thinking is not None and not raw:
                    opens = chunk.opens_thinking
                raw.append(chunk.text)
                if chunk.usage is not None:
                    u, f = chunk.usage, fitted.usage
                    fitted.usage = Usage(
                        f.prompt_tokens + u.prompt_tokens,
                        f.completion_tokens + u.completion_tokens,
                        f.cached_tokens + u.cached_tokens,
                    )
        except ModelError:
            return None  # the digest takes its place
        summary = parse_completion("".join(raw), prompt_opened_think=opens).content.strip()
        return summary or None

    # -- observations ------------------------------------------------------------------------------------

    async def _save(self, index: int, message: ToolMessage) -> str:
        """Write a result to the sandbox for the model to read back; "" when there is none or it failed."""
        if index in self._saved:
            return self._saved[index]
        sandbox = self.policy.sandbox
        if sandbox is None:
            return ""
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", message.tool_call_id or f"message_{index}")
        try:
            path = await sandbox.awrite_file(f"{OBSERVATIONS_DIR}/{name}.txt", message.content)
        except Exception:  # a sandbox that died or filled up: the note then says to call the tool again
            return ""
        self._saved[index] = path
        return path

    @staticmethod
    def _mask_note(item: dict[str, Any]) -> str:
        return prompts.render_note(
            "observation_masked",
            name=str(item.get("tool") or "tool"),
            chars=f"{int(item.get('chars', 0)):,}",
            tokens=f"{int(item.get('tokens', 0)):,}",
            path=str(item.get("path") or ""),
        )


# ----------------------------------------------------------------- helpers


def _model_max_tokens(model: Model) -> int | None:
    value = getattr(model, "max_tokens", None)
    return value if isinstance(value, int) and value > 0 else None


def _opening_end(messages: Sequence[Message]) -> int:
    """Index just past the task (the first user message): the system prompt and the task are never hidden."""
    return next((i + 1 for i, m in enumerate(messages) if isinstance(m, UserMessage)), 0)


def _tail_start(messages: Sequence[Message], turns: int) -> int:
    """Index of the first message of the last `turns` turns (a turn starts with an assistant message)."""
    starts = [i for i, m in enumerate(messages) if isinstance(m, AssistantMessage)]
    return starts[-turns] if len(starts) >= turns else 0


def _step_number(messages: Sequence[Message], index: int) -> int:
    """The step of the first assistant turn at or after `index` (each step adds one assistant turn)."""
    return 1 + sum(1 for m in messages[:index] if isinstance(m, AssistantMessage))


def _cut(text: str, limit: int = _SUMMARY_STEP_CHARS) -> str:
    return text if len(text) <= limit else text[: limit // 2] + " […] " + text[-limit // 2 :]


def _steps_for_summary(
    messages: Sequence[Message], begin: int, end: int, masked: dict[int, str]
) -> list[dict[str, Any]]:
    """The steps in `messages[begin:end]` as the summary template reads them (results cut to a size)."""
    steps: list[dict[str, Any]] = []
    number = _step_number(messages, begin) - 1
    for index in range(begin, end):
        message = messages[index]
        if isinstance(message, AssistantMessage):
            number += 1
            calls = [
                {"name": c.name, "arguments": _cut(json.dumps(c.arguments, ensure_ascii=False), 300)}
                for c in message.tool_calls
            ]
            steps.append(
                {"number": number, "content": _cut(message.content.strip()), "calls": calls, "results": []}
            )
        elif isinstance(message, ToolMessage | NoteMessage) and steps:
            steps[-1]["results"].append(_cut(masked.get(index, message.content)))
        elif isinstance(message, UserMessage) and steps:
            steps[-1]["results"].append(_cut(message.content))
    return steps


def _next_size(tokens: int) -> int:
    """The next power of two at or above `tokens`: a context size to suggest."""
    return 1 << max(tokens - 1, 1).bit_length()
