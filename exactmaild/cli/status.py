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


def render(s: dict[str, Any], *, color: bool = False) -> str:
    tz = ZoneInfo(s["timezone"])
    now = s["now"]
    allowance = s["allowance"] or 1
    used = s["sent_in_window"] + s["sent_elsewhere_in_window"]
    width = 30
    filled = min(width, round(width * used / allowance))
    bar = "#" * filled + "." * (width - filled)
    lines = [
        "exactmaild " + (f"running (pid {s['pid']})" if s["daemon_running"] else "NOT RUNNING"),
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
        age = max(0, int(now - s["oldest_queued_at"]))
        lines.append(f"          oldest waiting {age // 3600}h{age % 3600 // 60:02d}m")
    lines.append(
        f"mailbox   last check {_when(s['last_check'], tz, now)}, next "
        f"{_when(s['next_check'], tz, now) if s['next_check'] else '-'}"
    )
    if s["paused"]:
        lines.append(f"PAUSED    {s['pause_reason']}")
    if s["storage_error"]:
        lines.append(f"STORAGE   {s['storage_error']}")
    lines.append(f"last error {s['last_error'] or 'none'}")
    del color
    return "\n".join(lines)
