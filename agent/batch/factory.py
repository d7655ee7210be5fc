"""The agent factory the `batch` and `eval --ray` commands use: picklable, one model per process.

`AgentFactory` carries only plain data (the command line's model options, scripts, budgets), so Ray can ship
it to any node; the model is built where the task runs, from that node's view of the options (a GGUF path on
that node, a server URL), once per process and then shared by every task that process runs. Scripted tasks
(a script in the task's metadata, or `--scripted FILE`) each get a fresh `ScriptedModel` instead.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.batch.executor import PROCESS_STATS
from agent.batch.tasks import BatchTask

if TYPE_CHECKING:
    from agent.loop import Agent
    from agent.models.base import Model
    from tools.base import Tool

__all__ = ["MODEL_OPTIONS", "AgentFactory", "model_options", "script_for"]

# The `add_model_arguments` options that choose and configure a model (not budgets, not --scripted).
MODEL_OPTIONS = (
    "model",
    "base_url",
    "model_name",
    "api_key_env",
    "api_mode",
    "n_ctx",
    "n_gpu_layers",
    "threads",
    "max_tokens",
    "seed",
    "chat_format",
)

_models: dict[str, Model] = {}


def model_options(args: argparse.Namespace) -> dict[str, Any]:
    """The model-choosing options of a parsed command line, as plain data."""
    return {name: getattr(args, name, None) for name in MODEL_OPTIONS}


def script_for(task_id: str, metadata: dict[str, Any], scripts: Any) -> list[str] | None:
    """The completions a scripted task replays: its metadata's `script`, else `--scripted`'s entry, else None."""
    own = metadata.get("script")
    if own is not None:
        if not isinstance(own, list) or not all(isinstance(t, str) for t in own):
            raise ValueError(f"task {task_id!r}: metadata.script must be a list of completion texts")
        return list(own)
    if isinstance(scripts, dict):
        found = scripts.get(task_id)
        return list(found) if found is not None else None
    if isinstance(scripts, list):
        return list(scripts)
    return None


@dataclass(frozen=True)
class AgentFactory:
    """Builds the agent for one batch task (see the module docstring). Call `shared_model()` once up front
    in local mode to load an in-process model before any sandbox starts."""

    options: dict[str, Any] = field(default_factory=dict)
    scripts: list[str] | dict[str, list[str]] | None = None
    system_prompt: str | None = None
    max_steps: int = 20
    timeout: float | None = None
    thinking_budget: int | None = None
    token_budget: int | None = None
    keep_thinking: str = "none"

    def needs_model(self, tasks: list[BatchTask]) -> bool:
        """Whether some task has no script, so the named (or default) model is needed."""
        return any(script_for(t.id, t.metadata, self.scripts) is None for t in tasks)

    def shared_model(self) -> Model:
        """The model the options name, built once per process (an in-process model is loaded once here)."""
        key = json.dumps(self.options, sort_keys=True, default=str)
        model = _models.get(key)
        if model is None:
            from agent.cli.common import build_model

            args = argparse.Namespace(**{**dict.fromkeys(MODEL_OPTIONS), **self.options, "scripted": None})
            model = build_model(args)
            load = getattr(model, "load", None)
            if load is not None:
                load()  # once per process, before the first task's sandbox work
            _models[key] = model
            PROCESS_STATS["models_built"] += 1
        return model

    def model_for(self, task_id: str, metadata: dict[str, Any] | None = None) -> Model:
        """A fresh `ScriptedModel` for a scripted task, else the process's shared model."""
        script = script_for(task_id, metadata or {}, self.scripts)
        if script is not None:
            from agent.models import ScriptedModel

            return ScriptedModel(script)
        return self.shared_model()

    def __call__(self, task: BatchTask, tools: list[Tool[..., Any]]) -> Agent:
        from agent.loop import Agent

        return Agent(
            self.model_for(task.id, task.metadata),
            tools,
            system_prompt=self.system_prompt,
            max_steps=self.max_steps,
            timeout=self.timeout,
            thinking_budget=self.thinking_budget,
            token_budget=self.token_budget,
            keep_thinking="current_task" if self.keep_thinking == "current_task" else "none",
        )
