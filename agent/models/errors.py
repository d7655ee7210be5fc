"""The errors every model backend raises, in one place so callers need not import a backend to catch them.

`ModelConfigurationError` is for the developer (missing dependency, bad path, wrong URL or model name);
`ModelUnavailableError` and `ModelStreamError` for the environment (a server down or cut off);
`ModelRequestError` for a request the server refused.
"""

from __future__ import annotations

from prompts.errors import ConfigurationError, RunError

__all__ = [
    "ContextLengthError",
    "ModelAuthenticationError",
    "ModelConfigurationError",
    "ModelError",
    "ModelRequestError",
    "ModelStreamError",
    "ModelUnavailableError",
]


class ModelError(RunError):
    """A model backend failed. Subclasses say whether the developer or the environment must act."""


class ModelConfigurationError(ModelError, ConfigurationError):
    """The backend is misconfigured (missing dependency, bad path, wrong URL or model name): fix and rerun."""


class ModelAuthenticationError(ModelConfigurationError):
    """The server refused the API key (401/403)."""


class ModelRequestError(ModelError):
    """The server rejected the request (a 4xx other than auth); `status` and the server's `detail` are kept."""

    def __init__(self, message: str, *, status: int = 0, detail: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail


class ContextLengthError(ModelRequestError):
    """The prompt (plus the completion budget) does not fit the model's context."""


class ModelUnavailableError(ModelError):
    """The server kept failing (429/5xx/connection errors) after every retry."""


class ModelStreamError(ModelError):
    """The response stream was cut off or was not the server-sent events it should be.

    `retryable` is True for transient failures after text had started to flow (a connection reset, a stall):
    the loop then runs the step again from its start.
    """

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable
