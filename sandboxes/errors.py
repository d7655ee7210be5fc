"""Errors raised by the sandbox layer, in the two families of the house style.

`SandboxFileError` is for the model to fix (a path outside the workspace, a missing file): tools turn it into an
observation. The others are for the developer (no engine, no image, a broken build): their messages say what to run.
"""

from __future__ import annotations

from prompts.errors import ConfigurationError, RunError

__all__ = [
    "DockerUnavailableError",
    "ImageBuildError",
    "ImageNotFoundError",
    "SandboxError",
    "SandboxFileError",
    "SandboxStartError",
]


class SandboxError(RunError):
    """Base class of every error raised by `sandboxes` (those the user must fix are also `ConfigurationError`)."""


class DockerUnavailableError(SandboxError, ConfigurationError):
    """The Docker engine cannot be reached (not installed, not running, or no permission on its socket)."""


class ImageNotFoundError(SandboxError, ConfigurationError):
    """The sandbox image is not on the engine; `qwq-agent sandbox build` makes the default one."""


class ImageBuildError(SandboxError, ConfigurationError):
    """Building the sandbox image failed; the message carries the failing step and its output tail."""


class SandboxStartError(SandboxError):
    """A container was created but its runner never answered (a broken image or an overloaded engine)."""


class SandboxFileError(SandboxError):
    """A file operation the model asked for cannot be done (outside the workspace, missing, too large).

    `reason` names a refusal of the sandbox's own (`"bad_path"`, `"outside_workspace"`, `"not_a_file"`,
    `"too_large"`); None for errors of the file system ("No such file or directory"). `lost_cause` is set when
    the operation failed because the sandbox itself was lost (replaced or closed; the values of
    `ExecResult.lost_cause`), so a tool can tell the model that its files are gone.
    """

    def __init__(self, message: str, *, reason: str | None = None, lost_cause: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.lost_cause = lost_cause
