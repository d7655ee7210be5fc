"""Tool names a batch task may ask for; a module of its own so `qwq-agent batch --help` imports nothing else."""

from __future__ import annotations

__all__ = ["ALL_TOOLS", "DEFAULT_TOOLS", "SANDBOX_TOOLS"]

SANDBOX_TOOLS = ("python", "shell", "write_file", "read_file")
ALL_TOOLS = (*SANDBOX_TOOLS, "web_fetch")
DEFAULT_TOOLS = SANDBOX_TOOLS
"""Tools a task gets when it names none: the sandbox's (the web is opt-in for unattended batches)."""
