"""Loading the YAML configuration into the typed `exactmaild.config.Config`.

This module owns:

- reading the file safely: a size cap before parsing, `yaml` composition with
  the safe loader only, a cap on aliases (billion laughs) and on nesting;
- every rule and default of the design's "Configuration (YAML)" section,
  reported all at once as `ConfigError` problems `FILE:LINE: key.path: what`,
  with "did you mean" suggestions for misspelt keys;
- the units: durations, sizes, times of day and windows;
- the provider presets (microsoft365, google) for servers and OAuth2;
- `summary()`, the text `exactmaild check-config` prints.

It never opens a network connection and never reads a secret: that happens at
use time in `exactmaild.secrets`.

The walk works on YAML *nodes* rather than constructed Python values for two
reasons: nodes carry line numbers, and the raw text of a scalar is what the
user typed. YAML 1.1 would otherwise turn `at: 12:00` into the integer 720
(base-60) and `every: off` into False.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import math
import os
import re
import zoneinfo
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn, TypeVar, cast
from urllib.parse import urlsplit

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from exactmaild import secrets
from exactmaild.config import (
    ALL_DAYS,
    Account,
    Auth,
    Config,
    Incoming,
    Log,
    Metrics,
    Receive,
    Schedule,
    Security,
    Send,
    Server,
    Spool,
    Weekday,
    Window,
)
from exactmaild.errors import ConfigError, Problem
from exactmaild.pacing import format_seconds, plan

__all__ = [
    "DEFAULT_METRICS_PORT",
    "MAX_ALIASES",
    "MAX_CONFIG_BYTES",
    "MAX_DEPTH",
    "load",
    "parse",
    "parse_duration",
    "parse_hhmm",
    "parse_size",
    "parse_window",
    "summary",
    "system_timezone",
]

T = TypeVar("T")

# Hard limits against hostile or broken input. A real configuration is a few
# KiB with no aliases at all; these are far above that and far below harm.
MAX_CONFIG_BYTES = 1024 * 1024
MAX_ALIASES = 20  # billion laughs needs many aliases; a handful of `<<: *x` is fine
MAX_DEPTH = 32  # PyYAML's composer recurses per level: stop long before Python's limit

DEFAULT_STATE_DIR = Path("/var/lib/exactmaild")
DEFAULT_SPOOL_DIR = Path("/var/spool/exactmaild")
DEFAULT_METRICS_HOST = "127.0.0.1"
DEFAULT_METRICS_PORT = 9725
DEFAULT_DAILY_LIMIT = 500
DEFAULT_DELAY = 60.0
MIN_CHECK_INTERVAL = 60.0  # below this, warn: providers throttle frequent logins


# --------------------------------------------------------------------------
# Units
# --------------------------------------------------------------------------

_DURATION_UNITS: dict[str, float] = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "secs": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "mins": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hrs": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
_SPELT_UNITS = ("seconds", "minutes", "hours", "days")
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART = re.compile(rf"\s*({_NUMBER})\s*([a-zA-Z]*)")
_DURATION_HINT = "use a number of seconds or a number with a unit: 500ms, 90s, 5m, 1h, 4d"


def parse_duration(value: str | int | float) -> float:
    """Seconds in `value`: "500ms", "90s", "5m", "1h", "4d", "1h30m", or a number of seconds.

    Units: ms, s, m (minutes), h, d, and their spelt-out forms (sec, min,
    hours, days ...). Negative, infinite and NaN durations are refused.
    Raises ValueError with a message fit to show the user.
    """
    if isinstance(value, bool):  # bool is an int subclass: `delay: yes` is not 1 s
        raise ValueError(f"expected a duration, got {value!r}; {_DURATION_HINT}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        seconds = _parse_duration_text(value)
    else:
        raise ValueError(f"expected a duration, got {type(value).__name__}; {_DURATION_HINT}")
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"expected a duration, got {value!r}; {_DURATION_HINT}")
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative, got {value!r}")
    return seconds


def _parse_duration_text(text: str) -> float:
    stripped = text.strip()
    if not stripped:
        raise ValueError(f"expected a duration, got an empty value; {_DURATION_HINT}")
    if stripped.startswith("-"):
        raise ValueError(f"a duration cannot be negative, got {text!r}")
    pos = 0
    total = 0.0
    units_seen = 0
    while pos < len(stripped):
        match = _DURATION_PART.match(stripped, pos)
        if match is None or match.end() == pos:
            raise ValueError(f"{text!r} is not a duration; {_DURATION_HINT}")
        number, unit = match.group(1), match.group(2)
        if not unit:
            # A bare number is seconds, but only on its own: "1h30" is ambiguous.
            if units_seen or match.end() != len(stripped):
                raise ValueError(f"{text!r} is not a duration; {_DURATION_HINT}")
            return float(number)
        factor = _DURATION_UNITS.get(unit.lower())
        if factor is None:
            raise ValueError(
                f"{text!r} is not a duration: unknown unit {unit!r}"
                f"{_suggest(unit.lower(), ('ms', 's', 'm', 'h', 'd', *_SPELT_UNITS))}; "
                f"{_DURATION_HINT}"
            )
        total += float(number) * factor
        units_seen += 1
        pos = match.end()
    return total


# Decimal units are powers of 1000 (as disks and providers count: "25 MB"),
# binary units powers of 1024 ("25 MiB"). A bare number is bytes.
_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}
_SIZE = re.compile(rf"\s*({_NUMBER})\s*([a-zA-Z]*)\s*")
_SIZE_HINT = (
    "use a number of bytes or a number with a unit: 64KB, 25MB, 1GB (x1000) or 10KiB, 25MiB (x1024)"
)


def parse_size(value: str | int | float) -> int:
    """Bytes in `value`: "512", "64KB", "25MB", "1GB", "10KiB", "25MiB".

    KB/MB/GB/TB are decimal (1 KB = 1000 bytes), KiB/MiB/GiB/TiB binary
    (1 KiB = 1024 bytes); units are case-insensitive; fractions round down
    ("1.5MB" = 1500000). Raises ValueError with a message fit to show the user.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a size, got {value!r}; {_SIZE_HINT}")
    if isinstance(value, int):
        size = float(value)
    elif isinstance(value, float):
        size = value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is None:
            raise ValueError(f"{value!r} is not a size; {_SIZE_HINT}")
        unit = match.group(2).lower()
        if unit not in _SIZE_UNITS:
            raise ValueError(
                f"{value!r} is not a size: unknown unit {match.group(2)!r}"
                f"{_suggest(unit, [u.upper().replace('I', 'i') for u in _SIZE_UNITS if u])}; "
                f"{_SIZE_HINT}"
            )
        size = float(match.group(1)) * _SIZE_UNITS[unit]
    else:
        raise ValueError(f"expected a size, got {type(value).__name__}; {_SIZE_HINT}")
    if math.isnan(size) or math.isinf(size):
        raise ValueError(f"expected a size, got {value!r}; {_SIZE_HINT}")
    if size < 0:
        raise ValueError(f"a size cannot be negative, got {value!r}")
    return int(size)


