"""The optional config file: defaults for command-line options, so a model or server is named once.

Found at `$QWQ_AGENT_CONFIG`, else `./qwq-agent.toml`, else `$XDG_CONFIG_HOME/qwq-agent/config.toml`
(`~/.config/...`). Keys are option names (`max-steps` or `max_steps`); `[defaults]` applies to every command,
a table named after a command (`[run]`, `[solve]`, `[eval]`) to that command only:

    [defaults]
    base-url = "http://127.0.0.1:8000/v1"
    model-name = "qwq-32b"

    [run]
    tools = "python,shell"
    max-steps = 30

    [sandbox]
    runtime = "runsc"

`[sandbox]` is not a command's table: it holds sandbox settings for every command that starts sandboxes
(`run`, `solve`, `eval`, `sandbox doctor`); its keys are the `--sandbox-*` options without the prefix.

Precedence: the command line, then the environment (`QWQ_AGENT_MODEL`, `QWQ_AGENT_BASE_URL`,
`QWQ_AGENT_MODEL_NAME`), then this file, then built-in defaults.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

__all__ = ["ConfigFileError", "apply_config", "find_config"]

SANDBOX_TABLE = "sandbox"
SANDBOX_SETTINGS = ("runtime",)

ENV_CONFIG = "QWQ_AGENT_CONFIG"
# The environment outranks the file for the choice of model: when any of these variables is set, the file's
# model options are all left out, so a file's server cannot win over a model the environment names.
_MODEL_ENV = ("QWQ_AGENT_MODEL", "QWQ_AGENT_BASE_URL", "QWQ_AGENT_MODEL_NAME")
_MODEL_OPTIONS = ("model", "base_url", "model_name")


class ConfigFileError(Exception):
    """The config file cannot be read or names an option the command does not have."""


def find_config() -> Path | None:
    named = os.environ.get(ENV_CONFIG)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigFileError(f"{ENV_CONFIG}={named} names no file")
        return path
    local = Path("qwq-agent.toml")
    if local.is_file():
        return local
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    user = base / "qwq-agent" / "config.toml"
    return user if user.is_file() else None


def apply_config(parser: argparse.ArgumentParser, command: str) -> Path | None:
    """Set `parser`'s defaults from the config file, if there is one; returns the file used."""
    path = find_config()
    if path is None:
        return None
    import tomllib

    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigFileError(f"cannot read the config file {path}: {exc}") from exc
    values: dict[str, Any] = {}
    for table in ("defaults", command):
        if table == SANDBOX_TABLE:
            continue  # sandbox settings, applied below, not the options of `qwq-agent sandbox`
        section = data.get(table, {})
        if not isinstance(section, dict):
            raise ConfigFileError(f"{path}: [{table}] must be a table of option = value")
        values.update({key.replace("-", "_"): value for key, value in section.items()})
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", argparse.SUPPRESS)}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        known = ", ".join(sorted(d.replace("_", "-") for d in actions))
        raise ConfigFileError(
            f"{path}: `qwq-agent {command}` has no option {', '.join(unknown)}; options it has: {known}"
        )
    defaults: dict[str, Any] = {}
    environment_names_model = any(os.environ.get(name) for name in _MODEL_ENV)
    for dest, value in values.items():
        if environment_names_model and dest in _MODEL_OPTIONS:
            continue
        convert = actions[dest].type
        if isinstance(value, str) and callable(convert):
            try:
                value = convert(value)
            except (TypeError, ValueError) as exc:
                raise ConfigFileError(f"{path}: {dest.replace('_', '-')} = {value!r}: {exc}") from exc
        defaults[dest] = value
    parser.set_defaults(**defaults)
    _apply_sandbox_table(parser, data.get(SANDBOX_TABLE, {}), path)
    return path


def _parser_tree(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """`parser` and every sub-command parser below it (`sandbox doctor` is two levels down)."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                found += _parser_tree(child)
    return found


def _apply_sandbox_table(parser: argparse.ArgumentParser, table: Any, path: Path) -> None:
    """Set the `--sandbox-*` defaults of every (sub-)parser that has them from the file's `[sandbox]`."""
    if not isinstance(table, dict):
        raise ConfigFileError(f"{path}: [{SANDBOX_TABLE}] must be a table of setting = value")
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in SANDBOX_SETTINGS:
            raise ConfigFileError(
                f"{path}: [{SANDBOX_TABLE}] has no setting {key}; settings: {', '.join(SANDBOX_SETTINGS)}"
            )
        dest = f"sandbox_{name}"
        for target in _parser_tree(parser):
            action = next((a for a in target._actions if a.dest == dest), None)
            if action is None:
                continue
            if action.choices is not None and value not in action.choices:
                choices = ", ".join(str(c) for c in action.choices)
                raise ConfigFileError(f"{path}: [{SANDBOX_TABLE}] {key} = {value!r}: choose from {choices}")
            target.set_defaults(**{dest: value})
