"""Loading the YAML configuration into the typed `exactmaild.config.model.Config`.

This module is the public API: `load()` and `parse()`, the top-level walk of
the document, and (re-exported) the unit parsers. Every rule
and default of the design's "Configuration (YAML)" section is reported all at
once as `ConfigError` problems `FILE:LINE: key.path: what`, with "did you
mean" suggestions for misspelt keys.

The work is shared with:

- `exactmaild.config.values`: the units (durations, sizes, times of day,
  windows), the system time zone, ports and hosts;
- `exactmaild.config.yamlnodes`: the hostile-input-safe YAML composition and the
  located-node helpers (`Map`, `Checker`);
- `exactmaild.config.schema`: the keys each section accepts, and the defaults;
- `exactmaild.config.convert`: one node to one typed value;
- `exactmaild.config.account`: the account (and auth), incoming and outgoing
  sections;
- `exactmaild.config.receiving`: the schedule and receive sections;
- `exactmaild.config.sending`: the send section;
- `exactmaild.config.providers`: the provider presets (microsoft365, google);
- `exactmaild.config.origins`: where each limit value came from.

The text `exactmaild check-config` prints for a valid file is
`exactmaild.cli.summary`'s: it reads where each secret comes from, which is
above this layer.

It never opens a network connection and never reads a secret: that happens at
use time in `exactmaild.auth.secrets`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, NoReturn, cast

from yaml.nodes import MappingNode, Node, ScalarNode

from exactmaild.config import convert as conv
from exactmaild.config.account import account_section, server_section
from exactmaild.config.model import (
    Config,
    Incoming,
    LogConfig,
    MetricsConfig,
    Outgoing,
    SpoolConfig,
)
from exactmaild.config.origins import Origins, consumer_gmail
from exactmaild.config.receiving import receive_section, schedule_section
from exactmaild.config.schema import (
    AUTH_KEYS,
    DEFAULT_HISTORY_DAYS,
    DEFAULT_METRICS_HOST,
    DEFAULT_METRICS_PORT,
    DEFAULT_SPOOL_DIR,
    DEFAULT_STATE_DIR,
    INCOMING_KEYS,
    LOG_KEYS,
    METRICS_KEYS,
    SCHEDULE_KEYS,
    SEND_KEYS,
    SPOOL_KEYS,
    TOP_KEYS,
)
from exactmaild.config.sending import send_section
from exactmaild.config.values import (
    is_loopback,
    parse_duration,
    parse_hhmm,
    parse_size,
    parse_window,
    system_timezone,
)
from exactmaild.config.yamlnodes import (
    MAX_ALIASES,
    MAX_CONFIG_BYTES,
    MAX_DEPTH,
    Checker,
    describe,
    is_null,
    node_line,
)
from exactmaild.core.errors import ConfigError, Problem

__all__ = [
    "DEFAULT_METRICS_PORT",
    "MAX_ALIASES",
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "Locator",
    "load",
    "locate",
    "parse",
    "parse_duration",
    "parse_hhmm",
    "parse_size",
    "parse_window",
    "state_dir_hint",
    "system_timezone",
]

# The schema under its former private names: the tests fuzz documents built
# from these keys.
_TOP_KEYS = TOP_KEYS
_SEND_KEYS = SEND_KEYS
_AUTH_KEYS = AUTH_KEYS
_INCOMING_KEYS = INCOMING_KEYS
_SCHEDULE_KEYS = SCHEDULE_KEYS


# --------------------------------------------------------------------------
# The document
# --------------------------------------------------------------------------


def _build(c: Checker, root: Node) -> Config | None:
    if is_null(root):
        c.problem(1, "", "the file is empty: it needs at least account: and outgoing:")
        return None
    if not isinstance(root, MappingNode):
        c.problem(node_line(root), "", f"expected a mapping of settings, got {describe(root)}")
        return None
    top = c.mapping(root, "", TOP_KEYS, line=node_line(root))
    # `system_timezone` is looked up in this module's namespace at call time,
    # so replacing `exactmaild.config.load.system_timezone` (as the tests do) still works.
    timezone = c.get(top, "timezone", conv.timezone, None) or system_timezone()
    state_dir = c.get(top, "state_dir", c.path, DEFAULT_STATE_DIR)
    account = account_section(c, top)
    auth = account.auth
    origins = Origins(c.file, auth.provider)
    incoming = server_section(c, top, "incoming", auth)
    outgoing = server_section(c, top, "outgoing", auth, origins)
    assert incoming is None or isinstance(incoming, Incoming)
    assert outgoing is None or isinstance(outgoing, Outgoing)
    receiving = incoming is not None or not top.given("incoming")
    schedule = schedule_section(c, top, receiving)
    receive = receive_section(c, top, incoming, state_dir)
    send = send_section(c, top, schedule, incoming, origins)
    consumer_gmail(c, account.address, origins)

    spool_m = c.mapping(top.get("spool"), "spool", SPOOL_KEYS, line=top.line)
    spool_dir = c.get(spool_m, "dir", c.path, DEFAULT_SPOOL_DIR)
    spool_sizes: dict[str, int] = {}
    if spool_m.given("max_message_size"):
        spool_sizes["max_message_size"] = c.get(spool_m, "max_message_size", conv.positive_size, 1)
    spool = SpoolConfig(dir=spool_dir, **spool_sizes)

    metrics_m = c.mapping(top.get("metrics"), "metrics", METRICS_KEYS, line=top.line)
    metrics = c.get(
        metrics_m, "listen", conv.metrics, MetricsConfig(DEFAULT_METRICS_HOST, DEFAULT_METRICS_PORT)
    )
    if metrics.host is not None and not is_loopback(metrics.host):
        c.warn(
            f"metrics.listen {metrics.host}:{metrics.port} is reachable from other machines: "
            "firewall the port, or listen on 127.0.0.1 and scrape through a proxy"
        )

    log_m = c.mapping(top.get("log"), "log", LOG_KEYS, line=top.line)
    log = LogConfig(
        format=cast(
            Literal["auto", "json", "console"],
            c.get(log_m, "format", conv.choice("auto", "json", "console"), "auto"),
        ),
        level=cast(
            Literal["debug", "info", "warning", "error"],
            c.get(log_m, "level", conv.choice("debug", "info", "warning", "error"), "info"),
        ),
        file=c.get(log_m, "file", c.path, None),
    )

    history_days = c.get(top, "history_days", conv.positive_int, DEFAULT_HISTORY_DAYS)

    if c.problems or outgoing is None:
        return None
    return Config(
        source=c.source,
        timezone=timezone,
        account=account,
        incoming=incoming,
        outgoing=outgoing,
        schedule=schedule,
        receive=receive,
        send=send,
        spool=spool,
        state_dir=state_dir,
        metrics=metrics,
        log=log,
        warnings=tuple(c.warnings),
        history_days=history_days,
        origins=origins.items(),
    )


# --------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------


def _raise(c: Checker) -> NoReturn:
    # Sorted by line so the output reads top to bottom like the file.
    raise ConfigError(sorted(c.problems, key=lambda p: p.line))


def parse(text: str, source: Path | str) -> Config:
    """Validate configuration `text` (read from `source`) into a `Config`.

    Raises `ConfigError` listing every problem found; never any other
    exception for any input. Relative paths are resolved against the
    directory of `source`.
    """
    source = Path(source)
    c = Checker(source)
    config: Config | None = None
    root = c.compose(text)
    if root is not None:
        config = _build(c, root)
    elif not c.problems:  # an empty document (or only comments)
        c.problem(1, "", "the file is empty: it needs at least account: and outgoing:")
    if c.problems or config is None:
        if not c.problems:  # cannot happen; never let it pass silently
            c.problem(0, "", "the configuration could not be read")
        _raise(c)
    return config


def load(path: Path | str) -> Config:
    """Read and validate the configuration file at `path` (see `parse`)."""
    path = Path(path)
    c = Checker(path)
    try:
        with open(path, "rb") as handle:
            # Read one byte past the cap: enough to know, never the whole of
            # a huge or endless file (/dev/zero).
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        c.problem(0, "", "no such file (give another with -c/--config or $EXACTMAILD_CONFIG)")
        _raise(c)
    except IsADirectoryError:
        c.problem(0, "", "is a directory, not a configuration file: give the file with -c/--config")
        _raise(c)
    except PermissionError:
        c.problem(0, "", f"cannot be read by this user (uid {os.geteuid()}): check its permissions")
        _raise(c)
    except OSError as exc:
        c.problem(0, "", f"cannot be read: {exc.strerror or exc}; check the file and its disk")
        _raise(c)
    if len(data) > MAX_CONFIG_BYTES:
        c.problem(
            0,
            "",
            f"larger than {MAX_CONFIG_BYTES // 1024} KiB: not a configuration file; "
            "give the right file with -c/--config",
        )
        _raise(c)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        c.problem(line, "", "not UTF-8 text: save the file as UTF-8")
        _raise(c)
    return parse(text, path)


class Locator:
    """Where each key of a configuration file is written, for problems found
    after loading (check-config's secret and directory checks): `problem()`
    makes the same located `FILE:LINE: key.path: what` line a load error has.
    A key the file does not write (a default, a preset) is located at the
    file alone."""

    def __init__(self, file: str, lines: dict[str, int]) -> None:
        self.file = file
        self._lines = lines

    def line(self, key_path: str) -> int:
        return self._lines.get(key_path, 0)

    def problem(self, key_path: str, message: str) -> Problem:
        return Problem(self.file, self.line(key_path), key_path, message)


def locate(path: Path | str) -> Locator:
    """The `Locator` of the file at `path` (read again; a file that no longer
    reads gives one that locates nothing)."""
    lines: dict[str, int] = {}
    c = Checker(Path(path))
    try:
        text = Path(path).read_bytes()[: MAX_CONFIG_BYTES + 1].decode("utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return Locator(str(path), lines)
    root = c.compose(text)

    def walk(node: Node, prefix: str) -> None:
        if not isinstance(node, MappingNode):
            return
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                continue
            key = f"{prefix}{key_node.value}"
            lines.setdefault(key, node_line(key_node))
            walk(value_node, key + ".")

    if root is not None:
        walk(root, "")
    return Locator(str(path), lines)


def state_dir_hint(path: Path | str) -> Path:
    """The state directory a file names, read leniently: for a file that does
    not load (the commands then look there for the daemon's running copy).
    The default when the file does not say, or says it unreadably."""
    import yaml

    path = Path(path).absolute()
    try:
        data = yaml.safe_load(path.read_bytes()[:MAX_CONFIG_BYTES])
    except (OSError, yaml.YAMLError, ValueError):
        return DEFAULT_STATE_DIR
    value = data.get("state_dir") if isinstance(data, dict) else None
    if not isinstance(value, str) or not value:
        return DEFAULT_STATE_DIR
    return path.parent / Path(value).expanduser()
