"""OpenTelemetry traces of runs, read back from the SDK's in-memory exporter (fast; Phoenix has its own test).

Each test gives the agent its own TracerProvider; the process-wide global provider is never set here, so the
tests do not leak into each other. What happens without any configuration (no import, no spans) is checked
in a fresh interpreter.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed: pip install -e '.[otel]'")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from agent import Agent, telemetry
from agent.models import ScriptedModel, completion_text, tool_call_text

REPO = Path(__file__).resolve().parents[2]


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def divide(a: float, b: float) -> float:
    """Divide a by b."""
    return a / b


async def nap(seconds: float) -> str:
    """Sleep for a while."""
    await asyncio.sleep(seconds)
    return "rested"


async def current_span_name() -> str:
    """Which span is current while this tool runs (spans a tool opens nest under it)."""
    span = trace.get_current_span()
    name = getattr(span, "name", "")
    return f"{name} {span.get_span_context().span_id:016x}"


def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def by_name(spans: tuple[ReadableSpan, ...] | list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def children(spans: Any, parent: ReadableSpan) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == parent.context.span_id]


TWO_CALLS = completion_text(
    "I add first, and try the division at the same time.",
    tool_call_text("add", {"a": 2, "b": 3}),
    tool_call_text("divide", {"a": 1, "b": 0}),
)
ANSWER = completion_text("2 + 3 is 5; the division failed.", content="5")


def test_span_tree_names_and_attributes() -> None:
    provider, exporter = traced()
    model = ScriptedModel([TWO_CALLS, ANSWER])
    result = Agent(model, [add, divide], tracer_provider=provider).run_sync("What is 2 + 3?")
    assert result.answer == "5"
    spans = exporter.get_finished_spans()
    assert sorted(s.name for s in spans) == sorted(
        [
            "invoke_agent",
            "step 1",
            "step 2",
            "text_completion scripted",
            "text_completion scripted",
            "execute_tool add",
            "execute_tool divide",
        ]
    )
    (run,) = by_name(spans, "invoke_agent")
    assert run.parent is None
    assert len({s.context.trace_id for s in spans}) == 1
    steps = sorted(children(spans, run), key=lambda s: s.name)
    assert [s.name for s in steps] == ["step 1", "step 2"]
    first, second = steps
    assert sorted(s.name for s in children(spans, first)) == [
        "execute_tool add",
        "execute_tool divide",
        "text_completion scripted",
    ]
    assert [s.name for s in children(spans, second)] == ["text_completion scripted"]

    run_attributes = dict(run.attributes or {})
    assert run_attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run_attributes["gen_ai.provider.name"] == "qwq_agent.scripted"
    assert run_attributes["gen_ai.request.model"] == "scripted"
    assert run_attributes["qwq_agent.stop_reason"] == "final_answer"
    assert run_attributes["qwq_agent.steps"] == 2
    assert run_attributes["qwq_agent.tool_calls"] == 2
    assert run_attributes["qwq_agent.usage.input_tokens"] == result.usage.prompt_tokens
    assert run_attributes["qwq_agent.usage.output_tokens"] == result.usage.completion_tokens
    assert run.status.status_code is StatusCode.UNSET

    # token usage per model request, as the backend reported it (ScriptedModel counts characters)
    model_spans = sorted(by_name(spans, "text_completion scripted"), key=lambda s: s.start_time or 0)
    for span, request in zip(model_spans, model.requests, strict=True):
        attributes = dict(span.attributes or {})
        assert attributes["gen_ai.operation.name"] == "text_completion"
        assert attributes["gen_ai.usage.input_tokens"] == sum(len(str(m.content)) for m in request.messages)
        assert attributes["gen_ai.response.finish_reasons"] == ("stop",)
        assert attributes["gen_ai.request.stream"] is True
        assert span.kind is trace.SpanKind.INTERNAL  # in-process: no server between
    assert [dict(s.attributes or {})["gen_ai.usage.output_tokens"] for s in model_spans] == [
        len(TWO_CALLS),
        len(ANSWER),
    ]
    assert sum(dict(s.attributes or {})["gen_ai.usage.input_tokens"] for s in model_spans) == (
        result.usage.prompt_tokens
    )

    (ok,) = by_name(spans, "execute_tool add")
    (failed,) = by_name(spans, "execute_tool divide")
    assert dict(ok.attributes or {}) == {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": "add",
        "gen_ai.tool.type": "function",
        "gen_ai.tool.call.id": "call_1_0",
        "gen_ai.tool.description": "Add two integers.",
    }
    assert ok.status.status_code is StatusCode.UNSET
    assert dict(failed.attributes or {})["gen_ai.tool.call.id"] == "call_1_1"
    assert dict(failed.attributes or {})["error.type"] == "tool_error"
    assert failed.status.status_code is StatusCode.ERROR
    assert "ZeroDivisionError" in (failed.status.description or "")


def test_content_is_left_out_unless_asked_for() -> None:
    secret = "the launch code is XYZZY-7431"
    provider, exporter = traced()
    Agent(ScriptedModel([TWO_CALLS, ANSWER]), [add, divide], tracer_provider=provider).run_sync(secret)
    spans = exporter.get_finished_spans()
    assert len(spans) == 7
    for span in spans:
        for key, value in (span.attributes or {}).items():
            assert "XYZZY" not in str(value), (span.name, key)
            assert key not in (
                "gen_ai.input.messages",
                "gen_ai.output.messages",
                "gen_ai.tool.call.arguments",
            )


def test_capture_content_records_prompts_completions_and_tool_io() -> None:
    provider, exporter = traced()
    agent = Agent(
        ScriptedModel([TWO_CALLS, ANSWER]), [add, divide], tracer_provider=provider, capture_content=True
    )
    agent.run_sync("What is 2 + 3?")
    spans = exporter.get_finished_spans()
    (run,) = by_name(spans, "invoke_agent")
    run_attributes = dict(run.attributes or {})
    assert json.loads(str(run_attributes["gen_ai.input.messages"])) == [
        {"role": "user", "parts": [{"type": "text", "content": "What is 2 + 3?"}]}
    ]
    assert "gen_ai.system_instructions" in run_attributes
    assert json.loads(str(run_attributes["gen_ai.output.messages"]))[0]["parts"] == [
        {"type": "text", "content": "5"}
    ]
    first = min(by_name(spans, "text_completion scripted"), key=lambda s: s.start_time or 0)
    output = json.loads(str(dict(first.attributes or {})["gen_ai.output.messages"]))
    assert [p["type"] for p in output[0]["parts"]] == ["reasoning", "tool_call", "tool_call"]
    assert output[0]["parts"][1] == {"type": "tool_call", "name": "add", "arguments": {"a": 2, "b": 3}}
    definitions = json.loads(str(dict(first.attributes or {})["gen_ai.tool.definitions"]))
    assert [d["function"]["name"] for d in definitions] == ["add", "divide"]
    (ok,) = by_name(spans, "execute_tool add")
    assert json.loads(str(dict(ok.attributes or {})["gen_ai.tool.call.arguments"])) == {"a": 2, "b": 3}
    assert dict(ok.attributes or {})["gen_ai.tool.call.result"] == "5"
    # the second request carries the whole history, observations as tool_call_response parts
    second = max(by_name(spans, "text_completion scripted"), key=lambda s: s.start_time or 0)
    history = json.loads(str(dict(second.attributes or {})["gen_ai.input.messages"]))
    responses = [p for m in history for p in m["parts"] if p["type"] == "tool_call_response"]
    assert [r["id"] for r in responses] == ["call_1_0", "call_1_1"]
    assert responses[0]["response"] == "5"


def test_a_budget_stop_is_an_error_status_with_the_stop_reason() -> None:
    provider, exporter = traced()
    agent = Agent(ScriptedModel([TWO_CALLS]), [add, divide], max_steps=1, tracer_provider=provider)
    assert agent.run_sync("What is 2 + 3?").stop_reason.value == "max_steps"
    (run,) = by_name(exporter.get_finished_spans(), "invoke_agent")
    assert run.status.status_code is StatusCode.ERROR
    assert dict(run.attributes or {})["error.type"] == "max_steps"
    assert dict(run.attributes or {})["qwq_agent.stop_reason"] == "max_steps"


def test_a_failing_model_ends_the_run_and_every_span_with_its_error() -> None:
    provider, exporter = traced()
    agent = Agent(ScriptedModel([TWO_CALLS]), [add, divide], max_steps=3, tracer_provider=provider)
    assert agent.run_sync("What is 2 + 3?").stop_reason.value == "model_error"  # the script ran out
    spans = exporter.get_finished_spans()
    (run,) = by_name(spans, "invoke_agent")
    assert dict(run.attributes or {})["error.type"] == "model_error"
    assert run.status.status_code is StatusCode.ERROR
    (step_two,) = by_name(spans, "step 2")
    (request,) = children(spans, step_two)
    assert dict(request.attributes or {})["error.type"] == "ScriptExhaustedError"
    assert all(s.end_time is not None for s in spans)


class _BrokenModel:
    """A backend with a bug: it raises something that is not a ModelError, which must leave the run."""

    async def stream(self, request: Any) -> AsyncIterator[Any]:
        raise RuntimeError("bug in the backend")
        yield  # an async generator


def test_an_exception_out_of_the_model_ends_every_span_with_it() -> None:
    provider, exporter = traced()
    agent = Agent(_BrokenModel(), [add], max_steps=3, tracer_provider=provider)
    with pytest.raises(RuntimeError, match="bug in the backend"):
        agent.run_sync("What is 2 + 3?")
    spans = exporter.get_finished_spans()
    (run,) = by_name(spans, "invoke_agent")
    assert dict(run.attributes or {})["error.type"] == "RuntimeError"
    assert run.status.status_code is StatusCode.ERROR
    assert [e.name for e in run.events] == ["exception"]
    assert all(s.end_time is not None for s in spans)


def test_a_timeout_inside_a_tool_closes_its_span_and_the_run() -> None:
    provider, exporter = traced()
    outputs = [completion_text("wait", tool_call_text("nap", {"seconds": 30}))]
    agent = Agent(ScriptedModel(outputs), [nap], timeout=0.5, tracer_provider=provider)
    assert agent.run_sync("rest").stop_reason.value == "timeout"
    spans = exporter.get_finished_spans()
    (tool,) = by_name(spans, "execute_tool nap")
    assert dict(tool.attributes or {})["error.type"] == "cancelled"
    (run,) = by_name(spans, "invoke_agent")
    assert dict(run.attributes or {})["error.type"] == "timeout"


def test_the_tool_span_is_current_while_the_tool_runs() -> None:
    provider, exporter = traced()
    outputs = [completion_text("look", tool_call_text("current_span_name")), ANSWER]
    result = Agent(ScriptedModel(outputs), [current_span_name], tracer_provider=provider).run_sync("which?")
    (tool,) = by_name(exporter.get_finished_spans(), "execute_tool current_span_name")
    observed = next(m.content for m in result.messages if getattr(m, "role", "") == "tool")
    assert observed == f"execute_tool current_span_name {tool.context.span_id:016x}"


def test_runs_in_a_workflow_nest_under_its_span() -> None:
    provider, exporter = traced()

    async def two_runs() -> None:
        agents = [
            Agent(ScriptedModel([TWO_CALLS, ANSWER]), [add, divide], tracer_provider=provider)
            for _ in range(2)
        ]
        await asyncio.gather(*(a.run(f"task {i}") for i, a in enumerate(agents)))

    with telemetry.workflow("batch", tracer_provider=provider, attributes={"qwq_agent.tasks": 2}) as parent:
        asyncio.run(two_runs())
        parent.set("qwq_agent.passed", 2)
    spans = exporter.get_finished_spans()
    (workflow,) = by_name(spans, "invoke_workflow batch")
    assert workflow.parent is None
    assert dict(workflow.attributes or {}) == {
        "gen_ai.operation.name": "invoke_workflow",
        "gen_ai.workflow.name": "batch",
        "qwq_agent.tasks": 2,
        "qwq_agent.passed": 2,
    }
    runs = by_name(spans, "invoke_agent")
    assert len(runs) == 2
    assert all(r.parent is not None and r.parent.span_id == workflow.context.span_id for r in runs)
    assert len({s.context.trace_id for s in spans}) == 1
    # each run's steps hang under that run, not under the other one running beside it
    for run in runs:
        assert sorted(s.name for s in children(spans, run)) == ["step 1", "step 2"]


def test_the_environment_endpoint_is_used_when_nothing_else_is_given(tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT alone turns tracing on, exported at exit (checked against a real OTLP/HTTP
    receiver in tests/agent/test_telemetry_phoenix.py); here: the provider it builds, in a fresh process."""
    program = (
        "from agent import telemetry\n"
        "provider = telemetry.resolve_provider()\n"
        "assert provider is telemetry.resolve_provider(), 'one provider per process'\n"
        "print(type(provider).__name__, provider.resource.attributes['service.name'])\n"
    )
    environment = {**_clean_environment(), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    done = _python(program, environment)
    assert done.stdout.split() == ["TracerProvider", "qwq-agent"]
    environment["OTEL_SDK_DISABLED"] = "true"
    assert (
        _python("from agent import telemetry; print(telemetry.enabled())", environment).stdout.strip()
        == "False"
    )


def test_an_endpoint_without_the_sdk_warns_and_runs_untraced() -> None:
    program = (
        "import sys, warnings\n"
        "sys.modules['opentelemetry'] = None  # as if the otel extra were not installed\n"
        "from agent import Agent\n"
        "from agent.models import ScriptedModel\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    print(Agent(ScriptedModel(['ok\\n</think>\\n\\ndone'])).run_sync('hi').answer)\n"
        "print(caught[0].category.__name__, caught[0].message)\n"
    )
    environment = {**_clean_environment(), "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    lines = _python(program, environment).stdout.splitlines()
    assert lines[0] == "done"
    assert lines[1].startswith("TelemetryWarning OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry")
    assert "pip install 'qwq-agent[otel]'" in lines[1]


def test_a_global_provider_set_by_the_application_is_used() -> None:
    program = (
        "from opentelemetry import trace\n"
        "from opentelemetry.sdk.trace import TracerProvider\n"
        "from opentelemetry.sdk.trace.export import SimpleSpanProcessor\n"
        "from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter\n"
        "exporter = InMemorySpanExporter()\n"
        "provider = TracerProvider()\n"
        "provider.add_span_processor(SimpleSpanProcessor(exporter))\n"
        "trace.set_tracer_provider(provider)\n"
        "from agent import Agent\n"
        "from agent.models import ScriptedModel\n"
        "Agent(ScriptedModel(['ok\\n</think>\\n\\ndone'])).run_sync('hi')\n"
        "print(sorted(s.name for s in exporter.get_finished_spans()))\n"
    )
    done = _python(program, _clean_environment())
    assert done.stdout.strip() == "['invoke_agent', 'step 1', 'text_completion scripted']"


def test_an_untraced_run_never_imports_opentelemetry() -> None:
    """Without the extra's configuration the loop pays for nothing: not even the import."""
    program = (
        "import sys\n"
        "from agent import Agent, telemetry\n"
        "from agent.models import ScriptedModel, completion_text, tool_call_text\n"
        "def add(a: int, b: int) -> int:\n"
        "    '''Add.'''\n"
        "    return a + b\n"
        "outputs = [completion_text('x', tool_call_text('add', {'a': 1, 'b': 2})), completion_text('y', content='3')]\n"
        "with telemetry.workflow('batch'):\n"
        "    result = Agent(ScriptedModel(outputs), [add]).run_sync('1 + 2?')\n"
        "assert result.answer == '3', result\n"
        "assert not telemetry.enabled()\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry') or m == 'agent._otel'))\n"
    )
    assert _python(program, _clean_environment()).stdout.strip() == "[]"


def _clean_environment() -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environment["PYTHONPATH"] = str(REPO)
    return environment


def _python(program: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        env=environment,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done
