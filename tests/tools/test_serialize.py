"""Result serialisation: to_text for each kind of value, and truncate_middle's guarantees (hypothesis)."""

import dataclasses
import datetime
import enum
import json
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel

from tools.serialize import MIN_MAX_CHARS, NO_OUTPUT, to_text, truncate_middle

MARKER = re.compile(r"\n\[\.\.\. ([\d,]+) characters cut from the middle \.\.\.\]\n")


class Point(BaseModel):
    x: int
    label: str


@dataclasses.dataclass
class Box:
    name: str
    size: float


class Level(enum.Enum):
    LOW = "low"


# --- truncate_middle ----------------------------------------------------------------------------------------


@given(st.text(), st.integers(min_value=MIN_MAX_CHARS, max_value=3000))
def test_truncate_middle_never_exceeds_the_cap(text: str, max_chars: int) -> None:
    assert len(truncate_middle(text, max_chars)) <= max_chars


@given(st.text(max_size=500), st.integers(min_value=MIN_MAX_CHARS, max_value=600))
def test_truncate_middle_leaves_short_text_alone(text: str, max_chars: int) -> None:
    if len(text) <= max_chars:
        assert truncate_middle(text, max_chars) == text


@given(
    st.text(min_size=MIN_MAX_CHARS + 1, max_size=5000), st.integers(min_value=MIN_MAX_CHARS, max_value=2000)
)
def test_truncate_middle_keeps_head_and_tail_and_counts_the_cut(text: str, max_chars: int) -> None:
    assume(len(text) > max_chars)
    assume(MARKER.search(text) is None)  # so the marker found is the one truncate_middle wrote
    result = truncate_middle(text, max_chars)
    marker = MARKER.search(result)
    assert marker is not None, result
    head, tail = result[: marker.start()], result[marker.end() :]
    cut = int(marker.group(1).replace(",", ""))
    assert text.startswith(head)
    assert text.endswith(tail)
    assert len(head) + cut + len(tail) == len(text)
    assert len(result) == max_chars  # the budget is used in full
    assert abs(len(head) - len(tail)) <= 1


def test_truncate_middle_example() -> None:
    text = "".join(f"line {i}\n" for i in range(10_000))
    result = truncate_middle(text, 200)
    assert result.startswith("line 0\nline 1\n")
    assert result.endswith("line 9998\nline 9999\n")
    cut = len(text) - (200 - len(MARKER.search(result).group(0)))  # type: ignore[union-attr]
    assert f"[... {cut:,} characters cut from the middle ...]" in result


def test_truncate_middle_rejects_tiny_caps() -> None:
    with pytest.raises(ValueError, match="at least"):
        truncate_middle("short", MIN_MAX_CHARS - 1)


# --- to_text ------------------------------------------------------------------------------------------------


def test_strings_are_kept_as_they_are() -> None:
    assert to_text("héllo\n  world") == "héllo\n  world"


def test_nothing_reads_as_no_output() -> None:
    assert to_text(None) == NO_OUTPUT
    assert to_text("") == NO_OUTPUT


def test_bytes_become_a_note() -> None:
    assert to_text(b"\x00" * 2048) == "(2,048 bytes of binary data, not shown)"
    assert to_text(bytearray(3)) == "(3 bytes of binary data, not shown)"


def test_scalars_are_json() -> None:
    assert to_text(3) == "3"
    assert to_text(1.5) == "1.5"
    assert to_text(True) == "true"
    assert to_text(Level.LOW) == '"low"'
    assert to_text(datetime.date(2025, 1, 2)) == '"2025-01-02"'


def test_models_dataclasses_and_containers_are_json() -> None:
    assert to_text(Point(x=1, label="é")) == '{"x": 1, "label": "é"}'
    assert to_text(Box("b", 2.0)) == '{"name": "b", "size": 2.0}'
    assert to_text({"k": [1, 2], "t": (3,)}) == '{"k": [1, 2], "t": [3]}'
    assert to_text({1, 2}) in ("[1, 2]", "[2, 1]")


def test_long_structures_are_indented_but_flat_lists_are_not() -> None:
    records = [{"id": i, "name": f"item {i}"} for i in range(10)]
    text = to_text(records)
    assert text.startswith('[\n  {\n    "id": 0,')
    assert json.loads(text) == records
    numbers = list(range(100))
    assert to_text(numbers) == json.dumps(numbers)


def test_unknown_objects_fall_back_to_str() -> None:
    class Thing:
        def __str__(self) -> str:
            return "a thing"

    assert to_text(Thing()) == '"a thing"'
    assert to_text({"t": Thing()}) == '{"t": "a thing"}'


def test_to_text_applies_the_cap() -> None:
    text = to_text("x" * 50_000, max_chars=1000)
    assert len(text) == 1000
    assert "characters cut from the middle" in text
    assert to_text("x" * 50_000, max_chars=None) == "x" * 50_000
    assert len(to_text(list(range(20_000)))) == 20_000


def test_lone_surrogates_inside_structures_are_replaced() -> None:
    # pydantic refuses them (a file name listed with surrogateescape): cleaned copies are written instead
    value = {"\ud800key": ["\udc80", ("\udfff", 1)], "pair": "\ud83d\ude00"}
    text = to_text(value)
    text.encode("utf-8")
    assert json.loads(text) == {"\ufffdkey": ["\ufffd", ["\ufffd", 1]], "pair": "\U0001f600"}