_HHMM = re.compile(r"\s*(\d{1,2}):(\d{2})\s*")


def parse_hhmm(text: str) -> dt.time:
    """A time of day "HH:MM" (24 h clock, "7:30" also accepted) -> `datetime.time`."""
    return _parse_hhmm(text, allow_24=False)


def _parse_hhmm(text: str, *, allow_24: bool) -> dt.time:
    if not isinstance(text, str):
        raise ValueError(f"expected a time HH:MM, got {text!r}")
    match = _HHMM.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a time: use HH:MM on the 24 h clock, e.g. 07:30")
    hour, minute = int(match.group(1)), int(match.group(2))
    if allow_24 and hour == 24 and minute == 0:
        return dt.time(0, 0)  # "17:00-24:00": the end of the day is midnight
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r} is not a time: hours go 00-23 and minutes 00-59")
    return dt.time(hour, minute)


def parse_window(text: str) -> Window:
    """Daily hours "HH:MM-HH:MM" -> `Window`.

    An end at or before the start crosses midnight ("22:00-06:00"); equal ends
    mean the whole day. "24:00" is accepted as an end.
    """
    if not isinstance(text, str):
        raise ValueError(f"expected hours HH:MM-HH:MM, got {text!r}")
    start, sep, end = text.partition("-")
    if not sep:
        raise ValueError(f"{text!r} is not a window: use HH:MM-HH:MM, e.g. 08:00-17:00")
    try:
        return Window(_parse_hhmm(start, allow_24=False), _parse_hhmm(end, allow_24=True))
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is not a window ({exc}): use HH:MM-HH:MM, e.g. 08:00-17:00"
        ) from None


def _span(seconds: float) -> str:
    """A duration for people: 90 -> '1 min 30 s', 345600 -> '4 d', 0.5 -> '500 ms'."""
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    parts = []
    rest = round(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size} {unit}")
            rest %= size
    return " ".join(parts)


