"""One in-process completion: the phase machine around `LlamaCppModel`'s token loop (runs in a worker thread).

Phases of a turn:

* `THINK`: reasoning, sampled freely. It ends when the text completes `</think>` (a tag that may span
  several tokens), or when the thinking budget is spent: then the closing sentence is written for the model.
* `ANSWER`: the visible answer, sampled freely, watched for the opening of a call (`<tool_call>` and the
  other forms real models write, see `_turns.detect_call_opening`).
* `CALL`: a call body under a grammar built from the tools' schemas, which also writes the call's closer.
* `OPEN_CALL` and `AFTER_CALL`, only when `tool_choice` forces a call: the backend writes the opener itself
  right after the reasoning, and after each call lets the model choose only between another call and the
  end of its turn.

Sampling uses one persistent llama.cpp sampler chain per kind (`SamplerKind`); llama.cpp's
`llama_sampler_sample` accepts the sampled token into the chain, and every other chain is told of it too, so
penalties see the whole turn.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.models._llama_cache import KVCache, TextDecoder
from agent.models._llama_runtime import GrammarSampler, LlamaRuntime, SamplerChain
from agent.models._turns import (
    CALL_OPEN,
    GRAMMAR_CALL_CLOSE,
    RESPONSE_OPEN,
    THINK_CLOSE,
    CallOpening,
    ToolChoice,
    closing_text,
    detect_call_opening,
    open_call_text,
    tag_completed,
)
from agent.models.base import TokenCounts
from agent.models.errors import ModelError
from agent.models.grammar import arguments_gbnf, call_rest_gbnf, tool_call_gbnf
from agent.models.sampling import SamplingConfig

__all__ = ["Generation", "GenerationJob", "LlamaStats", "Phase", "SamplerKind", "VocabInfo"]


class Phase(enum.Enum):
    THINK = "think"
    ANSWER = "answer"
    OPEN_CALL = "open-call"
    CALL = "call"
    AFTER_CALL = "after-call"


class SamplerKind(enum.Enum):
    THINK = "think"
    THINK_FORCED = "think-forced"  # a turn that must call may not end inside its reasoning
    ANSWER = "answer"
    ANSWER_NO_CALLS = "answer-none"  # tool_choice "none": the call opener is banned
    CALL_FREE = "call-free"  # unconstrained, only ever checked against the grammar


@dataclass
class LlamaStats(TokenCounts):
    """What the last call did with the KV cache and the sampler; benchmarks and tests read it."""

    evaluated_tokens: int = 0
    injected_tokens: int = 0
    thinking_tokens: int = 0
    tool_calls: int = 0
    finish_reason: str = ""
    grammar_tokens: int = 0
    repaired_tokens: int = 0
    grammar_fast_tokens: int = 0
    texts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class VocabInfo:
    """What the token loop needs to know of a vocabulary, scanned once per loaded model."""

    special: Mapping[str, int]  # tags that are single tokens: `</think>`, `<tool_call>`, end of turn...
    end_of_generation: frozenset[int]
    banned: tuple[int, ...]  # control tokens other than end of turn: never in an assistant turn
    bias: Mapping[int, float]  # the user's logit bias, by token id

    @classmethod
    def scan(cls, rt: LlamaRuntime, logit_bias: Mapping[int | str, float]) -> VocabInfo:
        special: dict[str, int] = {}
        for text in (THINK_CLOSE, CALL_OPEN, RESPONSE_OPEN, "<|im_end|>", "<|endoftext|>"):
            token = rt.single_token(text)
            if token is not None:
                special[text] = token
        eog = frozenset(rt.end_of_generation_tokens())
        bias: dict[int, float] = {}
        for key, value in logit_bias.items():
            if isinstance(key, str):
                token = rt.single_token(key)
                if token is None:
                    raise ValueError(f"logit_bias key {key!r} is not a single token")
                key = token
            bias[int(key)] = float(value)
        banned = tuple(sorted(rt.control_tokens() - eog))
        return cls(special=special, end_of_generation=eog, banned=banned, bias=bias)


@dataclass
class GenerationJob:
    """One request, as the worker thread needs it."""

    prompt: str
    tools: Sequence[Any]
    tool_choice: ToolChoice
    max_tokens: int
    thinking_budget: int | None
    opened_think: bool  # the prompt ends inside reasoning (found by rendering, not assumed)
    stop: Callable[[], bool]


@dataclass(frozen=True)
class GenerationSettings:
    """The model's settings the token loop reads."""

    sampling: SamplingConfig
    seed: int
    constrain: bool
    max_string_length: int | None


