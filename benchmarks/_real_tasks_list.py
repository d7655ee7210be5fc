"""The task list of `benchmarks/real_tasks.py`, shared with the peer runner (`_real_tasks_peers.py`).

Standard library only: the peer runner imports this file from its own virtual environment, where this
project is not installed. Every task needs code to be solved reliably (big numbers, hashes, dates, counting,
a file), and each has a checker that reads the final answer the way a person would: the expected value must
appear in it. "Solved" additionally needs a tool call that actually ran; the runners count those.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["TASKS", "Task", "check", "task_by_id"]


@dataclass(frozen=True)
class Task:
    id: str
    kind: str
    prompt: str
    checker: Callable[[str], bool]


def _numbers(text: str) -> set[str]:
    """Integers written in `text`, thousands separators removed (`1,234` and `1 234` both read 1234)."""
    found = set()
    for match in re.finditer(r"-?\d[\d,_]*(?:\.\d+)?", text):
        raw = match.group(0).replace(",", "").replace("_", "").rstrip(".")
        if raw.endswith(".0"):
            raw = raw[:-2]
        found.add(raw)
    return found


def _has_number(expected: int) -> Callable[[str], bool]:
    return lambda answer: str(expected) in _numbers(answer)


def _has_word(expected: str) -> Callable[[str], bool]:
    return lambda answer: re.search(rf"\b{re.escape(expected)}\b", answer, re.IGNORECASE) is not None


def _has_all(*checks: Callable[[str], bool]) -> Callable[[str], bool]:
    return lambda answer: all(c(answer) for c in checks)


def _collatz_steps(n: int) -> int:
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def _primes_below(n: int) -> list[int]:
    sieve = [True] * n
    sieve[0:2] = [False, False]
    for i in range(2, int(n**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = [False] * len(sieve[i * i :: i])
    return [i for i, p in enumerate(sieve) if p]


_SORTED = "".join(sorted("benchmarkingagents"))
_SHA = hashlib.sha256(b"qwq-agent").hexdigest()[:8]
_DAYS = (datetime.date(2025, 11, 3) - datetime.date(2024, 2, 15)).days

TASKS: tuple[Task, ...] = (  # kinds alternate, so a run cut short still covers each kind
    Task(
        "modpow",
        "arithmetic",
        "Use Python to compute 7**222 modulo 1000003. Reply with the number.",
        _has_number(pow(7, 222, 1000003)),
    ),
    Task(
        "file_roundtrip",
        "file",
        "Use Python to write the numbers 1 to 30, one per line, to a file named numbers.txt. Then read the "
        "file back and compute the sum of the numbers on it that are divisible by 3. Reply with that sum.",
        _has_number(sum(n for n in range(1, 31) if n % 3 == 0)),
    ),
    Task(
        "two_step",
        "two-step",
        "First use Python to compute the 25th Fibonacci number (F1 = F2 = 1). Then, in a second step, use "
        "Python to compute the sum of the decimal digits of that number squared. Reply with that sum.",
        _has_number(sum(int(d) for d in str(75025**2))),
    ),
    Task(
        "date_diff",
        "date",
        "Use Python to compute how many days there are from 2024-02-15 to 2025-11-03. Reply with the number.",
        _has_number(_DAYS),
    ),
    Task(
        "sort_letters",
        "string",
        "Use Python to remove the space from the string 'benchmarking agents' and sort its letters "
        "alphabetically. Reply with the resulting string.",
        _has_word(_SORTED),
    ),
    Task(
        "primes",
        "arithmetic",
        "Use Python to compute the sum of all prime numbers below 5000. Reply with the number.",
        _has_number(sum(_primes_below(5000))),
    ),
    Task(
        "sha256",
        "string",
        "Use Python to compute the SHA-256 hex digest of the UTF-8 string 'qwq-agent'. Reply with its first "
        "8 hex characters.",
        _has_word(_SHA),
    ),
    Task(
        "word_count",
        "string",
        "Use Python to find which word occurs most often in the text 'to be or not to be that is the "
        "question to ask or not' and how many times. Reply with the word and the count.",
        _has_all(_has_word("to"), _has_number(3)),
    ),
    Task(
        "weekday",
        "date",
        "Use Python to find the day of the week of 2031-03-17. Reply with the weekday's English name.",
        _has_word(datetime.date(2031, 3, 17).strftime("%A")),
    ),
    Task(
        "collatz",
        "arithmetic",
        "Use Python to count how many steps the Collatz sequence starting at 97 takes to reach 1 "
        "(one step: n -> n/2 if n is even, else 3n+1). Reply with the number.",
        _has_number(_collatz_steps(97)),
    ),
)


def task_by_id(task_id: str) -> Task:
    for task in TASKS:
        if task.id == task_id:
            return task
    raise KeyError(f"no task {task_id!r}; known: {', '.join(t.id for t in TASKS)}")


def check(task_id: str, answer: str) -> bool:
    return task_by_id(task_id).checker(answer or "")
