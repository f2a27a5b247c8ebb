"""`exactmaild status`: what a sysadmin wants on one screen, daemon running or not.

Everything is read from the durable state and the spool directories (never
from the daemon's memory), so the answer is the same whether the daemon runs,
has crashed, or was never started. The forecast (`core.forecast`, the same
arithmetic that paces real sends) says what blocks sending now, when that
ends, when the next send goes and when the queue will have gone;
`queue list` takes each message's expected time from the same forecast
(`cli.spoolforecast`).

`exit_code()` follows the monitoring-plugins convention, so Nagios or
Icinga can run `exactmaild status` as a check: 0 OK, 1 WARNING (sending
paused, failed or held messages, the last mailbox check failed), 2 CRITICAL
(the daemon is not running, the spool or state cannot be written), 3
UNKNOWN (the configuration or the state cannot be read). `status --json`
carries the same verdict in `state` and exits 0 whenever it could answer.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any
from zoneinfo import ZoneInfo

from exactmaild.cli.lanes import lanes_json, lanes_text
from exactmaild.cli.spoolforecast import forecast_from_disk
from exactmaild.config.model import Config
from exactmaild.core.hours import ALL_DAYS
from exactmaild.core.limits import Ledger
from exactmaild.core.pacing import format_seconds
from exactmaild.core.schedule import describe_next
from exactmaild.outbox.spool import Spool
from exactmaild.store.messages import MessageInfo
from exactmaild.store.state import DB_NAME, StateStore

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
# The fields of `status --json` that are instants: ISO 8601 with the offset.
TIME_FIELDS = (
    "now",
    "window_resets_at",
    "oldest_queued_at",
    "last_check",
    "next_check",
    "last_check_failed_at",
    "pause_until",
    "resumes_at",
    "next_send_at",
    "queue_done_at",
)


def collect(cfg: Config, now: float | None = None, *, flush: bool = False) -> dict[str, Any]:
    """Everything `status` shows; `flush`: the forecast as right after `exactmaild flush`."""
    import time

    from exactmaild.daemon.control import daemon_running

    now = time.time() if now is None else now
    tz = ZoneInfo(cfg.timezone)
    ledger = Ledger(cfg.send.limit_window, tz, cfg.send.allowance)
    meta: dict[str, str] = {}
    counted_elsewhere = None
    infos: dict[str, MessageInfo] = {}
    last_sent = None
    if (cfg.state_dir / DB_NAME).exists():
        st = StateStore(cfg.state_dir, create=False)
        try:
            for when, units in st.counted_sends(now - 2 * 86400):
                ledger.record(when, units)
            meta = st.get_all()
            counted_elsewhere = st.sent_elsewhere()
            infos = st.messages()
            last_sent = st.last_sent()
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
            ("later", "scheduled"),
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
    storage_error = meta.get("storage_error") if running else None
    f = forecast_from_disk(
        cfg,
        now,
        ledger,
        infos,
        last_send=last_sent,
        paused_until=pause_until if paused else None,
        storage_ok=storage_error is None,
        flush=flush,
        quota=meta.get("pause_kind") == "provider_quota",
    )
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
        "delay_seconds": max(cfg.send.delay, cfg.send.min_gap),  # the ceiling may slow it
        "max_per_minute": cfg.send.max_per_minute,
        "queue": queue,
        "oldest_queued_at": oldest,
        "last_check": ts("last_check"),
        "next_check": ts("next_check") if running else None,
        "receive_error": meta.get("receive_error"),
        "last_check_failed_at": ts("receive_error_at") if meta.get("receive_error") else None,
        # incoming.idle: "connected", "reconnecting", or null (off, outside the window).
        "idle": meta.get("idle") if running else None,
        "paused": paused,
        "pause_reason": meta.get("pause_reason") if paused else None,
        "pause_until": pause_until if paused else None,
        "pause_kind": meta.get("pause_kind") if paused else None,
        "storage_error": storage_error,
        "blocked_by": f.blocked_by,
        "resumes_at": f.resumes_at,
        "next_send_at": f.next_send_at,
        "queue_done_at": f.queue_done_at,
        "lanes": lanes_json(f, tz),
        "_lanes": f.lanes,
        "forecast_messages": sum(1 for _, t in f.sends if math.isfinite(t)),
        "sendable_now": (k := f.going_now(now, cfg.send.min_gap)),
        "_later": [t for _, t in f.sends[k:] if math.isfinite(t)],
        "schedule": {
            "window": None if cfg.schedule.window is None else str(cfg.schedule.window),
            "days": list(cfg.schedule.days),
        },
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


def flush_outlook(cfg: Config, now: float | None = None) -> str:
    """What a flush will do, from the same forecast, said before the daemon acts:
    how many go now, or why nothing can and when the next one goes."""
    s = collect(cfg, now, flush=True)
    tz, now = ZoneInfo(s["timezone"]), s["now"]
    waiting = s["queue"].get("queued", 0) + s["queue"].get("deferred", 0)
    if s["storage_error"]:
        return f"nothing can be sent now: storage problem: {s['storage_error']}"
    if not waiting:
        return "the queue is empty"
    rest = waiting - s["sendable_now"]
    after = ""
    if rest and s["next_send_at"] is not None:
        nxt = min(s["_later"], default=None)
        after = f"; the other {rest} paced as usual" + (
            f", the next {_when(nxt, tz, now)}" if nxt is not None else ""
        )
    if s["sendable_now"]:
        return f"sending {s['sendable_now']} of {waiting} now (within the limit){after}"
    used = s["sent_in_window"] + s["sent_elsewhere_in_window"]
    why = (
        f"daily limit reached ({used}/{s['allowance']}), resets "
        f"{_when(s['window_resets_at'], tz, now)}"
        if s["remaining"] < 1 or s["blocked_by"] == "limit"
        else "the next message is larger than what the limit has left"
    )
    nxt_text = _when(s["next_send_at"], tz, now) if s["next_send_at"] is not None else "never"
    return f"nothing can be sent now: {why}; the next send goes {nxt_text}"


def exit_code(s: dict[str, Any]) -> int:
    """The monitoring-plugins state of a `collect()` answer (see the module's text)."""
    if not s["daemon_running"] or s["storage_error"]:
        return CRITICAL
    q = s["queue"]
    if s["paused"] or q.get("failed") or q.get("hold") or s["receive_error"]:
        return WARNING
    return OK


def to_json(s: dict[str, Any]) -> str:
    """`status --json`: every instant as ISO 8601 with its offset, in the configured zone."""
    tz = ZoneInfo(s["timezone"])
    out = {k: v for k, v in s.items() if not k.startswith("_")}  # "_": for the text only
    for key in TIME_FIELDS:
        if isinstance(out.get(key), (int, float)):
            out[key] = iso(out[key], tz)
    out["state"] = ("OK", "WARNING", "CRITICAL", "UNKNOWN")[exit_code(s)]
    return json.dumps(out, indent=1, sort_keys=True)


def iso(ts: float, tz: ZoneInfo) -> str:
    return dt.datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


def rate(s: dict[str, Any]) -> str:
    """How fast the queue drains: "2 a minute within 08:00-17:00 on mon-fri"."""
    if s["immediately"] or not s["delay_seconds"]:
        if s.get("max_per_minute"):
            return f"up to {s['max_per_minute']} a minute, within the limit"
        return "as fast as the server takes them, within the limit"
    per_minute = 60 / s["delay_seconds"]
    if per_minute >= 1:
        text = f"{per_minute:.3g} a minute"
    elif per_minute * 60 >= 1:
        text = f"about {round(per_minute * 60)} an hour"
    else:
        text = f"one every {s['delay_seconds'] / 3600:.3g} h"
    sched = s["schedule"]
    if sched["window"]:
        text += f" within {sched['window']}"
    if tuple(sched["days"]) != ALL_DAYS:
        text += " on " + _days(sched["days"])
    return text


def _days(days: list[str]) -> str:
    """["mon", "tue", "wed", "fri"] -> "Mon-Wed, Fri"."""
    picked = [i for i, d in enumerate(ALL_DAYS) if d in days]
    runs: list[list[int]] = []
    for i in picked:
        if runs and runs[-1][-1] == i - 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    name = [d.capitalize() for d in ALL_DAYS]
    return ", ".join(name[r[0]] if len(r) == 1 else f"{name[r[0]]}-{name[r[-1]]}" for r in runs)


def blocked_text(s: dict[str, Any], tz: ZoneInfo, now: float) -> str | None:
    """What blocks sending now and when that ends, in words; None if nothing does."""
    why, until = s["blocked_by"], s["resumes_at"]
    when = _when(until, tz, now) if until is not None else "never (no day is open)"
    if why == "window":
        return f"window closed, opens {when}"
    if why == "limit":
        return f"daily limit reached, resets {when}"
    if why == "paused":
        return f"paused: {s['pause_reason']}, next try {when}"
    if why == "provider_quota":
        return f"provider quota reached, resumes {when}"
    if why == "storage":
        return f"storage problem: {s['storage_error']}"
    return None


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
    state = ("OK", "WARNING", "CRITICAL", "UNKNOWN")[exit_code(s)]
    lines = [
        f"exactmaild {_paint(state, (_GREEN, _YELLOW, _RED, _YELLOW)[exit_code(s)], color)}: "
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
    if s["immediately"] and s.get("max_per_minute"):
        pace += f", at most {s['max_per_minute']} a minute"
    lines.append(f"pacing    {pace}")
    blocked = blocked_text(s, tz, now)
    if blocked:
        lines.append(f"sending   {blocked}")
    if s["next_send_at"] is not None:
        lines.append(f"next send {_when(s['next_send_at'], tz, now)}")
    q = s["queue"]
    lines.append(
        f"queue     {q.get('queued', 0)} queued, {q.get('deferred', 0)} deferred, "
        + (f"{q['scheduled']} scheduled, " if q.get("scheduled") else "")
        + f"{q.get('hold', 0)} held, {q.get('failed', 0)} failed"
        + (f", {q['active']} sending" if q.get("active") else "")
    )
    if s["queue_done_at"] is not None:
        n = s["forecast_messages"]
        lines.append(
            f"          all {n} sent by {_when(s['queue_done_at'], tz, now)}, at {rate(s)}"
        )
    if lanes := lanes_text(s["_lanes"], tz, now):
        lines.append("          " + lanes)
    if s["oldest_queued_at"]:
        age = max(1, round(now - s["oldest_queued_at"]))
        lines.append(f"          oldest waiting {format_seconds(age)}")
    check = f"last check {_when(s['last_check'], tz, now)}"
    failed = s.get("last_check_failed_at")
    if failed and (s["last_check"] is None or failed > s["last_check"]):
        # "never" alone read as "never tried" after a day of refused logins.
        check += ", " + _paint(f"last attempt failed {_when(failed, tz, now)}", _RED, color)
    nxt = _when(s["next_check"], tz, now) if s["next_check"] else "-"
    idle = f", IDLE {s['idle']}" if s.get("idle") else ""
    lines.append(f"mailbox   {check}, next {nxt}{idle}")
    if s["paused"]:
        lines.append(_paint(f"PAUSED    {s['pause_reason']}", _YELLOW, color))
    if s["storage_error"]:
        lines.append(_paint(f"STORAGE   {s['storage_error']}", _RED, color))
    error = s["last_error"]
    lines.append(f"last error {_paint(error, _RED, color) if error else 'none'}")
    return "\n".join(lines)
