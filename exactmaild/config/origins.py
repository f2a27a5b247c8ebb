"""Where each limit value came from: the file (FILE:LINE), a provider preset, or the default.

The provider's limits (`exactmaild.config.providers`) are defaults that the
file overrides key by key; `check-config` prints the value of each limit
key with its origin, so a sysadmin can tell a preset's 10,000 from one they
wrote. The sections note each key as they read it; `load` hands the result
to the `Config`.
"""

from __future__ import annotations

from exactmaild.config.providers import PRESETS, Limits
from exactmaild.config.yamlnodes import Checker, Map

BUILT_IN = "built-in default"

# The keys whose origin check-config shows, in the order it shows them.
LIMIT_KEYS = (
    "send.daily_limit",
    "send.limit_window",
    "send.limit_counts",
    "send.reserve",
    "send.max_per_minute",
    "outgoing.max_recipients",
)


class Origins:
    """The origin of each limit key of one file, noted as the sections read it."""

    def __init__(self, source: str, provider: str | None) -> None:
        self.source = source
        preset = PRESETS.get(provider or "")
        self.provider = provider if preset is not None else None
        self.limits: Limits | None = preset.limits if preset is not None else None
        self._seen: dict[str, str] = {}

    def preset(self, path: str) -> object | None:
        """The preset's value for `path` (None: no preset, or it sets none)."""
        return None if self.limits is None else self.limits.items().get(path)

    def default(self, path: str, built_in: object) -> object:
        """The value a key not written in the file takes: the preset's, else `built_in`."""
        value = self.preset(path)
        return built_in if value is None else value

    def note(self, m: Map, key: str, path: str) -> None:
        """Record where `path` (written as `key` in the mapping `m`) comes from."""
        if m.given(key):
            self._seen[path] = f"{self.source}:{m.key_line(key)}"
        elif self.preset(path) is not None:
            self._seen[path] = f"preset {self.provider}"
        else:
            self._seen[path] = BUILT_IN

    def items(self) -> tuple[tuple[str, str], ...]:
        return tuple((k, self._seen.get(k, BUILT_IN)) for k in LIMIT_KEYS)


# Addresses of consumer Gmail, whose limits are not Google Workspace's.
_GMAIL = ("gmail.com", "googlemail.com")


def consumer_gmail(c: Checker, address: str, origins: Origins) -> None:
    """Warn when the google preset's daily limit (Workspace's 2,000) applies to
    a consumer Gmail address, which Google lets send about 500 a day."""
    if origins.provider != "google" or address.rpartition("@")[2].lower() not in _GMAIL:
        return
    if dict(origins.items()).get("send.daily_limit", "").startswith("preset"):
        c.warn(
            f"send.daily_limit: the google preset's {origins.default('send.daily_limit', 0)} a "
            f"day is Google Workspace's; {address} is a consumer Gmail account, which allows "
            "about 500 a day: set send.daily_limit: 500"
        )
