"""`exactmaild history`: what became of finished messages ("did Mrs X get her
reminder?"), and the record `queue show` prints for a message that left the
queue.

The records are the state store's (`store.history`), kept `history_days`.
With `--to`, messages to that address still in the spool are listed too, so
one command answers whether it went, failed, or is still waiting. Times are
shown in the configured timezone; in `--json` they are ISO 8601 with their
offset.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from exactmaild.cli.paths import load_config
from exactmaild.core.errors import EX_OK, NotAvailable, UsageError

if TYPE_CHECKING:
    from exactmaild.config.model import Config
    from exactmaild.store.history import Finished
    from exactmaild.store.state import StateStore


def iso(ts: float | None, tz: ZoneInfo) -> str | None:
    """ISO 8601 with the offset, to the second (None stays None)."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")


def local(ts: float | None, tz: ZoneInfo) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def parse_since(text: str, tz: ZoneInfo, now: float) -> float:
    """A date, a date and time (in the configured timezone unless it carries
    an offset), `today`, `yesterday`, or a duration back from now (`2d`, `12h`)."""
    from exactmaild.config.values import parse_duration

    t = text.strip().lower()
    midnight = dt.datetime.fromtimestamp(now, tz).replace(hour=0, minute=0, second=0, microsecond=0)
    if t in ("today", "yesterday"):
        day = midnight.date() - dt.timedelta(days=1 if t == "yesterday" else 0)
        return dt.datetime.combine(day, dt.time(), tz).timestamp()
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        pass
    else:
        return (when if when.tzinfo else when.replace(tzinfo=tz)).timestamp()
    try:
        return now - parse_duration(t)
    except ValueError:
        raise UsageError(
            f"--since {text!r}: give a date (2026-12-01), a date and time "
            "(2026-12-01 14:00, in the configured timezone, or with an offset), "
            "today, yesterday, or how long back (2d, 12h)"
        ) from None


@contextmanager
def reading_store(cfg: Config) -> Iterator[StateStore | None]:
    """The state store for reading, or None if the daemon never ran here."""
    from exactmaild.store.state import DB_NAME, StateStore

    if not (cfg.state_dir / DB_NAME).exists():
        yield None
        return
    try:
        st = StateStore(cfg.state_dir, create=False)
    except sqlite3.Error as exc:
        raise NotAvailable(
            f"cannot read the state store in {cfg.state_dir}: {exc} "
            "(run as root, or as a member of the daemon's group)"
        ) from None
    try:
        yield st
    except sqlite3.Error as exc:
        raise NotAvailable(
            f"cannot read the state store in {cfg.state_dir}: {exc} "
            "(run as root, or as a member of the daemon's group)"
        ) from None
    finally:
        st.close()


def records(st: StateStore, **query: Any) -> list[Finished]:
    try:
        return st.history(**query)
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        # A database from before the history: the daemon adds it at its next start.
        return []


def record_json(rec: Finished, tz: ZoneInfo) -> dict[str, Any]:
    return {
        "queue_id": rec.queue_id,
        "message_id": rec.message_id,
        "subject": rec.subject,
        "user": rec.user or None,
        "result": rec.result,
        "reason": rec.reason or None,
        "finished_at": iso(rec.at, tz),
        "queued_at": iso(rec.queued_at, tz),
        "tries": rec.tries,
        "recipients": [
            {"address": d.address, "status": d.status, "reply": d.reply, "at": iso(d.at, tz)}
            for d in rec.recipients
        ],
    }


def render_record(rec: Finished, tz: ZoneInfo) -> list[str]:
    """A finished message as a few lines: when and how it ended, then each recipient."""
    who = f" by {rec.user}" if rec.user else ""
    tries = f"{rec.tries} {'try' if rec.tries == 1 else 'tries'}"
    lines = [
        f"{local(rec.at, tz)}  {rec.result.upper()}  {rec.queue_id}",
        f"  subject: {rec.subject or '(none)'}",
        f"  message-id: {rec.message_id or '(none)'}",
        f"  queued {local(rec.queued_at, tz)}{who}; {tries}",
    ]
    if rec.reason:
        lines.append(f"  reason: {rec.reason}")
    for d in rec.recipients:
        reply = f": {d.reply}" if d.reply else ""
        lines.append(f"  {d.address}  {d.status}{reply}")
    return lines


def _still_queued(cfg: Config, st: StateStore | None, to: str) -> list[dict[str, Any]]:
    """Messages to `to` still in the spool (waiting, being sent, or held)."""
    from exactmaild.core.states import ACTIVE, DEFERRED, HOLD, LATER, NEW, PUBLIC_NAME
    from exactmaild.outbox.record import header_section, recipients_of
    from exactmaild.outbox.spool import Spool

    if not cfg.spool.dir.is_dir():
        return []
    spool = Spool(cfg.spool.dir, create=False)
    want = to.strip().lower()
    out = []
    for e in spool.entries((NEW, ACTIVE, DEFERRED, LATER, HOLD)):
        try:
            head = header_section(spool.read(e.state, e.queue_id, 64 * 1024))
        except OSError:
            continue
        if want not in (r.lower() for r in recipients_of(head)):
            continue
        info = st.message(e.queue_id) if st is not None else None
        out.append(
            {
                "queue_id": e.queue_id,
                "state": PUBLIC_NAME[e.state],
                "queued_at": e.mtime,
                "tries": info.tries if info else 0,
                "next_try": info.next_try if info else None,
                "last_error": info.last_error if info else "",
            }
        )
    return out


def cmd_history(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    tz = ZoneInfo(cfg.timezone)
    since = parse_since(args.since, tz, time.time()) if args.since else None
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit}: give how many of the latest to show, at least 1")
    with reading_store(cfg) as st:
        found = records(st, since=since, to=args.to, limit=args.limit) if st else []
        waiting = _still_queued(cfg, st, args.to) if args.to else []
    if args.json:
        out = [record_json(r, tz) for r in found]
        for w in waiting:
            out.append(
                {
                    **w,
                    "result": w["state"],
                    "queued_at": iso(w["queued_at"], tz),
                    "next_try": iso(w["next_try"], tz),
                }
            )
        print(json.dumps(out, indent=1, ensure_ascii=False))
        return EX_OK
    for w in waiting:
        retry = f"; next try {local(w['next_try'], tz)}" if w["next_try"] else ""
        error = f"; last error: {w['last_error']}" if w["last_error"] else ""
        print(
            f"STILL {w['state'].upper()}  {w['queue_id']}  queued {local(w['queued_at'], tz)}; "
            f"{w['tries']} failed tries{retry}{error}"
        )
    for n, rec in enumerate(found):
        print(("\n" if n or waiting else "") + "\n".join(render_record(rec, tz)))
    if not found and not waiting:
        to = f" to {args.to}" if args.to else ""
        when = f" since {local(since, tz)}" if since is not None else ""
        print(
            f"no finished message{to}{when} in the history "
            f"(kept {cfg.history_days} days: history_days)"
        )
    return EX_OK


__all__ = ["cmd_history", "iso", "local", "reading_store", "record_json", "render_record"]
