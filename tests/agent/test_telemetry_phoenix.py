"""Traces in a real trace UI: Arize Phoenix started on 127.0.0.1, spans exported to it over OTLP/HTTP and read
back through its REST API.

Phoenix pins its own web stack, so it lives in a venv of its own (`.ci/install_phoenix.sh`); the test finds
its python at $QWQ_AGENT_PHOENIX_PYTHON, else in the venv $QWQ_AGENT_PHOENIX_VENV (default /work/venvs/phoenix),
and is skipped, saying how to install it, when there is none. Phoenix runs with its working directory in a temporary folder, its own
telemetry and every external fetch switched off, and is stopped at the end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed: pip install -e '.[otel]'")

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from agent import Agent
from agent.models import ScriptedModel, completion_text, tool_call_text

REPO = Path(__file__).resolve().parents[2]
PHOENIX_PYTHON = os.environ.get("QWQ_AGENT_PHOENIX_PYTHON") or str(
    Path(os.environ.get("QWQ_AGENT_PHOENIX_VENV", "/work/venvs/phoenix")) / "bin" / "python"
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(PHOENIX_PYTHON).is_file(),
        reason=f"no Phoenix at {PHOENIX_PYTHON}: run .ci/install_phoenix.sh (or set QWQ_AGENT_PHOENIX_PYTHON)",
    ),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def phoenix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Phoenix server on 127.0.0.1 for this module; yields its base URL."""
    home = tmp_path_factory.mktemp("phoenix")
    port, grpc_port = _free_port(), _free_port()
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_WORKING_DIR": str(home / "data"),
        "PHOENIX_TELEMETRY_ENABLED": "false",
        "PHOENIX_ALLOW_EXTERNAL_RESOURCES": "false",
    }
    log = (home / "phoenix.log").open("wb")
    process = subprocess.Popen(
        [PHOENIX_PYTHON, "-m", "phoenix.server.main", "serve"],
        cwd=home,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # first start creates its database: ~20 s here, more on a busy CI
        while True:
            if process.poll() is not None:
                pytest.fail(f"Phoenix exited with {process.returncode}: {_tail(home / 'phoenix.log')}")
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"Phoenix did not answer within 240 s: {_tail(home / 'phoenix.log')}")
            time.sleep(0.5)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:]


def _spans(base: str, trace_id: str, expected: int) -> list[dict[str, Any]]:
    """The spans of one trace as Phoenix stores them; Phoenix ingests in the background, so wait for all."""
    deadline = time.monotonic() + 60
    while True:
        response = httpx.get(
            f"{base}/v1/projects/default/spans", params={"trace_id": trace_id, "limit": 1000}, timeout=10
        )
        response.raise_for_status()
        spans: list[dict[str, Any]] = response.json()["data"]
        if len(spans) >= expected or time.monotonic() > deadline:
            return spans
        time.sleep(0.5)


def _children(spans: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in spans if s["parent_id"] == parent["context"]["span_id"]]


def word_count(text: str) -> int:
    """Count the words of a text."""
    return len(text.split())


def reverse_words(text: str) -> str:
    """Reverse the order of the words of a text."""
    return " ".join(reversed(text.split()))


def lookup(key: str) -> str:
    """Look a key up in a small table."""
    table = {"alpha": "first", "omega": "last"}
    if key not in table:
        raise KeyError(f"no entry {key!r}; known: {', '.join(table)}")
    return table[key]


OUTPUTS = [
    completion_text(
        "Count and reverse at once.",
        tool_call_text("word_count", {"text": "to be or not to be"}),
        tool_call_text("reverse_words", {"text": "to be or not to be"}),
    ),
    completion_text("Now the table.", tool_call_text("lookup", {"key": "beta"})),
    completion_text("beta is missing; alpha then.", tool_call_text("lookup", {"key": "alpha"})),
    completion_text("All known.", content="6 words; reversed: be to not or be to; alpha is first."),
]


