"""The pure value parsers of the configuration: text in, typed value out.

This module owns the units (durations, sizes, times of day, daily windows)
and their formatting for people, the system time zone, the default port of
each protocol and encryption, whether a host is this machine, and the "did
you mean" suggestions. No YAML, no I/O beyond reading /etc for the time zone:
`exactmaild.config.convert` wraps these for YAML nodes, and the CLI calls the
public ones (re-exported by `exactmaild.config.load`) directly.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
import os
import re
import zoneinfo
from collections.abc import Iterable
from pathlib import Path

from exactmaild.config.model import Window

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
                f"{suggest(unit.lower(), ('ms', 's', 'm', 'h', 'd', *_SPELT_UNITS))}; "
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
                f"{suggest(unit, [u.upper().replace('I', 'i') for u in _SIZE_UNITS if u])}; "
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


def span(seconds: float) -> str:
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


def format_size(size: int) -> str:
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


def valid_zone(name: str) -> bool:
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
            if name and not name.startswith("#") and valid_zone(name):
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
        if valid_zone(name):
            return name
    return "UTC"


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------


def default_port(protocol: str, security: str) -> int:
    if protocol == "smtp":
        return {"tls": 465, "starttls": 587}.get(security, 25)
    if protocol == "pop3":
        return 995 if security == "tls" else 110
    return 993 if security == "tls" else 143


def is_loopback(host: str) -> bool:
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
# Suggestions
# --------------------------------------------------------------------------


def suggest(word: str, choices: Iterable[str]) -> str:
    """ "; did you mean 'x'?" when one choice is close, else ""."""
    import difflib  # only for a problem's "did you mean"

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""
