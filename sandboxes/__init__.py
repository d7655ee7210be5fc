"""Hardened Docker sandboxes where model-written code runs.

`DockerSandbox` (one container per run: persistent Python namespace, shell, files), `SandboxPool` (warm
containers), `SandboxConfig` (every limit, safe defaults), `ExecResult`; `sandboxes.image` builds the image.
`clean_text` makes text from a sandbox safe to encode (lone surrogates become U+FFFD).
Importing this package does not import the Docker SDK or contact the engine.
"""

from sandboxes._protocol import clean_text
from sandboxes.config import ExecResult, SandboxConfig
from sandboxes.docker_sandbox import WORKSPACE, DockerSandbox
from sandboxes.errors import (
    DockerUnavailableError,
    ImageBuildError,
    ImageNotFoundError,
    SandboxError,
    SandboxFileError,
    SandboxStartError,
)
from sandboxes.image import DEFAULT_IMAGE
from sandboxes.pool import SandboxPool

__all__ = [
    "DEFAULT_IMAGE",
    "WORKSPACE",
    "DockerSandbox",
    "DockerUnavailableError",
    "ExecResult",
    "ImageBuildError",
    "ImageNotFoundError",
    "SandboxConfig",
    "SandboxError",
    "SandboxFileError",
    "SandboxPool",
    "SandboxStartError",
    "clean_text",
]