def test_a_run_reads_back_from_phoenix_as_a_tree_with_its_attributes(phoenix: str, tmp_path: Path) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "qwq-agent-tests"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{phoenix}/v1/traces")))
    model = ScriptedModel(OUTPUTS)
    agent = Agent(
        model,
        [word_count, reverse_words, lookup],
        tracer_provider=provider,
        capture_content=True,
        transcript_dir=tmp_path,  # the transcript's name is the run id, which the run span carries
    )
    result = agent.run_sync("Count the words of 'to be or not to be', reverse them, and look up alpha.")
    assert result.stop_reason.value == "final_answer"
    provider.force_flush()
    provider.shutdown()

    assert result.transcript_path is not None
    run_id = result.transcript_path.stem
    deadline = time.monotonic() + 60
    while True:
        listing = httpx.get(
            f"{phoenix}/v1/projects/default/spans", params={"name": "invoke_agent", "limit": 1000}, timeout=10
        ).json()["data"]
        runs = [s for s in listing if s["attributes"].get("gen_ai.conversation.id") == run_id]
        if runs or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(runs) == 1, listing
    (run,) = runs
    # 1 run + 4 steps + 4 model requests + 4 tool calls
    spans = _spans(phoenix, run["context"]["trace_id"], 13)
    assert len(spans) == 13, [s["name"] for s in spans]

    # the tree: run -> steps -> model request and tool calls
    assert run["parent_id"] is None
    assert run["span_kind"] == "AGENT"  # Phoenix read gen_ai.operation.name=invoke_agent
    steps = sorted(_children(spans, run), key=lambda s: s["attributes"]["qwq_agent.step"])
    assert [s["name"] for s in steps] == ["step 1", "step 2", "step 3", "step 4"]
    assert all(s["span_kind"] == "CHAIN" for s in steps)
    expected_tools = [["reverse_words", "word_count"], ["lookup"], ["lookup"], []]
    for step, tools in zip(steps, expected_tools, strict=True):
        below = _children(spans, step)
        llm = [s for s in below if s["span_kind"] == "LLM"]
        calls = [s for s in below if s["span_kind"] == "TOOL"]
        assert [s["name"] for s in llm] == ["text_completion scripted"]
        assert sorted(s["attributes"]["gen_ai.tool.name"] for s in calls) == tools
        assert all(s["name"] == f"execute_tool {s['attributes']['gen_ai.tool.name']}" for s in calls)

    # token counts per model request, as sent and as Phoenix derived them for its own views
    requests = sorted((s for s in spans if s["span_kind"] == "LLM"), key=lambda s: s["start_time"])
    for span, request, output in zip(requests, model.requests, OUTPUTS, strict=True):
        attributes = span["attributes"]
        prompt = sum(len(str(m.content)) for m in request.messages)
        assert attributes["gen_ai.usage.input_tokens"] == prompt
        assert attributes["gen_ai.usage.output_tokens"] == len(output)
        assert attributes["llm.token_count.prompt"] == prompt
        assert attributes["llm.token_count.total"] == prompt + len(output)
        assert attributes["gen_ai.operation.name"] == "text_completion"
        assert attributes["gen_ai.provider.name"] == "qwq_agent.scripted"
    assert sum(s["attributes"]["gen_ai.usage.input_tokens"] for s in requests) == result.usage.prompt_tokens
    assert sum(s["attributes"]["gen_ai.usage.output_tokens"] for s in requests) == (
        result.usage.completion_tokens
    )
    assert run["attributes"]["qwq_agent.usage.input_tokens"] == result.usage.prompt_tokens
    assert run["attributes"]["qwq_agent.stop_reason"] == "final_answer"
    assert run["attributes"]["qwq_agent.steps"] == 4
    assert run["status_code"] == "UNSET"

    # call ids, errors as status, content (captured here on purpose)
    calls = {s["attributes"]["gen_ai.tool.call.id"]: s for s in spans if s["span_kind"] == "TOOL"}
    assert sorted(calls) == ["call_1_0", "call_1_1", "call_2_0", "call_3_0"]
    assert calls["call_2_0"]["status_code"] == "ERROR"
    assert calls["call_2_0"]["attributes"]["error.type"] == "tool_error"
    assert "KeyError" in calls["call_2_0"]["status_message"]
    assert calls["call_3_0"]["status_code"] == "UNSET"
    assert calls["call_3_0"]["attributes"]["gen_ai.tool.call.result"] == "first"
    assert json.loads(calls["call_1_0"]["attributes"]["gen_ai.tool.call.arguments"]) == {
        "text": "to be or not to be"
    }
    last = json.loads(requests[-1]["attributes"]["gen_ai.output.messages"])
    assert last[0]["parts"][-1] == {"type": "text", "content": result.answer}


def test_runs_traced_from_the_environment_nest_under_one_workflow_span(phoenix: str, tmp_path: Path) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT alone, as `eval` and `batch` use it: the spans reach Phoenix by the time
    the process has exited, and both runs hang under the one workflow span."""
    marker = uuid.uuid4().hex
    program = (
        "import asyncio\n"
        "from agent import Agent, telemetry\n"
        "from agent.models import ScriptedModel, completion_text, tool_call_text\n"
        "def word_count(text: str) -> int:\n"
        "    '''Count words.'''\n"
        "    return len(text.split())\n"
        "def outputs():\n"
        "    return [completion_text('count', tool_call_text('word_count', {'text': 'a b c'})),\n"
        "            completion_text('done', content='3')]\n"
        "async def both():\n"
        "    await asyncio.gather(*(Agent(ScriptedModel(outputs()), [word_count]).run(f'task {i}') for i in range(2)))\n"
        f"with telemetry.workflow('batch', attributes={{'qwq_agent.test_marker': '{marker}'}}):\n"
        "    asyncio.run(both())\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environment.update(
        {
            "PYTHONPATH": str(REPO),
            "OTEL_EXPORTER_OTLP_ENDPOINT": phoenix,
            "OTEL_SERVICE_NAME": "qwq-agent-env",
        }
    )
    done = subprocess.run(
        [sys.executable, "-c", program],
        env=environment,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    deadline = time.monotonic() + 60
    while True:
        workflows = [
            s
            for s in httpx.get(
                f"{phoenix}/v1/projects/default/spans",
                params={"name": "invoke_workflow batch", "limit": 1000},
                timeout=10,
            ).json()["data"]
            if s["attributes"].get("qwq_agent.test_marker") == marker
        ]
        if workflows or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(workflows) == 1
    (workflow,) = workflows
    assert workflow["parent_id"] is None
    assert workflow["attributes"]["gen_ai.operation.name"] == "invoke_workflow"
    # workflow + 2 x (run + 2 steps + 2 requests + 1 call)
    spans = _spans(phoenix, workflow["context"]["trace_id"], 13)
    assert len(spans) == 13
    runs = _children(spans, workflow)
    assert [r["name"] for r in runs] == ["invoke_agent", "invoke_agent"]
    for run in runs:
        steps = _children(spans, run)
        assert sorted(s["name"] for s in steps) == ["step 1", "step 2"]
        below = [s for step in steps for s in _children(spans, step)]
        assert sorted(s["name"] for s in below) == [
            "execute_tool word_count",
            "text_completion scripted",
            "text_completion scripted",
        ]
