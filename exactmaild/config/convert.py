"""Converters from one YAML node to one typed setting value.

Each takes a scalar (or list) node and returns the value, or raises
`Invalid` with a message fit to show the user; `Checker.get` turns that into
a Problem at the node's line. This module owns the rules of single values:
booleans and whole numbers as YAML 1.1 spells them, durations and sizes,
times and windows, choices, email addresses, hosts, ports, URLs, scopes,
time zones, days and the metrics listen address.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import zoneinfo
from collections.abc import Callable
from urllib.parse import urlsplit

import yaml
from yaml.nodes import Node, ScalarNode, SequenceNode

from exactmaild.config.model import ALL_DAYS, MetricsConfig, Weekday, Window
from exactmaild.config.schema import DAY_NAMES, DEFAULT_METRICS_PORT
from exactmaild.config.values import (
    parse_duration,
    parse_hhmm,
    parse_size,
    parse_window,
    suggest,
    valid_zone,
)
from exactmaild.config.yamlnodes import TAG, Invalid, as_str, describe, node_text

_YAML11_TRUE = {"true", "yes", "on", "y"}
_YAML11_FALSE = {"false", "no", "off", "n"}


def as_bool(node: Node) -> bool:
    text = node_text(node, "true or false").strip().lower()
    if text in _YAML11_TRUE:
        return True
    if text in _YAML11_FALSE:
        return False
    raise Invalid(f"expected true or false, got {describe(node)}")


def as_int(node: Node) -> int:
    text = node_text(node, "a whole number").strip()
    if isinstance(node, ScalarNode) and node.tag == TAG + "int":
        # YAML 1.1 spellings (1_000, 0x1f) count as whole numbers too.
        try:
            return int(yaml.constructor.SafeConstructor().construct_yaml_int(node))
        except (ValueError, TypeError):
            pass
    try:
        return int(text.replace("_", ""), 10)
    except ValueError:
        raise Invalid(f"expected a whole number, got {describe(node)}") from None


def positive_int(node: Node) -> int:
    value = as_int(node)
    if value < 1:
        raise Invalid(f"expected a whole number of at least 1, got {value}")
    return value


def duration(node: Node) -> float:
    try:
        return parse_duration(node_text(node, "a duration such as 90s or 5m"))
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def positive_duration(node: Node) -> float:
    seconds = duration(node)
    if seconds <= 0:
        raise Invalid(f"must be longer than 0, got {describe(node)}")
    return seconds


def positive_size(node: Node) -> int:
    try:
        size = parse_size(node_text(node, "a size such as 25MB"))
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    if size < 1:
        raise Invalid(f"must be more than 0 bytes, got {describe(node)}")
    return size


def hhmm(node: Node) -> dt.time:
    try:
        return parse_hhmm(node_text(node, "a time HH:MM"))
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def window(node: Node) -> Window:
    try:
        return parse_window(node_text(node, "hours HH:MM-HH:MM"))
    except ValueError as exc:
        raise Invalid(str(exc)) from None


def choice(*choices: str) -> Callable[[Node], str]:
    def convert(node: Node) -> str:
        text = node_text(node, "one of " + ", ".join(choices)).strip().lower()
        if text in choices:
            return text
        raise Invalid(
            f"expected one of {', '.join(choices)}, got {describe(node)}{suggest(text, choices)}"
        )

    return convert


_ADDRESS = re.compile(r"[^@\s<>(),;:\"\[\]\\]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*")


def address(node: Node) -> str:
    text = as_str(node)
    if "<" in text:
        raise Invalid(
            f"{text!r}: give the bare address here (name@domain); the name goes in display_name"
        )
    if not _ADDRESS.fullmatch(text):
        raise Invalid(f"{text!r} does not look like an email address (name@domain)")
    return text


def host(node: Node) -> str:
    text = as_str(node)
    if "://" in text or "/" in text:
        raise Invalid(
            f"{text!r}: give the host name only (e.g. mail.example.com); "
            "the protocol and encryption go in protocol: and security:"
        )
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if ":" in text:
        raise Invalid(f"{text!r}: give the host name only; the port goes in port:")
    if re.search(r"\s", text) or not re.fullmatch(r"[A-Za-z0-9._\-]+", text):
        raise Invalid(f"{text!r} is not a host name")
    return text


def port(node: Node) -> int:
    value = as_int(node)
    if not 1 <= value <= 65535:
        raise Invalid(f"a port is a number from 1 to 65535, got {value}")
    return value


def url(node: Node) -> str:
    text = as_str(node)
    try:
        parts = urlsplit(text)
        valid = parts.scheme in ("https", "http") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 address
        valid = False
    if not valid:
        raise Invalid(f"{text!r} is not an https:// URL")
    return text


def scope(node: Node) -> str:
    # A list of scopes is friendlier to read; OAuth2 wants them space-separated.
    if isinstance(node, SequenceNode):
        return " ".join(as_str(item) for item in node.value)
    return as_str(node)


def timezone(node: Node) -> str:
    name = as_str(node)
    if valid_zone(name):
        return name
    hint = ""
    if "/" in name or name.isalpha():
        hint = suggest(name, sorted(zoneinfo.available_timezones()))
    raise Invalid(
        f"unknown time zone {name!r}{hint}; use an IANA name such as Europe/London or UTC"
    )


def day(node: Node) -> Weekday:
    text = node_text(node, "a day (mon ... sun)").strip().lower()
    if text in DAY_NAMES:
        return DAY_NAMES[text]
    raise Invalid(
        f"expected a day: mon, tue, wed, thu, fri, sat or sun, got {describe(node)}"
        f"{suggest(text, ALL_DAYS) or suggest(text, list(DAY_NAMES))}"
    )


def metrics(node: Node) -> MetricsConfig:
    text = node_text(node, "HOST:PORT or off").strip()
    if text.lower() in ("off", "false", "no", "none"):
        return MetricsConfig(host=None)
    if text.startswith("["):
        host, sep, port_text = text[1:].partition("]:")
        if not sep:
            raise Invalid(f"{text!r}: expected [IPv6]:PORT, e.g. [::1]:{DEFAULT_METRICS_PORT}")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise Invalid(
                f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:{DEFAULT_METRICS_PORT}, or off"
            )
        if ":" in host:
            raise Invalid(
                f"{text!r}: put an IPv6 address in brackets: [::1]:{DEFAULT_METRICS_PORT}"
            )
    if not host:
        raise Invalid(
            f"{text!r}: give the address to listen on: 127.0.0.1 for this machine only, "
            "0.0.0.0 for every interface"
        )
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise Invalid(f"{text!r}: the port must be a number from 1 to 65535")
    return MetricsConfig(host=host, port=int(port_text))


# A POSIX portable group name (useradd's default NAME_REGEX, with capitals), or a number.
_GROUP = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?|[0-9]{1,10}")


def group(node: Node) -> str:
    """A group name (or gid) as the host's groupadd accepts it; whether the
    group exists is checked where it is used (check-config, run)."""
    text = node_text(node, "a group name, e.g. practice")
    if not _GROUP.fullmatch(text):
        raise Invalid(f"{text!r} is not a group name (letters, digits, _ . -; e.g. practice)")
    return text
