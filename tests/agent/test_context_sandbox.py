"""Masked results are saved in the sandbox, and the model reads them back with read_file (real Docker)."""

from __future__ import annotations

import pytest

from agent import Agent, StopReason
from agent.context import OBSERVATIONS_DIR, ContextPolicy
from agent.messages import ToolMessage
from agent.models import ScriptedModel, completion_text, tool_call_text
from agent.testing import long_run_script, page

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def sandbox_image() -> str:
    try:
        from sandboxes import DEFAULT_IMAGE
        from sandboxes._engine import get_client
        from sandboxes.image import image_exists

        if not image_exists(DEFAULT_IMAGE, client=get_client()):
            pytest.skip(f"the sandbox image {DEFAULT_IMAGE} is not built: qwq-agent sandbox build")
    except Exception as exc:
        pytest.skip(f"Docker engine unavailable: {exc}")
    return DEFAULT_IMAGE


async def test_masked_results_can_be_read_back_from_the_sandbox(sandbox_image: str) -> None:
    from sandboxes import DockerSandbox
    from tools.code import code_tools

    path = f"{OBSERVATIONS_DIR}/call_1_0.txt"
    script = long_run_script(40)[:-1]
    script += [
        completion_text("Page 1 again.", tool_call_text("read_file", {"path": path})),
        completion_text("Done.", content="All pages read."),
    ]
    async with DockerSandbox(sandbox_image) as sandbox:
        tools = [*code_tools(sandbox), page]
        model = ScriptedModel(script, n_ctx=4096)
        agent = Agent(
            model, tools, max_steps=41, max_tokens_per_step=256, context=ContextPolicy(sandbox=sandbox)
        )
        result = await agent.run("Read the report, page by page.")
        saved = await sandbox.aread_file(f"{OBSERVATIONS_DIR}/call_7_0.txt")
    assert result.stop_reason is StopReason.FINAL_ANSWER, result.detail
    read_back = [m for m in result.messages if isinstance(m, ToolMessage) and m.name == "read_file"]
    assert read_back[0].content == page(1)
    assert saved.decode() == page(7)
    # The model was told where to look: the note that replaced page 1 names the file.
    shown = [m for r in model.requests for m in r.messages if isinstance(m, ToolMessage)]
    assert any(m.tool_call_id == "call_1_0" and path in m.content for m in shown)
