"""The root of every error qwq-agent raises, and the one error `prompts` raises itself.

The root lives here because `prompts` is the package every other one may import (the dependency rule
in docs/architecture.md); `agent.errors` draws the whole tree and re-exports it. Two families, by who must act:

* `ConfigurationError`: the user (or developer) must change something before running again: a path, a URL,
  a key, an option, a template, a missing engine or image. Messages say what to change or run.
* `RunError`: something failed while running. The model must fix some of these (bad arguments, an unknown
  tool: they become observations it reads); the environment caused the others (a server down, a sandbox lost).
"""

from __future__ import annotations

__all__ = ["ConfigurationError", "PromptTemplateError", "QwqAgentError", "RunError"]


class QwqAgentError(Exception):
    """Every error qwq-agent raises derives from this: `except QwqAgentError` catches all of them."""


class ConfigurationError(QwqAgentError):
    """The user must act: fix the configuration (path, URL, key, option, template, engine) and run again."""


class RunError(QwqAgentError):
    """The run failed at run time: the model must fix it (an observation), or the environment failed."""


class PromptTemplateError(ConfigurationError, ValueError):
    """A prompt template cannot be used as asked.

    Raised for an unknown template name (the message lists the available ones), a missing or unexpected
    template variable, a chat template that does not compile, or one that calls `raise_exception`. It is also
    a `ValueError` so that callers who only want to tell "bad input" from "bug" need not import anything.
    """
