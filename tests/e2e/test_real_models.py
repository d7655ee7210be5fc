"""Real models as agents: Qwen2.5-Coder-0.5B and -1.5B (Q4_K_M GGUFs) through the CLI and the library.

Everything is real: llama.cpp in-process on the CPU, the models' own chat template, the hardened Docker
sandbox. The tasks are small and checkable: arithmetic that must be computed with the python tool, a file
written and read back, a two-step computation. Outcomes are asserted at fixed seeds and sampling settings
(each test makes its own model, so the per-call seeds do not depend on test order).

`python scripts/fetch_test_models.py qwen2.5-coder-0.5b qwen2.5-coder-1.5b` fetches the models. The tests
marked `smoke` (the 0.5B through the CLI and the library, `models check`, `render_prompt`) run by default
and in CI; `python -m pytest -m real_model` runs the whole tier: the 1.5B too, and the success rates over
every task and seed (`test_success_rate`, printed and kept as properties in --junitxml).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent import Agent, RunResult, StopReason
from agent.messages import ToolMessage, UserMessage
from agent.models import LlamaCppModel, SamplingConfig
from sandboxes import DockerSandbox
from tools.code import code_tools

REPO = Path(__file__).resolve().parents[2]
SMALL = "qwen2.5-coder-0.5b"
LARGER = "qwen2.5-coder-1.5b"
# Two threads, as on the CI machines; QWQ_AGENT_TEST_THREADS=1 on a busy machine (llama.cpp's CPU results
# do not depend on the thread count, which only splits the rows of each product).
THREADS = int(os.environ.get("QWQ_AGENT_TEST_THREADS", "2"))
# Low temperature, not greedy: stable outcomes at a fixed seed without the loops greedy decoding falls into.
SAMPLING = SamplingConfig(temperature=0.2, top_p=0.9, top_k=20)

pytestmark = [pytest.mark.real_model, pytest.mark.llama, pytest.mark.slow, pytest.mark.timeout(1200)]


@dataclass(frozen=True)
class Task:
    """A small task, what a correct answer contains, and the tools offered."""

    key: str
    text: str
    expected: str
    tools: tuple[str, ...] = ("python",)
    file: tuple[str, str] | None = None  # (path, content) the sandbox must hold afterwards


TASKS = [
    Task("multiply", "What is 123456789 * 987654321?", "121932631112635269"),
    Task("primes", "How many prime numbers are there below 1000?", "168"),
    Task("squares", "What is the sum of the squares of the integers from 1 to 50?", "42925"),
    Task(
        "file",
        "Write the text 'hello sandbox' to the file note.txt, then read the file back and tell me what it says.",
        "hello sandbox",
        ("write_file", "read_file"),
        ("note.txt", "hello sandbox"),
    ),
    Task(
        "two_step",
        "Use python to compute 2**20. Then use python again to add 12345 to that result. "
        "What is the final number?",
        "1060921",
    ),
]
BY_KEY = {t.key: t for t in TASKS}


@dataclass
class Outcome:
    solved: bool
    result: RunResult
    executed: int  # tool results that came back without error
    file_ok: bool | None


def executed_calls(result: RunResult) -> int:
    return sum(1 for m in result.messages if isinstance(m, ToolMessage) and not m.is_error)


def answer_holds(answer: str, expected: str) -> bool:
    return expected.lower() in answer.replace(",", "").replace("_", "").lower()


@pytest.fixture
def make_model(real_gguf: Callable[[str], Path]) -> Iterator[Callable[..., LlamaCppModel]]:
    """A fresh LlamaCppModel per call (fresh per-call seeds); all closed at the end of the test."""
    made: list[LlamaCppModel] = []

    def make(name: str, seed: int) -> LlamaCppModel:
        model = LlamaCppModel(
            real_gguf(name),
            n_ctx=8192,
            n_threads=THREADS,
            n_gpu_layers=0,
            seed=seed,
            max_tokens=384,
            sampling=SAMPLING,
        )
        made.append(model)
        return model

    yield make
    for model in made:
        model.close()


@pytest.fixture
async def sandbox() -> AsyncIterator[DockerSandbox]:
    async with DockerSandbox() as sb:
        yield sb


async def run_task(model: LlamaCppModel, sandbox: DockerSandbox, task: Task) -> Outcome:
    tools = [t for t in code_tools(sandbox) if t.name in task.tools]
    result = await Agent(model, tools, max_steps=6, max_tokens_per_step=384).run(task.text)
    file_ok: bool | None = None
    if task.file is not None:
        path, content = task.file
        try:
            file_ok = (await sandbox.aread_file(path)).decode().strip() == content
        except Exception:
            file_ok = False
    executed = executed_calls(result)
    solved = (
        result.stop_reason is StopReason.FINAL_ANSWER
        and executed > 0
        and answer_holds(result.answer, task.expected)
        and file_ok is not False
    )
    return Outcome(solved, result, executed, file_ok)


def explain(outcome: Outcome) -> str:
    """What the model wrote, turn by turn: the failure message of a test that did not hold."""
    lines = [f"stop={outcome.result.stop_reason.value} answer={outcome.result.answer!r}"]
    lines += [
        f"{m.role}: {str(getattr(m, 'raw', None) or m.content)[:400]!r}" for m in outcome.result.messages[1:]
    ]
    return "\n".join(lines)


# -- the smoke subset (default run and CI) -------------------------------------------------------------------


@pytest.mark.smoke
def test_render_prompt_is_the_gguf_template(
    make_model: Callable[..., LlamaCppModel], real_gguf: Callable[[str], Path], chat_template_of: Any
) -> None:
    import jinja2

    model = make_model(SMALL, 0)
    messages = [UserMessage(content="What is 2 + 3?")]
    tools = [t for t in code_tools(DockerSandbox()) if t.name == "python"]
    env = jinja2.Environment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda v, indent=None: json.dumps(v, ensure_ascii=False, indent=indent)
    reference = env.from_string(chat_template_of(real_gguf(SMALL))).render(
        messages=[{"role": "user", "content": "What is 2 + 3?"}],
        tools=[t.to_openai() for t in tools],
        add_generation_prompt=True,
    )
    assert model.render_prompt(messages, tools) == reference
    assert model.chat_format.kind == "template"
    assert not model.chat_format.opens_thinking()


@pytest.mark.smoke
def test_llama_cpp_server_entry_point_serves_a_quantized_model(real_gguf: Callable[[str], Path]) -> None:
    """`python -m agent.models.llama_server`: llama-cpp-python's server, which itself dies on AMX CPUs on the
    first request with a quantized GGUF (measured: exit 139), answers here."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    root = f"http://127.0.0.1:{port}/v1"
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "agent.models.llama_server", "--model", str(real_gguf(SMALL))),
            *("--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", str(THREADS)),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(600):  # the server loads the model first
            assert server.poll() is None, f"the server exited with {server.returncode}"
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{root}/models", timeout=5).close()
                break
            time.sleep(0.5)
        body = {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8}
        request = urllib.request.Request(
            f"{root}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            reply = json.load(response)
        assert reply["choices"][0]["message"]["content"].strip()
        assert server.poll() is None, f"the server exited with {server.returncode}"
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.smoke
def test_models_check_reports_load_time_speed_and_format(real_gguf: Callable[[str], Path]) -> None:
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "agent.cli", "models", "check", "--model", str(real_gguf(SMALL))),
            *("--threads", str(THREADS), "--n-gpu-layers", "0", "--tokens", "16", "--json"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["architecture"] == "qwen2"
    assert report["chat_format"].startswith("template (the model's own template")
    assert "renders tools itself" in report["chat_format"]
    assert report["turn_opens_reasoning"] is False
    assert report["tags_split_into_several_tokens"] == "<think>, </think>"  # Qwen2.5 has no think token
    assert report["load_seconds"] > 0
    assert report["prompt_tokens_per_second"] > 0
    assert report["generation_tokens_per_second"] > 0
    assert report["extra_buffer_types"].startswith(("on", "off"))


@pytest.mark.smoke
@pytest.mark.docker
def test_cli_run_computes_with_python(real_gguf: Callable[[str], Path], tmp_path: Path) -> None:
    task = BY_KEY["multiply"]
    proc = subprocess.run(
        [
            *(sys.executable, "-m", "agent.cli", "run", task.text, "--model", str(real_gguf(SMALL))),
            *("--tools", "python", "--seed", "1", "--threads", str(THREADS), "--n-gpu-layers", "0"),
            *("--n-ctx", "8192", "--max-tokens", "384", "--max-steps", "3", "--quiet"),
            *("--transcript-dir", str(tmp_path)),
            # the library tests' sampling: at QwQ's defaults the 0.5B fell into repeating one line of its code
            # until the token cap, at this seed on a CPU with AMX (measured)
            *("--temperature", str(SAMPLING.temperature), "--top-p", str(SAMPLING.top_p)),
            *("--top-k", str(SAMPLING.top_k)),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=1100,
        check=False,
        env={**os.environ, "COLUMNS": "120"},
    )
    # 0: answered; 1: a budget stopped the run (the transcript says which). Either way the model's own call
    # ran in the sandbox and computed the product: what the framework owes a real model.
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    (transcript,) = tmp_path.glob("*.jsonl")
    records = [json.loads(line) for line in transcript.read_text().splitlines()]
    results = [
        m["content"]
        for r in records
        if r["type"] == "step"
        for m in r["messages"]
        if m["role"] == "tool" and m["name"] == "python" and not m.get("is_error")
    ]
    assert any(task.expected in r for r in results), results
    if proc.returncode == 0:
        assert answer_holds(proc.stdout, task.expected), proc.stdout


def results_of(outcome: Outcome, tool: str) -> list[str]:
    """What the tool calls named `tool` returned, in order, leaving out the ones that failed."""
    return [
        m.content
        for m in outcome.result.messages
        if isinstance(m, ToolMessage) and m.name == tool and not m.is_error
    ]


# In the smoke tests the framework's part is asserted strictly: the model's own calls ran in the sandbox
# and did the work. The final answer is checked whenever the run gave one; how often it does (and is
# right) is what `test_success_rate` measures.


@pytest.mark.smoke
@pytest.mark.docker
async def test_library_writes_a_file_and_reads_it_back(
    make_model: Callable[..., LlamaCppModel], sandbox: DockerSandbox
) -> None:
    task = BY_KEY["file"]
    outcome = await run_task(make_model(SMALL, 1), sandbox, task)
    assert outcome.file_ok, explain(outcome)
    if outcome.result.stop_reason is StopReason.FINAL_ANSWER:
        assert answer_holds(outcome.result.answer, task.expected), explain(outcome)


@pytest.mark.smoke
@pytest.mark.docker
async def test_library_two_step_task(
    make_model: Callable[..., LlamaCppModel], sandbox: DockerSandbox
) -> None:
    task = BY_KEY["two_step"]
    outcome = await run_task(make_model(SMALL, 1), sandbox, task)
    results = results_of(outcome, "python")
    assert any("1048576" in r or task.expected in r for r in results), explain(outcome)
    if outcome.result.stop_reason is StopReason.FINAL_ANSWER:
        assert answer_holds(outcome.result.answer, task.expected), explain(outcome)


@pytest.mark.docker
async def test_larger_model_computes_with_python(
    make_model: Callable[..., LlamaCppModel], sandbox: DockerSandbox
) -> None:
    task = BY_KEY["primes"]
    outcome = await run_task(make_model(LARGER, 1), sandbox, task)
    assert any(task.expected in r for r in results_of(outcome, "python")), explain(outcome)
    if outcome.result.stop_reason is StopReason.FINAL_ANSWER:
        assert answer_holds(outcome.result.answer, task.expected), explain(outcome)


# -- the whole tier: success rates ---------------------------------------------------------------------------

SEEDS = (1, 2, 3)
# The least solved over len(TASKS) * len(SEEDS) runs, as measured at these seeds (2026-12-02, AMX machine,
# llama-cpp-python 0.3.36): the 0.5B solved 6 of 15 (multiply and two_step at every seed; 0 of 15 before the
# answer reminder and the top-level `return` repair). The 1.5B's rate has not been measured at these seeds.
MIN_SOLVED = {SMALL: 6, LARGER: 0}


@pytest.mark.docker
@pytest.mark.parametrize("name", [SMALL, LARGER])
async def test_success_rate(
    name: str,
    make_model: Callable[..., LlamaCppModel],
    sandbox: DockerSandbox,
    record_property: Callable[[str, object], None],
) -> None:
    rows: list[dict[str, Any]] = []
    for seed in SEEDS:
        for task in TASKS:
            outcome = await run_task(make_model(name, seed), sandbox, task)
            rows.append(
                {
                    "task": task.key,
                    "seed": seed,
                    "solved": outcome.solved,
                    "tool_calls": outcome.result.tool_calls,
                    "steps": outcome.result.steps,
                    "completion_tokens": outcome.result.usage.completion_tokens,
                }
            )
            await sandbox.arun_shell("rm -f note.txt", timeout=10)
    solved = sum(r["solved"] for r in rows)
    record_property(f"{name}_solved", f"{solved}/{len(rows)}")
    record_property(f"{name}_runs", json.dumps(rows))
    print(f"\n{name}: solved {solved}/{len(rows)}")
    for row in rows:
        print(f"  {json.dumps(row)}")
    assert solved >= MIN_SOLVED[name], rows
