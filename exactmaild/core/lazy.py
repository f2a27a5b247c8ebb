"""A package's API, imported on first use (PEP 562).

A package `__init__` declares its names in `__all__` and, for type
checkers, imports them under TYPE_CHECKING; at run time each name is
imported from its module when first asked for. So `import
exactmaild.send.message` (which `exactmaild-sendmail` does on every call)
does not pay for smtplib, ssl or SQLite that the rest of the package uses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, where: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: `where` maps each name to the
    submodule that defines it (a name that maps to itself is a submodule)."""

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(f"{package}.{where[name]}")
        return module if where[name] == name else getattr(module, name)

    return __getattr__
