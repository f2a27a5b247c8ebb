"""The provider presets' limits: each a default the file overrides key by
key, and check-config saying where each value came from (the preset, the
file and line, or the built-in default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from exactmaild.cli.summary import summary
from exactmaild.config import load as configload
from exactmaild.config.model import ALL_DAYS, Config
from exactmaild.daemon import logs
from exactmaild.daemon.metrics import Metrics
from exactmaild.outbox.spool import Spool
from exactmaild.send.sender import Sender
from exactmaild.store.state import StateStore
from tests.helpers import message

LIMITS = (
    "send.daily_limit",
    "send.limit_window",
    "send.limit_counts",
    "send.max_per_minute",
    "outgoing.max_recipients",
)


def load(
    tmp_path: Path, provider: str | None, send: dict[str, Any], outgoing: Any = None
) -> Config:
    auth: dict[str, Any] = {"method": "password", "password_file": str(tmp_path / "pw")}
    if provider is not None:
        auth = {
            "method": "oauth2",
            "provider": provider,
            "client_id": "id",
            "refresh_token_file": str(tmp_path / "rt"),
        }
    doc: dict[str, Any] = {
        "timezone": "Europe/London",
        "account": {"address": "reception@practice.example", "auth": auth},
        "incoming": "none",
        "spool": {"dir": str(tmp_path / "spool")},
        "state_dir": str(tmp_path / "state"),
    }
    if send:
        doc["send"] = send
    if outgoing is not None:
        doc["outgoing"] = outgoing
    elif provider is None:
        doc["outgoing"] = {"host": "127.0.0.1", "port": 2525, "security": "none"}
    path = tmp_path / "exactmaild.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return configload.load(path)


def values(cfg: Config) -> tuple[object, ...]:
    s = cfg.send
    return (
        s.daily_limit,
        s.limit_window,
        s.limit_counts,
        s.max_per_minute,
        cfg.outgoing.max_recipients,
    )


# (provider, the file's send section, its outgoing.max_recipients) ->
# (daily_limit, limit_window, limit_counts, max_per_minute, max_recipients),
# and which of the keys the file gave (the rest: preset or built-in).
CASES = [
    (None, {}, None, (500, "calendar_day", "messages", None, None), ()),
    ("microsoft365", {}, None, (10_000, "rolling_24h", "recipients", 30, 500), ()),
    ("google", {}, None, (2_000, "rolling_24h", "messages", None, 100), ()),
    (
        "microsoft365",
        {"daily_limit": 5000, "limit_counts": "messages"},
        None,
        (5000, "rolling_24h", "messages", 30, 500),
        ("send.daily_limit", "send.limit_counts"),
    ),
    (
        "microsoft365",
        {"max_per_minute": "none"},
        200,
        (10_000, "rolling_24h", "recipients", None, 200),
        ("send.max_per_minute", "outgoing.max_recipients"),
    ),
    (
        "google",
        {"limit_window": "calendar_day", "max_per_minute": 10},
        None,
        (2_000, "calendar_day", "messages", 10, 100),
        ("send.limit_window", "send.max_per_minute"),
    ),
    ("custom", {"daily_limit": 800}, None, (800, "calendar_day", "messages", None, None), None),
]


@pytest.mark.parametrize(("provider", "send", "max_rcpt", "want", "given"), CASES)
def test_the_merge(
    tmp_path: Path,
    provider: str | None,
    send: dict[str, Any],
    max_rcpt: int | None,
    want: tuple[object, ...],
    given: tuple[str, ...] | None,
) -> None:
    if provider == "custom":
        return _custom(tmp_path, send, want)
    outgoing = None if max_rcpt is None else {"max_recipients": max_rcpt}
    if provider is None and outgoing is not None:
        outgoing.update(host="127.0.0.1", port=2525, security="none")
    cfg = load(tmp_path, provider, send, outgoing)
    assert values(cfg) == want
    origins = dict(cfg.origins)
    path = str(tmp_path / "exactmaild.yaml")
    for key in LIMITS:
        if given and key in given:
            assert origins[key].startswith(f"{path}:"), key
        elif (provider is not None and key != "send.max_per_minute") or (
            provider == "microsoft365" and key == "send.max_per_minute"
        ):
            assert origins[key] == f"preset {provider}", key
        else:
            assert origins[key] == "built-in default", key


def _custom(tmp_path: Path, send: dict[str, Any], want: tuple[object, ...]) -> None:
    """provider: custom has servers of its own and no limits: built-in defaults."""
    doc = {
        "account": {
            "address": "reception@practice.example",
            "auth": {
                "method": "oauth2",
                "provider": "custom",
                "token_url": "https://login.example/token",
                "client_id": "id",
                "refresh_token_file": str(tmp_path / "rt"),
            },
        },
        "incoming": "none",
        "outgoing": {"host": "smtp.example.org"},
        "send": send,
        "spool": {"dir": str(tmp_path / "spool")},
        "state_dir": str(tmp_path / "state"),
    }
    path = tmp_path / "exactmaild.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = configload.load(path)
    assert values(cfg) == want
    assert dict(cfg.origins)["send.daily_limit"] == f"{path}:{_line(path, 'daily_limit')}"
    assert dict(cfg.origins)["outgoing.max_recipients"] == "built-in default"


def _line(path: Path, key: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if key + ":" in line)


@pytest.mark.parametrize(
    ("provider", "send", "rows"),
    [
        (
            "microsoft365",
            {"reserve": 100},
            [
                ("send.daily_limit", "10000", "preset microsoft365"),
                ("send.limit_window", "rolling_24h", "preset microsoft365"),
                ("send.limit_counts", "recipients", "preset microsoft365"),
                ("send.reserve", "100", "FILE:reserve"),
                ("send.max_per_minute", "30", "preset microsoft365"),
                ("outgoing.max_recipients", "500", "preset microsoft365"),
            ],
        ),
        (
            None,
            {"daily_limit": 1000},
            [
                ("send.daily_limit", "1000", "FILE:daily_limit"),
                ("send.limit_window", "calendar_day", "built-in default"),
                ("send.limit_counts", "messages", "built-in default"),
                ("send.reserve", "0", "built-in default"),
                ("send.max_per_minute", "none", "built-in default"),
                ("outgoing.max_recipients", "none", "built-in default"),
            ],
        ),
    ],
)
def test_check_config_shows_where_each_limit_comes_from(
    tmp_path: Path, provider: str | None, send: dict[str, Any], rows: list[tuple[str, str, str]]
) -> None:
    cfg = load(tmp_path, provider, send)
    text = summary(cfg)
    path = tmp_path / "exactmaild.yaml"
    for key, value, origin in rows:
        if origin.startswith("FILE:"):
            origin = f"{path}:{_line(path, origin[5:])}"
        line = next(x for x in text.splitlines() if x.strip().startswith(key + " "))
        assert line.split() == [key, value, *origin.split()], line
    if provider == "microsoft365":
        assert "rate ceiling:   at most 30 a minute" in text


def test_a_consumer_gmail_address_is_warned_about_the_workspace_limit(tmp_path: Path) -> None:
    doc_cfg = load(tmp_path, "google", {})
    assert not [w for w in doc_cfg.warnings if "consumer Gmail" in w]
    text = (tmp_path / "exactmaild.yaml").read_text()
    (tmp_path / "exactmaild.yaml").write_text(text.replace("practice.example", "gmail.com"))
    cfg = configload.load(tmp_path / "exactmaild.yaml")
    assert any("consumer Gmail" in w and "daily_limit: 500" in w for w in cfg.warnings)


def test_the_sender_keeps_to_the_ceiling_with_immediately_and_flush(tmp_path: Path) -> None:
    """The daemon's own pacing carries the ceiling: right after a send, the
    next waits out the gap (2 s at 30 a minute), a flush included, and the
    flush is still on when it goes."""

    class Quick:
        connected = False

        def close(self) -> None:
            pass

    cfg = load(tmp_path, "microsoft365", {"immediately": True})
    logs.configure(cfg.log)
    store, spool = StateStore(cfg.state_dir), Spool(cfg.spool.dir)
    sender = Sender(cfg, store, spool, Metrics(), logs.get(), transport_factory=lambda c: Quick())  # type: ignore[arg-type,return-value]
    spool.submit(message(1))
    sender.recover()
    sender.last_send = sender.clock.time()  # a send just went
    assert 1.5 < sender.step() <= 2.0
    sender.flush()
    assert 1.5 < sender.step() <= 2.0
    assert sender._flush


def test_status_says_the_ceiling(tmp_path: Path) -> None:
    from exactmaild.cli.status import rate

    sched = {"window": None, "days": list(ALL_DAYS)}
    ceiling = {"immediately": True, "delay_seconds": 2.0, "max_per_minute": 30, "schedule": sched}
    assert rate(ceiling) == "up to 30 a minute, within the limit"
    free = {"immediately": True, "delay_seconds": 0.0, "max_per_minute": None, "schedule": sched}
    assert rate(free) == "as fast as the server takes them, within the limit"


def test_flush_says_all_go_now_at_the_ceilings_pace(tmp_path: Path) -> None:
    """`exactmaild flush` under microsoft365's 30 a minute: the five waiting
    go now, two seconds apart, not one now and the rest "paced as usual"."""
    from exactmaild.cli.status import flush_outlook
    from exactmaild.core.forecast import Forecast

    cfg = load(tmp_path, "microsoft365", {"delay": "5m"})
    spool = Spool(cfg.spool.dir)
    for i in range(5):
        spool.submit(message(i))
    StateStore(cfg.state_dir).close()
    assert flush_outlook(cfg).startswith("sending 5 of 5 now")
    f = Forecast((("a", 10.0), ("b", 12.0), ("c", 14.0), ("d", 300.0)), 10.0, 300.0, None, None)
    assert f.going_now(10.0, 2.0) == 3
    assert f.going_now(10.0) == 1


@pytest.mark.parametrize(
    ("provider", "host", "limits"),
    [
        ("google", "smtp.gmail.com", (2_000, "rolling_24h", "messages", None, 100)),
        ("microsoft365", "smtp.office365.com", (10_000, "rolling_24h", "recipients", 30, 500)),
    ],
)
def test_a_password_login_gets_its_providers_preset(
    tmp_path: Path, provider: str, host: str, limits: tuple[object, ...]
) -> None:
    """A Gmail app password, or a tenant that still allows SMTP AUTH: the
    same servers and the same limits as with OAuth2, and check-config says
    they come from the preset."""
    auth = {"method": "password", "provider": provider, "password_file": str(tmp_path / "pw")}
    doc = {
        "timezone": "Europe/London",
        "account": {"address": "reception@practice.example", "auth": auth},
        "incoming": "none",
        "spool": {"dir": str(tmp_path / "spool")},
        "state_dir": str(tmp_path / "state"),
    }
    path = tmp_path / "exactmaild.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = configload.load(path)
    assert cfg.account.auth.method == "password"
    assert cfg.outgoing.host == host
    assert values(cfg) == limits
    assert f"preset {provider}" in summary(cfg)
