"""The configuration: one YAML file read into a frozen, validated `Config`.

The package's API:

- the types every other part reads (`Config` and its sections, from
  `exactmaild.config.model`), importable from here without the YAML loader:
  the daemon's modules and the sendmail front import them, and start-up time
  matters there;
- `ConfigError` (exit 78) and its `Problem` lines, re-exported from the error
  tree;
- the module `exactmaild.config.load`, the one entry that reads YAML:
  `load.load(path)`, `load.parse(text, source)` and the unit parsers
  (`parse_duration`, `parse_size`, `parse_hhmm`, `parse_window`). It is
  imported on use (`from exactmaild.config import load`), never by this
  package, and it keeps its module name because callers replace
  `load.system_timezone` in tests.

The other modules are internal to the loader: `values` (units and hosts),
`yamlnodes` (safe YAML composition, `Checker`), `schema` (keys and defaults),
`convert` (one node to one value), `providers` (presets), and the section
walkers `account`, `receiving` and `sending`.
"""

from typing import TYPE_CHECKING

from exactmaild.config.model import (
    ALL_DAYS,
    Account,
    Auth,
    Config,
    Incoming,
    LogConfig,
    MetricsConfig,
    Outgoing,
    Receive,
    Schedule,
    Security,
    Send,
    Server,
    SpoolConfig,
    Weekday,
    Window,
)
from exactmaild.core.errors import ConfigError, Problem

if TYPE_CHECKING:  # the loader is imported on use, for the YAML it needs
    from exactmaild.config import load

__all__ = [
    "ALL_DAYS",
    "Account",
    "Auth",
    "Config",
    "ConfigError",
    "Incoming",
    "LogConfig",
    "MetricsConfig",
    "Outgoing",
    "Problem",
    "Receive",
    "Schedule",
    "Security",
    "Send",
    "Server",
    "SpoolConfig",
    "Weekday",
    "Window",
    "load",
]
