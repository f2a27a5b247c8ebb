"""The command line: the parser, and one function per command.

`main` is the `exactmaild` script, `sendmail_main` the `exactmaild-sendmail`
script; both map every error to its exit code through the tree in
exactmaild.core.errors (see exactmaild.cli.report).

Imported on first use (PEP 562): PHP's mail() starts `exactmaild-sendmail`
for every message, and it must not pay for the parser and every other
command's imports to reach `sendmail_main`.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exactmaild.cli.main import main
    from exactmaild.cli.sendmail import sendmail_main

__all__ = ["main", "sendmail_main"]

_WHERE = {"main": "main", "sendmail_main": "sendmail"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


class _Package(types.ModuleType):
    def __setattr__(self, name: str, value: Any) -> None:
        # `main` is also the submodule that defines it, and importing a
        # submodule binds the package's attribute to the module: keep the
        # name for the function (the `exactmaild` script's entry point), as
        # an eager `from exactmaild.cli.main import main` did.
        if name == "main" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
