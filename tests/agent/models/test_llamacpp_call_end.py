"""A model that ends its turn inside a call it opened (tool_choice "auto") ends there.

Qwen2.5-Coder-0.5B left a string of a bare JSON call unclosed and then wanted to end its turn; the call grammar
refused the end of turn, so it wrote `<|im_start|>.` into the string up to the token cap, every turn (measured
in benchmarks/real_tasks.py). The token loop's choice is tested on stand-ins for the two samplers (the noise
model's free call chain carries no bias that could make it choose the end of turn on cue).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from agent.models._llama_generation import Generation, LlamaStats, SamplerKind, VocabInfo
from agent.models._turns import ToolChoice

END, TEXT, GRAMMAR_CHOICE = 2, 7, 9


class _Chain:
    def __init__(self, token: int) -> None:
        self.token = token

    def sample(self) -> int:
        return self.token


class _Grammar:
    chain = _Chain(GRAMMAR_CHOICE)

    def allows(self, token: int) -> bool:
        return token != END


def _generation(tool_choice: str, free_token: int) -> Generation:
    generation = Generation.__new__(Generation)
    generation.vocab = VocabInfo(special={}, end_of_generation=frozenset({END}), banned=(), bias={})
    generation.job = SimpleNamespace(tool_choice=ToolChoice.of(tool_choice))  # type: ignore[assignment]
    generation.samplers = {SamplerKind.CALL_FREE: _Chain(free_token)}  # type: ignore[dict-item]
    generation.stats = LlamaStats()
    return generation


def test_an_end_of_turn_inside_an_unforced_call_is_taken() -> None:
    assert _generation("auto", END)._sample_call(_Grammar()) == END  # type: ignore[arg-type]


@pytest.mark.parametrize("choice", ["required", "add"])
def test_a_forced_call_is_still_finished_under_the_grammar(choice: str) -> None:
    assert _generation(choice, END)._sample_call(_Grammar()) == GRAMMAR_CHOICE  # type: ignore[arg-type]


def test_other_tokens_still_go_through_the_grammar() -> None:
    assert _generation("auto", TEXT)._sample_call(_Grammar()) == TEXT  # type: ignore[arg-type]
    assert _generation("auto", END)._sample_call(_Grammar()) != GRAMMAR_CHOICE  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("answer", "repeats"),
    [
        # Qwen2.5-Coder-0.5B's turns after its first result (measured): the same bare call line again
        ('{"name": "python", "arguments": {"code": "849282 % 1000003"}}\n' * 2, True),
        ('I will run it.\n{"name": "python", "arguments": {"code": "1"}}\n', False),
        (
            '{"name": "python", "arguments": {"code": "1"}}\n{"name": "python", "arguments": {"code": "2"}}\n',
            False,
        ),
        ("\n\n", False),
    ],
)
def test_a_call_line_that_repeats_the_line_before_ends_the_turn(answer: str, repeats: bool) -> None:
    generation = _generation("auto", TEXT)
    generation.answer = answer
    assert generation.repeats_its_last_line() is repeats
