"""`exactmaild status`: what a sysadmin wants on one screen, daemon running or not.

Everything is read from the durable state and the spool directories (never
from the daemon's memory), so the answer is the same whether the daemon runs,
has crashed, or was never started.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any
from zoneinfo import ZoneInfo

from exactmaild.config.model import Config
from exactmaild.core.limits import Ledger
from exactmaild.core.pacing import format_seconds
from exactmaild.core.schedule import describe_next
from exactmaild.outbox.spool import Spool
from exactmaild.store.state import DB_NAME, StateStore


def collect(cfg: Config, now: float | None = None) -> dict[str, Any]:
    import time

    from exactmaild.daemon.control import daemon_running

    now = time.time() if now is None else now
    tz = ZoneInfo(cfg.timezone)
    ledger = Ledger(cfg.send.limit_window, tz, cfg.send.allowance)
    meta: dict[str, str] = {}
    counted_elsewhere = None
    if (cfg.state_dir / DB_NAME).exists():
        st = StateStore(cfg.state_dir, create=False)
        try:
            for when, units in st.counted_sends(now - 2 * 86400):
                ledger.record(when, units)
            meta = st.get_all()
            counted_elsewhere = st.sent_elsewhere()
        finally:
            st.close()
    elsewhere = 0
    if counted_elsewhere is not None:
        ledger.set_external(counted_elsewhere.window_start, counted_elsewhere.units)
        elsewhere = ledger.external_used(now)
    queue: dict[str, int] = {}
    oldest = None
    if cfg.spool.dir.is_dir():
        spool = Spool(cfg.spool.dir, create=False)
        for state, name in (
            ("new", "queued"),
            ("active", "active"),
            ("deferred", "deferred"),
            ("hold", "hold"),
            ("failed", "failed"),
        ):
            try:
                queue[name] = spool.count(state)
            except FileNotFoundError:
                queue[name] = 0
        for e in spool.entries(("new", "deferred")):
            oldest = e.mtime if oldest is None else min(oldest, e.mtime)
    used = ledger.used(now)
    reset = ledger.reset_at(now)
    running = daemon_running(cfg.state_dir)

    def ts(key: str) -> float | None:
        v = meta.get(key)
        return float(v) if v else None

    pause_until = ts("pause_until")
    paused = running and pause_until is not None and pause_until > now
    return {
        "daemon_running": running,
        "pid": int(meta["pid"]) if running and meta.get("pid") else None,
        "now": now,
        "timezone": cfg.timezone,
        "sent_in_window": used - elsewhere,
        "sent_elsewhere_in_window": elsewhere,
        "daily_limit": cfg.send.daily_limit,
        "reserve": cfg.send.reserve,
        "allowance": cfg.send.allowance,
        "remaining": ledger.remaining(now),
        "limit_window": cfg.send.limit_window,
        "window_resets_at": reset if math.isfinite(reset) else None,
        "immediately": cfg.send.immediately,
        "delay_seconds": cfg.send.delay,
        "queue": queue,
        "oldest_queued_at": oldest,
        "last_check": ts("last_check"),
        "next_check": ts("next_check") if running else None,
        "receive_error": meta.get("receive_error"),
        "last_check_failed_at": ts("receive_error_at") if meta.get("receive_error") else None,
        "paused": paused,
        "pause_reason": meta.get("pause_reason") if paused else None,
        "storage_error": meta.get("storage_error") if running else None,
        "last_error": meta.get("receive_error")
        or meta.get("storage_error")
        or (meta.get("pause_reason") if paused else None),
    }


def _when(ts: float | None, tz: ZoneInfo, now: float) -> str:
    if ts is None:
        return "never"
    return (
        describe_next(ts, tz, now=now)
        if ts >= now
        else dt.datetime.fromtimestamp(ts, tz).strftime("%a %d %b %H:%M")
    )


# ANSI SGR colours for a terminal (`color`): what needs a look stands out.
_RED, _YELLOW, _GREEN = "31", "33", "32"


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def render(s: dict[str, Any], *, color: bool = False) -> str:
    tz = ZoneInfo(s["timezone"])
    now = s["now"]
    allowance = s["allowance"] or 1
    used = s["sent_in_window"] + s["sent_elsewhere_in_window"]
    width = 30
    filled = min(width, round(width * used / allowance))
    bar = _paint("#" * filled, _RED if used >= allowance else _GREEN, color and filled > 0)
    bar += "." * (width - filled)
    lines = [
        "exactmaild "
        + (
            _paint(f"running (pid {s['pid']})", _GREEN, color)
            if s["daemon_running"]
            else _paint("NOT RUNNING", _RED, color)
        ),
        "",
        f"sent      [{bar}] {used}/{s['allowance']}"
        + (f"  (limit {s['daily_limit']}, reserve {s['reserve']})" if s["reserve"] else ""),
    ]
    if s["sent_elsewhere_in_window"]:
        lines.append(f"          of which {s['sent_elsewhere_in_window']} sent from webmail")
    lines.append(
        f"remaining {s['remaining']}, window ({s['limit_window']}) resets "
        f"{_when(s['window_resets_at'], tz, now)}"
    )
    pace = "immediately" if s["immediately"] else f"one every {s['delay_seconds']:g}s"
    lines.append(f"pacing    {pace}")
    q = s["queue"]
    lines.append(
        f"queue     {q.get('queued', 0)} queued, {q.get('deferred', 0)} deferred, "
        f"{q.get('hold', 0)} held, {q.get('failed', 0)} failed"
        + (f", {q['active']} sending" if q.get("active") else "")
    )
    if s["oldest_queued_at"]:
        age = max(1, round(now - s["oldest_queued_at"]))
        lines.append(f"          oldest waiting {format_seconds(age)}")
    check = f"last check {_when(s['last_check'], tz, now)}"
    failed = s.get("last_check_failed_at")
    if failed and (s["last_check"] is None or failed > s["last_check"]):
        # "never" alone read as "never tried" after a day of refused logins.
        check += ", " + _paint(f"last attempt failed {_when(failed, tz, now)}", _RED, color)
    lines.append(
        f"mailbox   {check}, next {_when(s['next_check'], tz, now) if s['next_check'] else '-'}"
    )
    if s["paused"]:
        lines.append(_paint(f"PAUSED    {s['pause_reason']}", _YELLOW, color))
    if s["storage_error"]:
        lines.append(_paint(f"STORAGE   {s['storage_error']}", _RED, color))
    error = s["last_error"]
    lines.append(f"last error {_paint(error, _RED, color) if error else 'none'}")
    return "\n".join(lines)
