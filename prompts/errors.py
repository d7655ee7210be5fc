"""The one error family `prompts` raises: a template the developer must fix."""

from __future__ import annotations

__all__ = ["PromptTemplateError"]


class PromptTemplateError(ValueError):
    """A prompt template cannot be used as asked.

    Raised for an unknown template name (the message lists the available ones), a missing or unexpected
    template variable, a chat template that does not compile, or one that calls `raise_exception`. It is a
    `ValueError` so that callers who only want to tell "bad input" from "bug" need not import anything.
    """
