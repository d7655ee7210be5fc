"""End to end: the Agent loop on the tiny GGUF, in-process and through llama-cpp-python's server.

The model's text is noise; grammar-constrained decoding makes its calls valid, so each step's call is
validated, executed (in the Docker sandbox when the engine and image are present) and observed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from agent import Agent
from agent.messages import AssistantMessage, ToolMessage
from agent.models import LlamaCppModel, OpenAICompatModel
from tools import tool

pytestmark = [pytest.mark.llama, pytest.mark.slow]

executed: list[dict[str, Any]] = []


@tool
def record(note: str, count: int = 1) -> str:
    """Write a note down.

    Args:
        note: the note
        count: how many copies
    """
    executed.append({"note": note, "count": count})
    return f"noted {len(note)} characters x{count}"


def check_run(result: Any, steps: int) -> tuple[list[AssistantMessage], list[ToolMessage]]:
    assistants = [m for m in result.messages if isinstance(m, AssistantMessage)]
    observations = [m for m in result.messages if isinstance(m, ToolMessage)]
    assert result.steps == steps
    assert len(assistants) == steps
    for message in assistants:
        assert message.tool_calls, message.raw  # every turn called (tool_choice="required")
    calls = sum(len(m.tool_calls) for m in assistants)
    assert len(observations) == calls
    return assistants, observations


async def test_agent_multi_step_run_in_process(make_llama: Callable[..., LlamaCppModel]) -> None:
    executed.clear()
    model = make_llama(max_tokens=160)
    agent = Agent(
        model=model,
        tools=[record],
        tool_choice="required",
        max_steps=3,
        thinking_budget=4,
        keep_thinking="current_task",
    )
    result = await agent.run("Write three notes.")
    _, observations = check_run(result, 3)
    assert result.stop_reason == "max_steps"
    assert executed, "the validated calls ran"
    assert all(not o.is_error for o in observations), [o.content for o in observations]
    assert all(o.content.startswith("noted ") for o in observations)
    # Steps after the first reuse the KV cache: only the new tokens are evaluated.
    assert result.usage.cached_tokens > 0


async def test_agent_with_sandbox_python_tool(make_llama: Callable[..., LlamaCppModel]) -> None:
    try:
        from sandboxes import DEFAULT_IMAGE, DockerSandbox
        from sandboxes._engine import get_client
        from sandboxes.image import image_exists
        from tools.code import code_tools

        client = get_client()
        if not image_exists(DEFAULT_IMAGE, client=client):
            pytest.skip(f"the sandbox image {DEFAULT_IMAGE} is not built: qwq-agent sandbox build")
    except Exception as exc:
        pytest.skip(f"Docker engine unavailable: {exc}")
    model = make_llama(max_tokens=160)
    async with DockerSandbox() as sandbox:
        python = next(t for t in code_tools(sandbox, timeout=20) if t.name == "python")
        agent = Agent(model=model, tools=[python], tool_choice="required", max_steps=2, thinking_budget=3)
        result = await agent.run("Compute something.")
    _, observations = check_run(result, 2)
    # Noise code mostly fails to parse; what matters is that the sandbox ran it and the model saw the result.
    assert all(o.content for o in observations)


async def test_agent_through_llama_server(llama_server: str) -> None:
    executed.clear()
    model = OpenAICompatModel(
        llama_server, model="tiny", constrain="grammar", max_tokens=120, max_string_length=12, seed=2
    )
    agent = Agent(model=model, tools=[record], tool_choice="required", max_steps=2, thinking_budget=4)
    result = await agent.run("Write two notes.")
    _, observations = check_run(result, 2)
    assert executed
    assert all(not o.is_error for o in observations)
