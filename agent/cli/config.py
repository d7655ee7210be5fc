"""The optional config file: defaults for command-line options, so a model or server is named once.

Found at `$QWQ_AGENT_CONFIG`, else `./qwq-agent.toml`, else `$XDG_CONFIG_HOME/qwq-agent/config.toml`
(`~/.config/...`). Keys are option names (`max-steps` or `max_steps`); `[defaults]` applies to every command
that has the option (the others leave it out), a table named after a command (`[run]`, `[solve]`, `[eval]`,
`[models]`) to that command only, and there an option the command does not have is an error:

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
import re
from pathlib import Path
from typing import Any

from prompts.errors import ConfigurationError

__all__ = ["apply_config", "find_config"]

SANDBOX_TABLE = "sandbox"
SANDBOX_SETTINGS = ("runtime",)

ENV_CONFIG = "QWQ_AGENT_CONFIG"
# The environment outranks the file for the choice of model: when any of these variables is set, the file's
# model options are all left out, so a file's server cannot win over a model the environment names.
_MODEL_ENV = ("QWQ_AGENT_MODEL", "QWQ_AGENT_BASE_URL", "QWQ_AGENT_MODEL_NAME")
_MODEL_OPTIONS = ("model", "base_url", "model_name")


def find_config() -> Path | None:
    named = os.environ.get(ENV_CONFIG)
    if named:
        path = Path(named).expanduser()
        if not path.is_file():
            raise ConfigurationError(f"{ENV_CONFIG}={named} names no file")
        return path
    local = Path("qwq-agent.toml")
    if local.is_file():
        return local
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    user = base / "qwq-agent" / "config.toml"
    return user if user.is_file() else None


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """`parser` and the parsers of its own sub-commands (`models check`, `sandbox build`...), depth first."""
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += _parsers(child)
    return found


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {
        a.dest: a
        for a in parser._actions
        if a.dest not in ("help", argparse.SUPPRESS) and not isinstance(a, argparse._SubParsersAction)
    }


# "(default: 20)", "(default 1)", "(default)" inside a help text, or a help text that is only "default: ./runs"
_DEFAULT_NOTE = re.compile(r"\s*\(defaults?\b[^()]*\)|^default: .*$", re.IGNORECASE)


def _help_with_default(help_text: str | None, value: Any, path: Path) -> str:
    """The option's help with the built-in default replaced by the one the config file sets."""
    text = _DEFAULT_NOTE.sub("", help_text or "").strip()
    shown = str(value).replace("%", "%%")  # argparse %-formats help texts
    note = f"(default: {shown}, from {str(path).replace('%', '%%')})"
    return f"{text} {note}" if text else note


def apply_config(parser: argparse.ArgumentParser, command: str) -> Path | None:
    """Set `parser`'s defaults (and its sub-commands') from the config file, if there is one; returns the file.

    `[defaults]` holds options shared by several commands: a key that a command does not have is left out for
    that command (`base-url` means nothing to `replay`). A key in the command's own table that none of its
    parsers has is a mistake, and an error that lists the options it has.
    """
    path = find_config()
    if path is None:
        return None
    data = _read(path)
    shared, own = _table(data, "defaults", path), _table(data, command, path)
    parsers = _parsers(parser)
    known = {dest for p in parsers for dest in _options(p)}
    unknown = sorted(set(own) - known)
    if unknown:
        names = ", ".join(sorted(d.replace("_", "-") for d in known)) or "none"
        raise ConfigurationError(
            f"{path}: `qwq-agent {command}` has no option {', '.join(unknown)}; options it has: {names}"
        )
    environment_names_model = any(os.environ.get(name) for name in _MODEL_ENV)
    for each in parsers:
        actions = _options(each)
        defaults: dict[str, Any] = {}
        for dest, value in {**shared, **own}.items():
            if dest not in actions or (environment_names_model and dest in _MODEL_OPTIONS):
                continue
            defaults[dest] = _option_value(actions[dest], dest, value, path)
            actions[dest].help = _help_with_default(actions[dest].help, defaults[dest], path)
        each.set_defaults(**defaults)
    _apply_sandbox_table(parser, data.get(SANDBOX_TABLE, {}), path)
    return path


def _read(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read the config file {path}: {exc}") from exc


def _table(data: dict[str, Any], table: str, path: Path) -> dict[str, Any]:
    """The options of one table, keys spelled as argparse destinations (`max-steps` → `max_steps`)."""
    if table == SANDBOX_TABLE:
        return {}  # sandbox settings, applied on their own, not the options of `qwq-agent sandbox`
    section = data.get(table, {})
    if not isinstance(section, dict):
        raise ConfigurationError(f"{path}: [{table}] must be a table of option = value")
    return {key.replace("-", "_"): value for key, value in section.items()}


def _option_value(action: argparse.Action, dest: str, value: Any, path: Path) -> Any:
    """A value from the file, converted and checked as the command line would convert and check it."""
    name = dest.replace("_", "-")
    if isinstance(value, str) and callable(action.type):
        try:
            value = action.type(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as exc:
            raise ConfigurationError(f"{path}: {name} = {value!r}: {exc}") from exc
    if action.choices is not None and value not in action.choices:
        raise ConfigurationError(
            f"{path}: {name} = {value!r} is not one of {', '.join(map(str, action.choices))}"
        )
    if getattr(action, "repeatable", False) and not isinstance(value, list):
        value = [value]  # a repeatable option (--base-url) may be given one value in the file
    return value


def _apply_sandbox_table(parser: argparse.ArgumentParser, table: Any, path: Path) -> None:
    """Set the `--sandbox-*` defaults of every (sub-)parser that has them from the file's `[sandbox]`."""
    if not isinstance(table, dict):
        raise ConfigurationError(f"{path}: [{SANDBOX_TABLE}] must be a table of setting = value")
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in SANDBOX_SETTINGS:
            raise ConfigurationError(
                f"{path}: [{SANDBOX_TABLE}] has no setting {key}; settings: {', '.join(SANDBOX_SETTINGS)}"
            )
        dest = f"sandbox_{name}"
        for target in _parsers(parser):
            action = next((a for a in target._actions if a.dest == dest), None)
            if action is None:
                continue
            if action.choices is not None and value not in action.choices:
                choices = ", ".join(str(c) for c in action.choices)
                raise ConfigurationError(
                    f"{path}: [{SANDBOX_TABLE}] {key} = {value!r}: choose from {choices}"
                )
            target.set_defaults(**{dest: value})