@dataclass(eq=False)
class Generation:
    """One completion, from prefill to finish reason; emits text through `emit` as it is generated."""

    rt: LlamaRuntime
    cache: KVCache
    vocab: VocabInfo
    job: GenerationJob
    settings: GenerationSettings
    emit: Callable[[str], None]

    def __post_init__(self) -> None:
        self.stats = LlamaStats()
        self.decoder = TextDecoder(self.cache)
        self.window = ""  # the last characters generated, for tag detection
        self.answer = ""  # the text after the reasoning (its latest part), for detecting call openings
        self.answer_whole = True  # `answer` still starts where the answer starts
        self.answer_started = not self.job.opened_think
        self.held = ""  # text not yet sent: it might be the start of an invented <tool_response>
        self.text: list[str] = []
        self.samplers: dict[SamplerKind, SamplerChain] = {}
        self.grammar: GrammarSampler | None = None
        self.closer = GRAMMAR_CALL_CLOSE
        self.tool_names = [getattr(t, "name", "") for t in self.job.tools]
        if self.job.tool_choice.only is not None:
            self.tool_names = [self.job.tool_choice.only]
        import numpy as np

        self.rng = np.random.default_rng(self.settings.seed)

    # -- the phase machine -----------------------------------------------------------------------------------
    def run(self) -> str:
        """Generate the turn; returns the finish reason ("stop", "length", "tool_response", "cancelled")."""
        prefill = self.cache.prefill(self.job.prompt)
        self.stats.prompt_tokens = prefill.prompt_tokens
        self.stats.cached_tokens = prefill.reused_tokens
        self.stats.evaluated_tokens = prefill.evaluated_tokens
        phase = Phase.THINK if self.job.opened_think else self._after_reasoning()
        finish: str | None = None
        while finish is None:
            if self.job.stop():
                finish = "cancelled"
            elif not self._room():
                finish = "length"
            else:
                phase, finish = self._advance(phase)
        return self._finish(finish)

    def _advance(self, phase: Phase) -> tuple[Phase, str | None]:
        """One move of the machine: write what the policy demands, or sample and accept one token."""
        if phase is Phase.OPEN_CALL:
            return self._open_forced_call()
        if phase is Phase.AFTER_CALL:
            return self._after_forced_call()
        if phase is Phase.THINK and self._budget_spent():
            if not self._inject(closing_text("".join(self.text))):
                return phase, "tool_response"
            return self._after_reasoning(), None
        token = self._sample(phase)
        if token in self.vocab.end_of_generation:
            return phase, "stop"
        if token == self.vocab.special.get(RESPONSE_OPEN):
            return phase, "tool_response"
        if phase is Phase.THINK:
            self.stats.thinking_tokens += 1
        elif phase is Phase.CALL and self.grammar is not None:
            self.stats.grammar_tokens += 1
        added = self._accept(token)
        if added is None:
            return phase, "tool_response"
        following = self._next_phase(phase, added)
        if phase is Phase.CALL and following is not Phase.CALL and self.repeats_its_last_line():
            return following, "stop"
        return following, None

    def _next_phase(self, phase: Phase, added: str) -> Phase:
        """Where the text just generated leads."""
        if phase is Phase.THINK:
            return self._after_reasoning() if tag_completed(self.window, len(added), THINK_CLOSE) else phase
        if phase is Phase.ANSWER and self.job.tool_choice.allows_calls:
            opening = detect_call_opening(self.answer, len(added), self.tool_names, whole=self.answer_whole)
            return self._start_call(opening) if opening is not None else phase
        if phase is Phase.CALL and tag_completed(self.window, len(added), self._call_end()):
            self.grammar = None
            return Phase.AFTER_CALL if self.job.tool_choice.forced else Phase.ANSWER
        return phase

    def repeats_its_last_line(self) -> bool:
        """Whether the call just finished is a bare line identical to the line before it.

        Qwen2.5-Coder-0.5B, after one result, wrote the same bare JSON call line again and again until the token
        cap, turn after turn, and no call of those turns ran (measured in benchmarks/real_tasks.py). A turn is
        ended at the first repeat: its calls run, and the model reads their results.
        """
        lines = self.answer.rstrip("\n").split("\n")
        return len(lines) >= 2 and lines[-1].strip() != "" and lines[-1].strip() == lines[-2].strip()

    def _after_reasoning(self) -> Phase:
        self.answer_started = True
        return Phase.OPEN_CALL if self.job.tool_choice.forced else Phase.ANSWER

    def _open_forced_call(self) -> tuple[Phase, str | None]:
        # tool_choice "required" or a name: nothing but a call may follow the reasoning.
        if not self._inject(open_call_text("".join(self.text))):
            return Phase.OPEN_CALL, "tool_response"
        return self._start_call(CallOpening(closer=GRAMMAR_CALL_CLOSE, lead="\n")), None

    def _after_forced_call(self) -> tuple[Phase, str | None]:
        # Another call, or the end of the turn: the only two choices left.
        special = self.vocab.special
        token = self._choose([special.get(CALL_OPEN, -1), special.get("<|im_end|>", -1)])
        if token != special.get(CALL_OPEN):
            return Phase.AFTER_CALL, "stop"
        if not self._inject("\n" + CALL_OPEN):
            return Phase.AFTER_CALL, "tool_response"
        return self._start_call(CallOpening(closer=GRAMMAR_CALL_CLOSE, lead="\n")), None

    def _start_call(self, opening: CallOpening) -> Phase:
        """Enter a call body: under a grammar for this form of opening, unless calls are unconstrained."""
        self.stats.tool_calls += 1
        self.closer = opening.closer
        if self.settings.constrain:
            self.grammar = self.rt.grammar_sampler(self._grammar_text(opening))
            self._add_distribution(self.grammar.chain)
        return Phase.CALL

    def _call_end(self) -> str:
        # Unconstrained, the model may end the call without the newline the grammar writes.
        return self.closer if self.settings.constrain or not self.closer else self.closer.strip()

    def _grammar_text(self, opening: CallOpening) -> str:
        tools, only, cap = self.job.tools, self.job.tool_choice.only, self.settings.max_string_length
        try:
            if opening.arguments_of is not None:
                tool = next(t for t in tools if getattr(t, "name", None) == opening.arguments_of)
                return arguments_gbnf(tool, max_string_length=cap, suffix=opening.closer)
            if opening.partial_name is not None:
                return call_rest_gbnf(
                    tools, opening.partial_name, only=only, max_string_length=cap, suffix=opening.closer
                )
            return tool_call_gbnf(
                tools, only=only, max_string_length=cap, prefix=opening.lead, suffix=opening.closer
            )
        except ValueError as exc:
            raise ModelError(f"cannot build the tool-call grammar: {exc}") from exc

    # -- sampling --------------------------------------------------------------------------------------------
    def _sample(self, phase: Phase) -> int:
        if phase is Phase.CALL and self.grammar is not None:
            return self._sample_call(self.grammar)
        kind = self._kind(phase)
        token = self._chain(kind).sample()
        for other_kind, other in self.samplers.items():
            if other_kind is not kind:
                other.accept(token)
        return token

    def _kind(self, phase: Phase) -> SamplerKind:
        if phase is Phase.THINK:
            return SamplerKind.THINK_FORCED if self.job.tool_choice.forced else SamplerKind.THINK
        if phase is Phase.CALL:
            return SamplerKind.ANSWER
        if self.job.tool_choice.allows_calls:
            return SamplerKind.ANSWER
        return SamplerKind.ANSWER_NO_CALLS

    def _chain(self, kind: SamplerKind) -> SamplerChain:
        chain = self.samplers.get(kind)
        if chain is not None:
            return chain
        sampling, vocab = self.settings.sampling, self.vocab
        chain = self.rt.chain()
        if kind is not SamplerKind.CALL_FREE:
            chain.add_penalties(sampling.presence_penalty)
            bans = list(vocab.banned)
            if kind is SamplerKind.ANSWER_NO_CALLS and CALL_OPEN in vocab.special:
                bans.append(vocab.special[CALL_OPEN])
            if kind is SamplerKind.THINK_FORCED:
                bans.extend(vocab.end_of_generation)
            chain.add_bias({**vocab.bias, **dict.fromkeys(bans, float("-inf"))})
        self._add_distribution(chain)
        self.samplers[kind] = chain
        return chain

    def _add_distribution(self, chain: SamplerChain) -> None:
        sampling = self.settings.sampling
        chain.add_distribution(
            top_k=sampling.top_k or 0,
            top_p=sampling.top_p,
            min_p=sampling.min_p or 0.0,
            temperature=sampling.temperature,
            seed=self.settings.seed,
        )

    def _sample_call(self, grammar: GrammarSampler) -> int:
        """Sample a token of a call body under the grammar, cheaply when the model already agrees with it.

        Applying a grammar means matching every one of the 151k vocabulary entries against it. As llama.cpp's
        own samplers do, first sample without it and check only that token; a model that writes the JSON
        the schema wants (QwQ nearly always does) never pays for the full pass. Only a rejected token costs
        the resample with the grammar over the whole vocabulary (every token of the noise test model).
        """
        token = self._chain(SamplerKind.CALL_FREE).sample()
        if token in self.vocab.end_of_generation and not self.job.tool_choice.forced:
            # The model ends its turn inside the call (Qwen2.5-Coder-0.5B left a string unclosed, measured):
            # forced on, it wrote control tokens into the string up to the token cap. The turn ends here
            # instead; the parser reports the unfinished call, and the model is told how to write it.
            return token
        if grammar.allows(token):
            self.stats.grammar_fast_tokens += 1
            return token
        return grammar.chain.sample()

    def _choose(self, candidates: Sequence[int]) -> int:
        """Sample among a few tokens by the model's own logits (at the sampling temperature)."""
        import numpy as np

        valid = [t for t in candidates if t >= 0]
        if len(valid) == 1:
            return valid[0]
        logits = self.rt.last_logits()
        scores = np.array([logits[t] for t in valid], dtype=np.float64) / self.settings.sampling.temperature
        probs = np.exp(scores - scores.max())
        probs /= probs.sum()
        return int(valid[int(self.rng.choice(len(valid), p=probs))])

    # -- text ------------------------------------------------------------------------------------------------
    def _accept(self, token: int) -> str | None:
        """Evaluate a generated token into the KV cache and emit its text; None when the turn is cut."""
        self.stats.completion_tokens += 1
        text = self.decoder.push(token)
        return text if self._emit(text) else None

    def _inject(self, text: str) -> bool:
        """Write `text` into the turn as if the model had: evaluated, cached, and streamed."""
        tokens = self.rt.tokenize(text.encode("utf-8"))
        for chain in self.samplers.values():
            for t in tokens:
                chain.accept(t)
        ok = True
        for t in tokens:
            ok = self._accept(t) is not None and ok
            self.stats.injected_tokens += 1
        return ok

    def _emit(self, text: str) -> bool:
        """Send `text`; False when an invented <tool_response> begins (the turn is cut there)."""
        self.window = (self.window + text)[-256:]
        if self.answer_started:
            self.answer += text
            if len(self.answer) > 2048:
                self.answer, self.answer_whole = self.answer[-1024:], False
        pending = self.held + text
        cut = pending.find(RESPONSE_OPEN)
        if cut >= 0:
            self._send(pending[:cut])
            self.held = ""
            return False
        keep = 0
        for n in range(min(len(RESPONSE_OPEN) - 1, len(pending)), 0, -1):
            if RESPONSE_OPEN.startswith(pending[-n:]):
                keep = n
                break
        self._send(pending[: len(pending) - keep])
        self.held = pending[len(pending) - keep :]
        return True

    def _send(self, text: str) -> None:
        if text:
            self.text.append(text)
            self.emit(text)

    # -- budgets and the end ---------------------------------------------------------------------------------
    def _room(self) -> bool:
        return self.stats.completion_tokens < self.job.max_tokens and self.cache.room() > 0

    def _budget_spent(self) -> bool:
        budget = self.job.thinking_budget
        return budget is not None and self.stats.thinking_tokens >= budget

    def _finish(self, finish: str) -> str:
        tail = self.decoder.flush()
        if tail:
            self.held += tail
        if finish != "tool_response" and self.held:
            self._send(self.held)
        self.held = ""
        self.stats.finish_reason = finish
        self.stats.repaired_tokens = self.decoder.repaired_tokens
        self.stats.texts = ["".join(self.text)]
        return finish


def call_seed(base: int | None, calls: int) -> int:
    """A different seed per call, repeatable when the model has a seed."""
    seed = base if base is not None else int.from_bytes(os.urandom(4), "little")
    return (seed + calls) & 0x7FFFFFFF