def _format_size(size: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    for unit, factor in (("GB", 1000**3), ("MB", 1000**2), ("KB", 1000)):
        if size >= factor:
            return f"{size / factor:g} {unit}"
    return f"{size} bytes"


# --------------------------------------------------------------------------
# Time zone
# --------------------------------------------------------------------------


def _valid_zone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False
    return True


def system_timezone(etc: Path = Path("/etc")) -> str:
    """The system's IANA zone: /etc/timezone, else the /etc/localtime symlink, else "UTC"."""
    try:
        for line in (etc / "timezone").read_text(encoding="utf-8").splitlines():
            name = line.strip()
            if name and not name.startswith("#") and _valid_zone(name):
                return name
            if name:
                break
    except (OSError, UnicodeDecodeError):
        pass
    try:
        target = os.readlink(etc / "localtime")
    except OSError:
        target = ""
    marker = "zoneinfo/"
    if marker in target:
        name = target.rsplit(marker, 1)[1]
        # Debian's "posix/" and "right/" trees hold the same zones.
        for prefix in ("posix/", "right/"):
            name = name.removeprefix(prefix)
        if _valid_zone(name):
            return name
    return "UTC"


# --------------------------------------------------------------------------
# Provider presets
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Preset:
    token_url: str
    device_authorization_url: str
    scope: str
    smtp: tuple[str, Security]
    imap: tuple[str, Security]
    pop3: tuple[str, Security]


_PRESETS: dict[str, _Preset] = {
    "microsoft365": _Preset(
        token_url="https://login.microsoftonline.com/common/oauth2/v2.0/token",
        device_authorization_url="https://login.microsoftonline.com/common/oauth2/v2.0/devicecode",
        scope=(
            "https://outlook.office.com/SMTP.Send https://outlook.office.com/IMAP.AccessAsUser.All "
            "https://outlook.office.com/POP.AccessAsUser.All offline_access"
        ),
        smtp=("smtp.office365.com", "starttls"),
        imap=("outlook.office365.com", "tls"),
        pop3=("outlook.office365.com", "tls"),
    ),
    "google": _Preset(
        token_url="https://oauth2.googleapis.com/token",
        device_authorization_url="https://oauth2.googleapis.com/device/code",
        scope="https://mail.google.com/",
        smtp=("smtp.gmail.com", "tls"),
        imap=("imap.gmail.com", "tls"),
        pop3=("pop.gmail.com", "tls"),
    ),
}


def _default_port(protocol: str, security: str) -> int:
    if protocol == "smtp":
        return {"tls": 465, "starttls": 587}.get(security, 25)
    if protocol == "pop3":
        return 995 if security == "tls" else 110
    return 993 if security == "tls" else 143


def _is_loopback(host: str) -> bool:
    host = host.strip().rstrip(".").lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------
# Schema: the keys each section accepts
# --------------------------------------------------------------------------

_TOP_KEYS = (
    "timezone",
    "account",
    "incoming",
    "outgoing",
    "schedule",
    "receive",
    "send",
    "spool",
    "state_dir",
    "metrics",
    "log",
)
_ACCOUNT_KEYS = ("address", "display_name", "auth")
_OAUTH2_KEYS = (
    "provider",
    "token_url",
    "client_id",
    "client_secret_file",
    "refresh_token_file",
    "scope",
    "device_authorization_url",
)
_AUTH_KEYS = ("method", "username", "password_file", *_OAUTH2_KEYS)
_SERVER_KEYS = ("host", "port", "security", "tls_ca_file")
_INCOMING_KEYS = ("protocol", *_SERVER_KEYS, "folder", "leave_on_server")
_SCHEDULE_KEYS = ("days", "window", "every", "at")
_RECEIVE_KEYS = ("maildir", "attachments", "attachments_dir", "max_attachment_size")
_SEND_KEYS = (
    "immediately",
    "delay",
    "per_minute",
    "daily_limit",
    "limit_window",
    "limit_counts",
    "reserve",
    "retry_intervals",
    "give_up_after",
    "on_unknown_outcome",
    "account_pause",
    "count_sent_folder",
    "signature",
)
_SPOOL_KEYS = ("dir", "max_message_size")
_METRICS_KEYS = ("listen",)
_LOG_KEYS = ("format", "level", "file")

# Where each key lives, to answer "daily_limit" at the top level with "it
# belongs under send" rather than a bare "unknown key".
_SECTIONS: dict[str, tuple[str, ...]] = {
    "account": _ACCOUNT_KEYS,
    "account.auth": _AUTH_KEYS,
    "incoming": _INCOMING_KEYS,
    "outgoing": _SERVER_KEYS,
    "schedule": _SCHEDULE_KEYS,
    "receive": _RECEIVE_KEYS,
    "send": _SEND_KEYS,
    "spool": _SPOOL_KEYS,
    "metrics": _METRICS_KEYS,
    "log": _LOG_KEYS,
}

# Inline secrets are refused with directions rather than "unknown key": the
# point is to keep them out of a file that is often world-readable and
# copied around.
_INLINE_SECRETS = {
    "password": "password_file",
    "pass": "password_file",
    "client_secret": "client_secret_file",
    "refresh_token": "refresh_token_file",
    "access_token": "refresh_token_file",
    "token": "refresh_token_file",
    "secret": "client_secret_file",
}

_DAY_NAMES: dict[str, Weekday] = {}
for _short, _long in zip(
    ALL_DAYS,
    ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    strict=True,
):
    _DAY_NAMES[_short] = _short
    _DAY_NAMES[_long] = _short

_TAG = "tag:yaml.org,2002:"
_YAML11_TRUE = {"true", "yes", "on", "y"}
_YAML11_FALSE = {"false", "no", "off", "n"}


def _suggest(word: str, choices: Iterable[str]) -> str:
    """ "; did you mean 'x'?" when one choice is close, else ""."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


# --------------------------------------------------------------------------
# Reading YAML nodes
# --------------------------------------------------------------------------


class _Hostile(Exception):
    """The document trips a hard limit; composition stops at once."""

    def __init__(self, message: str, line: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line


class _Loader(yaml.SafeLoader):
    """The safe loader, counting aliases and nesting depth while composing.

    Aliases are counted as they are met, so a billion-laughs document is
    refused after MAX_ALIASES of them without ever expanding anything; the
    depth cap turns `[[[[...` into a Problem instead of a RecursionError.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.alias_count = 0
        self.depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(yaml.AliasEvent):
            self.alias_count += 1
            if self.alias_count > MAX_ALIASES:
                mark = self.get_mark()
                raise _Hostile(
                    f"more than {MAX_ALIASES} YAML aliases (*name): refused as a possible "
                    "'billion laughs' attack; write the values out instead",
                    mark.line + 1 if mark else 0,
                )
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.get_mark()
                raise _Hostile(
                    f"nested more than {MAX_DEPTH} levels deep: refused",
                    mark.line + 1 if mark else 0,
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


class _Invalid(Exception):
    """A value is wrong; the message says how. Becomes one Problem at the value's line."""


def _line(node: Node | None) -> int:
    if node is None or node.start_mark is None:
        return 0
    return int(node.start_mark.line) + 1


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "null"


def _describe(node: Node) -> str:
    """How a wrong value is quoted back: 'abc', a list, a mapping, nothing."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if _is_null(node):
        return "nothing"
    text = str(node.value)
    if len(text) > 40:
        text = text[:37] + "..."
    return repr(text)


def _text(node: Node, expected: str) -> str:
    """The raw text of a scalar as typed, or _Invalid naming what was expected."""
    if not isinstance(node, ScalarNode) or _is_null(node):
        raise _Invalid(f"expected {expected}, got {_describe(node)}")
    return str(node.value)


def _as_str(node: Node) -> str:
    text = _text(node, "a text value").strip()
    if not text:
        raise _Invalid("expected a text value, got an empty one")
    return text


def _as_bool(node: Node) -> bool:
    text = _text(node, "true or false").strip().lower()
    if text in _YAML11_TRUE:
        return True
    if text in _YAML11_FALSE:
        return False
    raise _Invalid(f"expected true or false, got {_describe(node)}")


def _as_int(node: Node) -> int:
    text = _text(node, "a whole number").strip()
    if isinstance(node, ScalarNode) and node.tag == _TAG + "int":
        # YAML 1.1 spellings (1_000, 0x1f) count as whole numbers too.
        try:
            return int(yaml.constructor.SafeConstructor().construct_yaml_int(node))
        except (ValueError, TypeError):
            pass
    try:
        return int(text.replace("_", ""), 10)
    except ValueError:
        raise _Invalid(f"expected a whole number, got {_describe(node)}") from None


def _positive_int(node: Node) -> int:
    value = _as_int(node)
    if value < 1:
        raise _Invalid(f"expected a whole number of at least 1, got {value}")
    return value


def _duration(node: Node) -> float:
    try:
        return parse_duration(_text(node, "a duration such as 90s or 5m"))
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _positive_duration(node: Node) -> float:
    seconds = _duration(node)
    if seconds <= 0:
        raise _Invalid(f"must be longer than 0, got {_describe(node)}")
    return seconds


def _positive_size(node: Node) -> int:
    try:
        size = parse_size(_text(node, "a size such as 25MB"))
    except ValueError as exc:
        raise _Invalid(str(exc)) from None
    if size < 1:
        raise _Invalid(f"must be more than 0 bytes, got {_describe(node)}")
    return size


def _hhmm(node: Node) -> dt.time:
    try:
        return parse_hhmm(_text(node, "a time HH:MM"))
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _window(node: Node) -> Window:
    try:
        return parse_window(_text(node, "hours HH:MM-HH:MM"))
    except ValueError as exc:
        raise _Invalid(str(exc)) from None


def _choice(*choices: str) -> Callable[[Node], str]:
    def convert(node: Node) -> str:
        text = _text(node, "one of " + ", ".join(choices)).strip().lower()
        if text in choices:
            return text
        raise _Invalid(
            f"expected one of {', '.join(choices)}, got {_describe(node)}{_suggest(text, choices)}"
        )

    return convert


_ADDRESS = re.compile(r"[^@\s<>(),;:\"\[\]\\]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*")


def _address(node: Node) -> str:
    text = _as_str(node)
    if "<" in text:
        raise _Invalid(
            f"{text!r}: give the bare address here (name@domain); the name goes in display_name"
        )
    if not _ADDRESS.fullmatch(text):
        raise _Invalid(f"{text!r} does not look like an email address (name@domain)")
    return text


def _host(node: Node) -> str:
    text = _as_str(node)
    if "://" in text or "/" in text:
        raise _Invalid(
            f"{text!r}: give the host name only (e.g. mail.example.com); "
            "the protocol and encryption go in protocol: and security:"
        )
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if ":" in text:
        raise _Invalid(f"{text!r}: give the host name only; the port goes in port:")
    if re.search(r"\s", text) or not re.fullmatch(r"[A-Za-z0-9._\-]+", text):
        raise _Invalid(f"{text!r} is not a host name")
    return text


def _port(node: Node) -> int:
    value = _as_int(node)
    if not 1 <= value <= 65535:
        raise _Invalid(f"a port is a number from 1 to 65535, got {value}")
    return value


def _url(node: Node) -> str:
    text = _as_str(node)
    try:
        parts = urlsplit(text)
        valid = parts.scheme in ("https", "http") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        valid = False
    if not valid:
        raise _Invalid(f"{text!r} is not an https:// URL")
    return text


def _scope(node: Node) -> str:
    # A list of scopes is friendlier to read; OAuth2 wants them space-separated.
    if isinstance(node, SequenceNode):
        return " ".join(_as_str(item) for item in node.value)
    return _as_str(node)


def _timezone(node: Node) -> str:
    name = _as_str(node)
    if _valid_zone(name):
        return name
    hint = ""
    if "/" in name or name.isalpha():
        hint = _suggest(name, sorted(zoneinfo.available_timezones()))
    raise _Invalid(
        f"unknown time zone {name!r}{hint}; use an IANA name such as Europe/London or UTC"
    )


@dataclass
class _Map:
    """One mapping of the document, checked against the keys its section accepts."""

    path: str
    line: int
    present: bool = False  # the section was written (even if empty)
    entries: dict[str, tuple[Node, Node]] = field(default_factory=dict)

    def get(self, key: str) -> Node | None:
        entry = self.entries.get(key)
        return entry[1] if entry else None

    def given(self, key: str) -> bool:
        """The key is present with a non-null value."""
        node = self.get(key)
        return node is not None and not _is_null(node)

    def key_line(self, key: str) -> int:
        entry = self.entries.get(key)
        return _line(entry[0]) if entry else self.line

    def sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key


class _Checker:
    """Collects every problem and warning while the document is walked."""

    def __init__(self, source: Path) -> None:
        self.file = str(source)
        # Relative paths in the file are relative to the file, not to
        # whatever directory the daemon happened to start in.
        self.source = source.absolute()  # the daemon chdirs to / when it detaches
        self.base = self.source.parent
        self.problems: list[Problem] = []
        self.warnings: list[str] = []

    def problem(self, line: int, path: str, message: str) -> None:
        self.problems.append(Problem(self.file, line, path, message))

    # -- document ---------------------------------------------------------

    def compose(self, text: str) -> Node | None:
        if len(text) > MAX_CONFIG_BYTES or len(text.encode("utf-8", "replace")) > MAX_CONFIG_BYTES:
            self.problem(
                0, "", f"larger than {MAX_CONFIG_BYTES // 1024} KiB: not a configuration file"
            )
            return None
        loader: _Loader | None = None
        try:
            # The reader checks for unprintable characters as it is built:
            # construct inside the try so that is a Problem too.
            loader = _Loader(text)
            return loader.get_single_node()
        except _Hostile as exc:
            self.problem(exc.line, "", exc.message)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 0
            what = exc.problem or "invalid YAML"
            if exc.context:
                what = f"{what} ({exc.context})"
            self.problem(line, "", f"YAML syntax error: {what}")
        except yaml.reader.ReaderError as exc:
            position = exc.position if isinstance(exc.position, int) else 0
            line = text.count("\n", 0, position) + 1
            self.problem(line, "", f"YAML cannot contain character {exc.character!r}: {exc.reason}")
        except yaml.YAMLError as exc:
            self.problem(0, "", f"YAML error: {exc}")
        except RecursionError:  # belt and braces: MAX_DEPTH should make this impossible
            self.problem(0, "", "nested too deeply: refused")
        finally:
            if loader is not None:
                loader.dispose()
        return None

    def mapping(
        self,
        node: Node | None,
        path: str,
        allowed: Sequence[str],
        *,
        line: int,
    ) -> _Map:
        """Check `node` is a mapping with only `allowed` keys; a missing/null node is empty."""
        result = _Map(path=path, line=_line(node) or line)
        if node is None or _is_null(node):
            result.present = node is not None
            return result
        if not isinstance(node, MappingNode):
            self.problem(
                _line(node), path, f"expected a mapping (key: value lines), got {_describe(node)}"
            )
            return result
        result.present = True
        for key_node, value_node in self._pairs(node, path):
            key = str(key_node.value)
            sub = result.sub(key)
            if key in result.entries:
                first = result.key_line(key)
                self.problem(_line(key_node), sub, f"given twice (first on line {first}); keep one")
                continue
            if key not in allowed:
                self.problem(_line(key_node), sub, self._unknown(key, path, allowed))
                continue
            result.entries[key] = (key_node, value_node)
        return result

    def _pairs(self, node: MappingNode, path: str) -> list[tuple[ScalarNode, Node]]:
        """The key/value pairs of a mapping, `<<` merges expanded (explicit keys win)."""
        own: list[tuple[ScalarNode, Node]] = []
        merged: list[tuple[ScalarNode, Node]] = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or _is_null(key_node):
                self.problem(
                    _line(key_node), path, f"a key must be a plain name, got {_describe(key_node)}"
                )
                continue
            if key_node.tag == _TAG + "merge":
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        self.problem(
                            _line(value_node), path, "'<<' must merge a mapping (<<: *name)"
                        )
                        continue
                    # One level only: merges inside merged mappings are not
                    # followed, which also keeps a recursive alias finite.
                    merged.extend(
                        (k, v)
                        for k, v in source.value
                        if isinstance(k, ScalarNode) and k.tag != _TAG + "merge"
                    )
                continue
            own.append((key_node, value_node))
        names = {str(k.value) for k, _ in own}
        seen: set[str] = set()
        for key_node, value_node in merged:
            name = str(key_node.value)
            if name not in names and name not in seen:
                seen.add(name)
                own.append((key_node, value_node))
        return own

    def _unknown(self, key: str, path: str, allowed: Sequence[str]) -> str:
        where = f"under '{path}'" if path else "at the top level"
        if key.lower() in _INLINE_SECRETS:
            instead = _INLINE_SECRETS[key.lower()]
            return (
                "secrets are never written in this file: put it in a file readable only by "
                f"the daemon user (chmod 600) and set account.auth.{instead} to its path, "
                "or pass it as a systemd credential (LoadCredential=)"
            )
        hint = _suggest(key, allowed)
        if not hint:
            homes = [name for name, keys in _SECTIONS.items() if key in keys and name != path]
            if homes:
                hint = f"; {key!r} belongs under '{homes[0]}'"
            elif key in _TOP_KEYS and path:
                hint = f"; {key!r} is a top-level key"
        return f"unknown key {key!r} {where}{hint}"

    # -- values -----------------------------------------------------------

    def get(self, m: _Map, key: str, convert: Callable[[Node], T], default: T) -> T:
        """The converted value of `key`, or `default` when absent, null or wrong (a Problem)."""
        node = m.get(key)
        if node is None or _is_null(node):
            return default
        try:
            return convert(node)
        except _Invalid as exc:
            self.problem(_line(node), m.sub(key), str(exc))
            return default

    def require(self, m: _Map, key: str, convert: Callable[[Node], T], what: str) -> T | None:
        if not m.given(key):
            where = m.key_line(key) if key in m.entries else m.line
            self.problem(where, m.sub(key), f"required: {what}")
            return None
        return self.get(m, key, convert, None)

    def items(
        self, m: _Map, key: str, convert: Callable[[Node], T], default: Sequence[T]
    ) -> tuple[T, ...] | None:
        """A list of values (a single scalar counts as a list of one); None when wrong."""
        node = m.get(key)
        if node is None or _is_null(node):
            return tuple(default)
        nodes = node.value if isinstance(node, SequenceNode) else [node]
        if isinstance(node, MappingNode):
            self.problem(_line(node), m.sub(key), "expected a list, got a mapping")
            return None
        values: list[T] = []
        ok = True
        for index, item in enumerate(nodes):
            try:
                values.append(convert(item))
            except _Invalid as exc:
                self.problem(_line(item), f"{m.sub(key)}[{index}]", str(exc))
                ok = False
        return tuple(values) if ok else None

    def path(self, node: Node) -> Path:
        text = _as_str(node)
        if "\x00" in text:  # possible via "\0" in quotes; the OS would refuse it later
            raise _Invalid("a path cannot contain a NUL character")
        path = Path(text)
        if text.startswith("~"):
            try:
                path = path.expanduser()
            except RuntimeError:
                raise _Invalid(f"{text!r}: no such user's home directory") from None
        return path if path.is_absolute() else self.base / path

    def warn(self, message: str) -> None:
        self.warnings.append(message)


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


def _account(c: _Checker, top: _Map) -> Account:
    m = c.mapping(top.get("account"), "account", _ACCOUNT_KEYS, line=top.line)
    if top.given("account") and not isinstance(top.get("account"), MappingNode):
        address = ""  # mapping() has said what is wrong; "address: required" would be noise
    elif not top.given("account"):
        c.problem(
            top.key_line("account"),
            "account",
            "required: a mapping with at least `address:` (the practice's email address)",
        )
        address = ""
    else:
        address = c.require(m, "address", _address, "the practice's email address") or ""
    display_name = c.get(m, "display_name", _as_str, None)
    auth = _auth(c, c.mapping(m.get("auth"), "account.auth", _AUTH_KEYS, line=m.line), address)
    return Account(address=address, display_name=display_name, auth=auth)


def _auth(c: _Checker, m: _Map, address: str) -> Auth:
    method = cast(
        Literal["password", "oauth2", "none"],
        c.get(m, "method", _choice("password", "oauth2", "none"), "password"),
    )
    username = c.get(m, "username", _as_str, address)
    password_file = c.get(m, "password_file", c.path, None)
    if method != "password" and m.given("password_file"):
        c.problem(
            m.key_line("password_file"),
            m.sub("password_file"),
            f"only used with method: password (method is {method}); remove it",
        )
        password_file = None
    if method != "oauth2":
        for key in _OAUTH2_KEYS:
            if m.given(key):
                c.problem(
                    m.key_line(key),
                    m.sub(key),
                    f"only used with method: oauth2 (method is {method}); "
                    "set `method: oauth2` or remove it",
                )
        if method == "password" and password_file is None:
            c.warn(
                "account.auth.password_file is not set: the password must come from "
                "$CREDENTIALS_DIRECTORY/password (systemd LoadCredential=password:/path) "
                "at run time"
            )
        return Auth(method=method, username=username, password_file=password_file)

    provider = cast(
        Literal["microsoft365", "google", "custom"],
        c.get(m, "provider", _choice("microsoft365", "google", "custom"), "custom"),
    )
    preset = _PRESETS.get(provider)
    token_url = c.get(m, "token_url", _url, None)
    if token_url is None and not m.given("token_url"):
        if preset is not None:
            token_url = preset.token_url
        else:
            c.problem(
                m.line,
                m.sub("token_url"),
                "required with provider custom (or set provider: microsoft365 or google)",
            )
    device_url = c.get(m, "device_authorization_url", _url, None)
    if device_url is None and not m.given("device_authorization_url") and preset is not None:
        device_url = preset.device_authorization_url
    for key, url in (("token_url", token_url), ("device_authorization_url", device_url)):
        if url is not None and urlsplit(url).scheme == "http":
            host = urlsplit(url).hostname or ""
            if not _is_loopback(host):
                c.problem(
                    m.key_line(key),
                    m.sub(key),
                    f"http:// would send the client secret and refresh token unencrypted to "
                    f"{host}; plain http is only allowed to this machine (localhost, 127.0.0.1, "
                    "::1): use https://",
                )
    client_id = c.require(m, "client_id", _as_str, "the OAuth2 application (client) id")
    scope = c.get(m, "scope", _scope, preset.scope if preset else None)
    refresh_token_file = c.get(m, "refresh_token_file", c.path, None)
    if refresh_token_file is None:
        c.warn(
            "account.auth.refresh_token_file is not set: the refresh token must come from "
            "$CREDENTIALS_DIRECTORY/refresh_token, and a rotated token cannot be saved"
        )
    return Auth(
        method="oauth2",
        username=username,
        provider=provider,
        token_url=token_url,
        client_id=client_id,
        client_secret_file=c.get(m, "client_secret_file", c.path, None),
        refresh_token_file=refresh_token_file,
        scope=scope,
        device_authorization_url=device_url,
    )


def _server(
    c: _Checker,
    top: _Map,
    name: Literal["incoming", "outgoing"],
    auth: Auth,
) -> Server | Incoming | None:
    node = top.get(name)
    preset = _PRESETS.get(auth.provider or "") if auth.method == "oauth2" else None
    if (
        name == "incoming"
        and isinstance(node, ScalarNode)
        and not _is_null(node)
        and str(node.value).strip().lower() in ("none", "false", "off", "no")
    ):
        return None
    if (node is None or _is_null(node)) and preset is None:
        what = (
            "the mailbox server (protocol, host, ...), or `incoming: none` "
            "if this account only sends"
            if name == "incoming"
            else "the SMTP server (host, port, security)"
        )
        c.problem(top.key_line(name), name, f"required: {what}")
        return None
    keys = _INCOMING_KEYS if name == "incoming" else _SERVER_KEYS
    m = c.mapping(node, name, keys, line=top.line)
    if node is not None and not _is_null(node) and not isinstance(node, MappingNode):
        return None  # already reported by mapping()

    protocol = "smtp"
    if name == "incoming":
        protocol = c.get(m, "protocol", _choice("imap", "pop3"), "imap")
    preset_host: tuple[str, Security] | None = None
    if preset is not None:
        preset_host = {"smtp": preset.smtp, "imap": preset.imap, "pop3": preset.pop3}[protocol]

    if m.given("host"):
        host = c.get(m, "host", _host, "")
        default_security: str = "tls" if name == "incoming" else "starttls"
    elif preset_host is not None:
        # The preset's encryption belongs to the preset's host: only used
        # together, so an explicit host never inherits it by accident.
        host, default_security = preset_host
    else:
        c.problem(m.key_line("host"), m.sub("host"), "required: the server's host name")
        host, default_security = "", "tls"
    security = cast(
        Security, c.get(m, "security", _choice("tls", "starttls", "none"), default_security)
    )
    port = c.get(m, "port", _port, _default_port(protocol, security))
    tls_ca_file = c.get(m, "tls_ca_file", c.path, None)

    if security == "none" and host:
        if auth.method != "none" and not _is_loopback(host):
            c.problem(
                m.key_line("security"),
                m.sub("security"),
                f"security: none would send the login for {auth.username or 'the account'} "
                f"unencrypted to {host}; unencrypted logins are only allowed to a relay on this "
                "machine (localhost, 127.0.0.1, ::1): use security: tls or starttls",
            )
        if tls_ca_file is not None:
            c.warn(f"{name}.tls_ca_file is ignored with security: none")
    if tls_ca_file is not None and not tls_ca_file.exists():
        c.warn(f"{name}.tls_ca_file {tls_ca_file} does not exist (yet)")

    if name == "outgoing":
        return Server(host=host, port=port, security=security, tls_ca_file=tls_ca_file)
    if protocol == "pop3" and m.given("folder"):
        c.warn("incoming.folder is ignored with protocol: pop3 (POP3 has only the inbox)")
    return Incoming(
        host=host,
        port=port,
        security=security,
        tls_ca_file=tls_ca_file,
        protocol=cast(Literal["imap", "pop3"], protocol),
        folder=c.get(m, "folder", _as_str, "INBOX"),
        leave_on_server=c.get(m, "leave_on_server", _as_bool, True),
    )


def _day(node: Node) -> Weekday:
    text = _text(node, "a day (mon ... sun)").strip().lower()
    if text in _DAY_NAMES:
        return _DAY_NAMES[text]
    raise _Invalid(
        f"expected a day: mon, tue, wed, thu, fri, sat or sun, got {_describe(node)}"
        f"{_suggest(text, ALL_DAYS) or _suggest(text, list(_DAY_NAMES))}"
    )


def _schedule(c: _Checker, top: _Map, receiving: bool) -> Schedule:
    m = c.mapping(top.get("schedule"), "schedule", _SCHEDULE_KEYS, line=top.line)
    days = c.items(m, "days", _day, ALL_DAYS)
    if days is not None and not days:
        c.problem(m.key_line("days"), m.sub("days"), "empty: list at least one day, or omit it")
    days = tuple(d for d in ALL_DAYS if d in (days or ALL_DAYS))
    window = c.get(m, "window", _window, None)

    every: float | None = 300.0
    node = m.get("every")
    if node is not None:
        if _is_null(node) or (
            isinstance(node, ScalarNode)
            and str(node.value).strip().lower() in ("off", "false", "none")
        ):
            every = None
        else:
            every = c.get(m, "every", _positive_duration, 300.0)
    at = tuple(sorted(set(c.items(m, "at", _hhmm, ()) or ())))
    if every is None and not at and receiving:
        c.problem(
            m.key_line("every"),
            m.sub("every"),
            "with every: off the mailbox is never checked: give every: (e.g. 5m) or at: times",
        )
    if every is not None and every < MIN_CHECK_INTERVAL and receiving:
        c.warn(
            f"schedule.every is {format_seconds(every)}: providers may object to checks more "
            "often than once a minute (throttling or blocking the account)"
        )
    return Schedule(days=days, window=window, every=every, at=at)


def _receive(c: _Checker, top: _Map, incoming: Incoming | None, state_dir: Path) -> Receive | None:
    m = c.mapping(top.get("receive"), "receive", _RECEIVE_KEYS, line=top.line)
    maildir = c.get(m, "maildir", c.path, state_dir / "inbox")
    attachments = cast(
        Literal["keep", "strip", "extract"],
        c.get(m, "attachments", _choice("keep", "strip", "extract"), "keep"),
    )
    attachments_dir = c.get(m, "attachments_dir", c.path, None)
    if attachments == "extract" and attachments_dir is None and not m.given("attachments_dir"):
        c.problem(
            m.key_line("attachments"),
            m.sub("attachments_dir"),
            "required with attachments: extract (the directory attachments are saved to)",
        )
    sizes: dict[str, int] = {}
    if m.given("max_attachment_size"):
        sizes["max_attachment_size"] = c.get(m, "max_attachment_size", _positive_size, 1)
    if incoming is None:
        if m.entries:
            c.warn("the receive: section is ignored with incoming: none")
        return None
    return Receive(
        maildir=maildir, attachments=attachments, attachments_dir=attachments_dir, **sizes
    )


def _send(c: _Checker, top: _Map, schedule: Schedule, incoming: Incoming | None) -> Send:
    m = c.mapping(top.get("send"), "send", _SEND_KEYS, line=top.line)
    immediately = c.get(m, "immediately", _as_bool, False)
    daily_limit = c.get(m, "daily_limit", _positive_int, None)
    reserve = c.get(m, "reserve", _as_int, 0)
    limit_ok = daily_limit is not None or not m.given("daily_limit")
    limit = daily_limit or DEFAULT_DAILY_LIMIT
    reserve_ok = True
    if reserve < 0 or (limit_ok and reserve >= limit):
        c.problem(
            m.key_line("reserve"),
            m.sub("reserve"),
            f"must be at least 0 and below daily_limit ({limit}), got {reserve}",
        )
        reserve_ok = False
    hours = schedule.window.hours if schedule.window else 24.0

    delay = DEFAULT_DELAY
    source: Literal["delay", "per_minute", "auto"] = "delay"
    if m.given("delay") and m.given("per_minute"):
        c.problem(
            m.key_line("per_minute"),
            m.sub("per_minute"),
            "give either delay or per_minute, not both",
        )
    elif m.given("per_minute"):
        per_minute = c.get(m, "per_minute", _positive_int, None)
        if per_minute is not None:
            delay, source = 60.0 / per_minute, "per_minute"
    elif m.given("delay"):
        node = m.get("delay")
        assert node is not None
        if isinstance(node, ScalarNode) and str(node.value).strip().lower() == "auto":
            source = "auto"
            if limit_ok and reserve_ok:
                delay = plan(limit, hours, reserve).delay
        else:
            delay = c.get(m, "delay", _duration, DEFAULT_DELAY)

    retry_intervals = c.items(m, "retry_intervals", _positive_duration, Send.retry_intervals)
    if retry_intervals is not None and not retry_intervals:
        c.problem(
            m.key_line("retry_intervals"),
            m.sub("retry_intervals"),
            "empty: give at least one interval, e.g. [1m, 5m, 15m, 1h]",
        )
    account_pause = c.items(m, "account_pause", _positive_duration, Send.account_pause)
    if account_pause is not None and not account_pause:
        c.problem(
            m.key_line("account_pause"),
            m.sub("account_pause"),
            "empty: give at least one pause, e.g. [1m, 5m, 30m]",
        )
    count_sent_folder = c.get(m, "count_sent_folder", _as_str, None)
    if count_sent_folder is not None and (incoming is None or incoming.protocol != "imap"):
        c.warn(
            "send.count_sent_folder needs an imap incoming server: mail sent from webmail "
            "will not be counted against the limit"
        )
    signature = c.get(m, "signature", c.path, None)
    if signature is not None and not signature.is_file():
        c.warn(f"send.signature {signature} does not exist (yet): sending will fail without it")

    if immediately and (m.given("delay") or m.given("per_minute")):
        c.warn("send.delay / send.per_minute are ignored while send.immediately is true")
    # Only a delay the user chose: the built-in 60 s default fits the design's
    # 500 a day over 8 h, and warning about a value nobody wrote is noise.
    explicit = m.given("delay") or m.given("per_minute")
    if not immediately and explicit and limit_ok and reserve_ok:
        _warn_fast(c, delay, limit, reserve, hours, schedule)

    return Send(
        immediately=immediately,
        delay=delay,
        delay_source=source,
        daily_limit=limit,
        limit_window=cast(
            Literal["calendar_day", "rolling_24h"],
            c.get(m, "limit_window", _choice("calendar_day", "rolling_24h"), "calendar_day"),
        ),
        limit_counts=cast(
            Literal["messages", "recipients"],
            c.get(m, "limit_counts", _choice("messages", "recipients"), "messages"),
        ),
        reserve=reserve,
        retry_intervals=retry_intervals or Send.retry_intervals,
        give_up_after=c.get(m, "give_up_after", _positive_duration, Send.give_up_after),
        on_unknown_outcome=cast(
            Literal["retry", "hold"],
            c.get(m, "on_unknown_outcome", _choice("retry", "hold"), "retry"),
        ),
        account_pause=account_pause or Send.account_pause,
        count_sent_folder=count_sent_folder,
        signature=signature,
    )


def _warn_fast(
    c: _Checker, delay: float, limit: int, reserve: int, hours: float, schedule: Schedule
) -> None:
    """Warn when the pacing would spend the allowance before the sending window ends.

    Not an error: the hard cap still holds; but the practice would find its
    mail stuck in the afternoon, which is what the delay exists to prevent.
    """
    allowance = limit - reserve
    window_seconds = hours * 3600
    # Sends that fit in the window at this pacing. `plan()` rounds so that its
    # own delay never exceeds the allowance, so `delay: auto` never warns.
    fits = math.inf if delay <= 0 else math.floor(window_seconds / delay)
    if fits <= allowance:
        return
    where = f"the {hours:g} h sending window {schedule.window}" if schedule.window else "the day"
    c.warn(
        f"send: at {format_seconds(delay)} between sends, the {allowance} allowed sends "
        f"(daily_limit {limit} - reserve {reserve}) are used up after "
        f"{_span(allowance * delay)} of {where}; then the hard cap stops sending until the "
        f"limit window resets. The safe steady rate is {plan(limit, hours, reserve).describe()} "
        "(delay: auto)"
    )


def _metrics(node: Node) -> Metrics:
    text = _text(node, "HOST:PORT or off").strip()
    if text.lower() in ("off", "false", "no", "none"):
        return Metrics(host=None)
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise _Invalid(f"{text!r}: expected [IPv6]:PORT, e.g. [::1]:{DEFAULT_METRICS_PORT}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise _Invalid(
                f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_METRICS_PORT}, or off"
            )
        if ":" in host:
            raise _Invalid(
                f"{text!r}: put an IPv6 address in brackets: [::1]:{DEFAULT_METRICS_PORT}"
            )
    if not host:
        raise _Invalid(
            f"{text!r}: give the address to listen on: 127.0.0.1 for this machine only, "
            "0.0.0.0 for every interface"
        )
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _Invalid(f"{text!r}: the port must be a number from 1 to 65535")
    return Metrics(host=host, port=int(port_text))


def _build(c: _Checker, root: Node) -> Config | None:
    if _is_null(root):
        c.problem(1, "", "the file is empty: it needs at least account: and outgoing:")
        return None
    if not isinstance(root, MappingNode):
        c.problem(_line(root), "", f"expected a mapping of settings, got {_describe(root)}")
        return None
    top = c.mapping(root, "", _TOP_KEYS, line=_line(root))
    timezone = c.get(top, "timezone", _timezone, None) or system_timezone()
    state_dir = c.get(top, "state_dir", c.path, DEFAULT_STATE_DIR)
    account = _account(c, top)
    incoming = _server(c, top, "incoming", account.auth)
    outgoing = _server(c, top, "outgoing", account.auth)
    assert incoming is None or isinstance(incoming, Incoming)
    receiving = incoming is not None or not top.given("incoming")
    schedule = _schedule(c, top, receiving)
    receive = _receive(c, top, incoming, state_dir)
    send = _send(c, top, schedule, incoming)

    spool_m = c.mapping(top.get("spool"), "spool", _SPOOL_KEYS, line=top.line)
    spool_dir = c.get(spool_m, "dir", c.path, DEFAULT_SPOOL_DIR)
    spool_sizes: dict[str, int] = {}
    if spool_m.given("max_message_size"):
        spool_sizes["max_message_size"] = c.get(spool_m, "max_message_size", _positive_size, 1)
    spool = Spool(dir=spool_dir, **spool_sizes)

    metrics_m = c.mapping(top.get("metrics"), "metrics", _METRICS_KEYS, line=top.line)
    metrics = c.get(
        metrics_m, "listen", _metrics, Metrics(DEFAULT_METRICS_HOST, DEFAULT_METRICS_PORT)
    )
    if metrics.host is not None and not _is_loopback(metrics.host):
        c.warn(
            f"metrics.listen {metrics.host}:{metrics.port} is reachable from other machines: "
            "firewall the port, or listen on 127.0.0.1 and scrape through a proxy"
        )

    log_m = c.mapping(top.get("log"), "log", _LOG_KEYS, line=top.line)
    log = Log(
        format=cast(
            Literal["auto", "json", "console"],
            c.get(log_m, "format", _choice("auto", "json", "console"), "auto"),
        ),
        level=cast(
            Literal["debug", "info", "warning", "error"],
            c.get(log_m, "level", _choice("debug", "info", "warning", "error"), "info"),
        ),
        file=c.get(log_m, "file", c.path, None),
    )

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
    )


# --------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------


def _raise(c: _Checker) -> NoReturn:
    # Sorted by line so the output reads top to bottom like the file.
    raise ConfigError(sorted(c.problems, key=lambda p: p.line))


def parse(text: str, source: Path | str) -> Config:
    """Validate configuration `text` (read from `source`) into a `Config`.

    Raises `ConfigError` listing every problem found; never any other
    exception for any input. Relative paths are resolved against the
    directory of `source`.
    """
    source = Path(source)
    c = _Checker(source)
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
    c = _Checker(path)
    try:
        with open(path, "rb") as handle:
            # Read one byte past the cap: enough to know, never the whole of
            # a huge or endless file (/dev/zero).
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        c.problem(0, "", "no such file (give another with -c/--config or $EXACTMAILD_CONFIG)")
        _raise(c)
    except IsADirectoryError:
        c.problem(0, "", "is a directory, not a configuration file")
        _raise(c)
    except PermissionError:
        c.problem(0, "", f"cannot be read by this user (uid {os.geteuid()}): check its permissions")
        _raise(c)
    except OSError as exc:
        c.problem(0, "", f"cannot be read: {exc.strerror or exc}")
        _raise(c)
    if len(data) > MAX_CONFIG_BYTES:
        c.problem(0, "", f"larger than {MAX_CONFIG_BYTES // 1024} KiB: not a configuration file")
        _raise(c)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        c.problem(line, "", "not UTF-8 text: save the file as UTF-8")
        _raise(c)
    return parse(text, path)


def summary(cfg: Config) -> str:
    """What `exactmaild check-config` prints for a valid configuration.

    Everything a sysadmin needs to confirm the daemon will do what they
    meant, above all the effective pacing; never a secret, only where each
    secret will be read from.
    """
    s = cfg.send
    lines = [f"configuration {cfg.source}: OK", ""]

    def row(label: str, text: str) -> None:
        lines.append(f"  {label + ':':<15} {text}")

    row("timezone", cfg.timezone)
    account = cfg.account.address
    if cfg.account.display_name:
        account = f"{cfg.account.display_name} <{account}>"
    row("account", account)
    auth = cfg.account.auth
    if auth.method == "password":
        row("login", f"password for {auth.username}")
        row("password from", secrets.secret_source(auth.password_file, secrets.PASSWORD))
    elif auth.method == "oauth2":
        row("login", f"OAuth2 (XOAUTH2) for {auth.username}, provider {auth.provider}")
        row("token url", auth.token_url or "-")
        row("client id", auth.client_id or "-")
        row("scope", auth.scope or "(none)")
        row(
            "refresh token",
            secrets.secret_source(auth.refresh_token_file, secrets.REFRESH_TOKEN),
        )
        if auth.client_secret_file is not None:
            row(
                "client secret",
                secrets.secret_source(auth.client_secret_file, secrets.CLIENT_SECRET),
            )
    else:
        row("login", "none (a relay that needs no login)")

    if cfg.incoming is None:
        row("incoming", "none (this account only sends)")
    else:
        i = cfg.incoming
        text = f"{i.protocol} {i.host}:{i.port}, {i.security}"
        if i.protocol == "imap":
            text += f", folder {i.folder}"
        text += (
            ", mail left on the server" if i.leave_on_server else ", mail deleted after delivery"
        )
        row("incoming", text)
    o = cfg.outgoing
    row("outgoing", f"smtp {o.host}:{o.port}, {o.security}")

    sc = cfg.schedule
    days = "every day" if sc.days == ALL_DAYS else ", ".join(sc.days)
    row("days", days)
    row("window", str(sc.window) if sc.window else "all day")
    if cfg.incoming is not None:
        checks = f"every {_span(sc.every)}" if sc.every is not None else "no periodic checks"
        if sc.window and sc.every is not None:
            checks += f" within {sc.window}"
        if sc.at:
            checks += "; at " + ", ".join(f"{t:%H:%M}" for t in sc.at)
        row("mail checks", checks)

    hours = sc.window.hours if sc.window else 24.0
    per = "calendar day" if s.limit_window == "calendar_day" else "rolling 24 h"
    if s.immediately:
        row(
            "pacing",
            "immediately: no delay and no sending window; a queued message cannot be "
            "cancelled before it goes",
        )
    else:
        how = {"delay": "send.delay", "per_minute": "send.per_minute", "auto": "delay: auto"}
        if s.delay > 0:
            rate = 60.0 / s.delay
            per_minute = f"{rate:.3g} email{'' if rate == 1 else 's'} a minute"
        else:
            per_minute = "no delay"
        row(
            "pacing",
            f"{format_seconds(s.delay)} between sends = {per_minute} (from {how[s.delay_source]})",
        )
    row("daily limit", f"{s.daily_limit} {s.limit_counts} per {per}")
    row("reserve", f"{s.reserve} (kept back for mail sent elsewhere)")
    row("allowance", f"{s.allowance} sends per {per}, a hard cap")
    row("safe rate", plan(s.daily_limit, hours, s.reserve).describe())
    row(
        "retries",
        ", ".join(_span(r) for r in s.retry_intervals)
        + f" (the last repeats); give up after {_span(s.give_up_after)}; "
        f"unknown outcome: {s.on_unknown_outcome}",
    )
    row(
        "account pause",
        ", ".join(_span(r) for r in s.account_pause)
        + " (login refused or quota reached: the whole queue waits; the last repeats)",
    )
    if s.count_sent_folder:
        row("sent folder", f"{s.count_sent_folder!r} counted against the limit")
    row("signature", str(s.signature) if s.signature else "none")

    row("spool", f"{cfg.spool.dir} (messages up to {_format_size(cfg.spool.max_message_size)})")
    row("state dir", str(cfg.state_dir))
    if cfg.receive is not None:
        r = cfg.receive
        text = f"{r.maildir}, attachments {r.attachments}"
        if r.attachments == "extract":
            text += f" to {r.attachments_dir}"
        text += f" (up to {_format_size(r.max_attachment_size)})"
        row("maildir", text)
    m = cfg.metrics
    if m.host is None:
        row("metrics", "off")
    else:
        host = f"[{m.host}]" if ":" in m.host else m.host
        row("metrics", f"http://{host}:{m.port}/metrics")
    row(
        "log",
        f"{cfg.log.format}, level {cfg.log.level}"
        + (f", to {cfg.log.file}" if cfg.log.file else ""),
    )

    if cfg.warnings:
        lines += ["", "warnings:"]
        lines += [f"  - {w}" for w in cfg.warnings]
    return "\n".join(lines)
