"""Names a package exports but imports only on first access, so that importing the package stays light."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

__all__ = ["lazy_attribute"]


def lazy_attribute(package: str, modules: Mapping[str, str], name: str) -> Any:
    """For a package's `__getattr__`: `name` from the module `modules` maps it to, imported now."""
    module_name = modules.get(name)
    if module_name is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module_name), name)
