"""One error tree: every public exception of the four packages derives from QwqAgentError, in one family."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import agent.errors
from prompts.errors import ConfigurationError, QwqAgentError, RunError

PACKAGES = ("agent", "tools", "prompts", "sandboxes")


def public_exceptions() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if "._" in info.name or info.name.endswith(("__main__", "_otel")):
                continue  # private modules keep private signals (a runner frame, a retry)
            module = importlib.import_module(info.name)
            for name in getattr(module, "__all__", ()):
                value = getattr(module, name)
                if (
                    isinstance(value, type)
                    and issubclass(value, Exception)
                    and not issubclass(value, Warning)
                ):
                    if value in (QwqAgentError, ConfigurationError, RunError):
                        continue
                    found[f"{value.__module__}.{value.__qualname__}"] = value
    return found


def test_every_public_exception_has_the_one_root_and_a_family() -> None:
    exceptions = public_exceptions()
    assert len(exceptions) > 25
    for name, cls in exceptions.items():
        assert issubclass(cls, QwqAgentError), name
        assert issubclass(cls, ConfigurationError | RunError), name


def test_agent_errors_lists_the_whole_tree() -> None:
    listed = {getattr(agent.errors, n) for n in agent.errors.__all__}
    assert set(public_exceptions().values()) <= listed
    for name in agent.errors.__all__:
        assert name in agent.errors.__doc__, name


@pytest.mark.parametrize("name", ["ModelConfigurationError", "DockerUnavailableError", "ImageNotFoundError"])
def test_errors_the_user_must_fix_stay_in_their_layer_family(name: str) -> None:
    cls = getattr(agent.errors, name)
    assert issubclass(cls, ConfigurationError)
    assert issubclass(cls, agent.errors.ModelError | agent.errors.SandboxError)
