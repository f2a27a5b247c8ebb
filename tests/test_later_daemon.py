"""Mail for later through the real daemon and a real SMTP server (aiosmtpd):
a message deferred by 5 s is not sent before its time and is sent within one
pacing step after it; `status --json`, `queue list` and the metrics show it
scheduled; `submit --at` a past time sends now; a scheduled message can be
cancelled; a restart keeps its time; the header never reaches the server."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import math
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from exactmaild.core.states import CANCELLED, LATER
from exactmaild.outbox.spool import Spool
from tests.fixtures.smtp import SmtpServer
from tests.helpers import (
    Daemon,
    exactmaild,
    message,
    metric,
    scrape,
    wait_until,
    write_config,
)

LON = ZoneInfo("Europe/London")
DELAY = 1.0  # the pacing step


def instant(text: str) -> float:
    parsed = dt.datetime.fromisoformat(text)
    assert parsed.utcoffset() is not None, text
    return parsed.timestamp()


def status(cfg: Path) -> dict[str, Any]:
    r = exactmaild("status", "--json", "-c", str(cfg))
    assert r.returncode == 0, r
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def submit(cfg: Path, raw: bytes, *args: str) -> str:
    r = exactmaild("submit", "-c", str(cfg), *args, input=raw)
    assert r.returncode == 0, r
    return r.stdout.decode().strip()


def test_mail_for_later_through_the_daemon(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg = write_config(
        tmp_path, smtp_server, send={"immediately": False, "delay": "1s", "daily_limit": 500}
    )
    port = int(yaml.safe_load(cfg.read_text())["metrics"]["listen"].rsplit(":", 1)[1])
    spool = Spool(tmp_path / "spool")
    sink = smtp_server.sink
    d = Daemon(cfg)
    d.wait_ready(port)
    try:
        # An hour ahead, by ISO 8601 with its offset; and a past local time: now.
        hour = dt.datetime.fromtimestamp(math.ceil(time.time()) + 3600, LON)
        c = submit(cfg, message(3, to="c@example.org"), "--at", hour.isoformat())
        past = (dt.datetime.now(LON) - dt.timedelta(minutes=2)).strftime("%Y-%m-%d %H:%M")
        b = submit(cfg, message(2, to="b@example.org"), "--at", past)
        got = sink.wait_for(1, timeout=10)
        assert [m.rcpt_tos for m in got] == [["b@example.org"]], d.log()
        assert b"deferred-delivery" not in got[0].data.lower()

        # A producer's drop, deferred by 5 s (RFC 5322 dates have whole seconds).
        due = float(math.ceil(time.time() + 5))
        header = email.utils.format_datetime(dt.datetime.fromtimestamp(due, LON))
        a = spool.submit(message(1, to="a@example.org", Deferred_Delivery=header))
        assert wait_until(lambda: spool.exists(LATER, a), 3), d.log()
        assert spool.exists(LATER, c)

        # Shown while it waits: status, the forecast, queue list, the metrics.
        s = status(cfg)
        assert s["queue"]["scheduled"] == 2 and s["queue"]["queued"] == 0
        assert instant(s["next_send_at"]) == due  # nothing else waits before it
        assert instant(s["queue_done_at"]) == hour.timestamp()  # the forecast counts both
        r = exactmaild("queue", "list", "--json", "-c", str(cfg))
        rows = {row["id"]: row for row in json.loads(r.stdout)}
        assert rows[a]["state"] == "scheduled" and instant(rows[a]["scheduled_at"]) == due
        assert instant(rows[a]["sends_at"]) == due
        assert rows[c]["state"] == "scheduled"
        text = scrape(port)
        assert metric(text, "exactmaild_queue_messages", 'state="scheduled"') == 2
        assert b not in rows

        # Not before its time; within one pacing step after it.
        got = sink.wait_for(2, timeout=due - time.time() + 10)
        assert [m.rcpt_tos for m in got][1:] == [["a@example.org"]], d.log()
        sent = got[1].at
        assert due <= sent < due + DELAY + 1.0, sent - due  # a generous bound for load
        print(f"sent {sent - due:.3f} s after its time")
        assert b"deferred-delivery" not in got[1].data.lower()
        assert b"Subject: Appointment reminder 1" in got[1].data
    finally:
        assert d.stop() == 0

    # A restart keeps the time of what still waits; then it is cancelled.
    d = Daemon(cfg)
    d.wait_ready(port)
    try:
        s = status(cfg)
        assert s["queue"]["scheduled"] == 1
        assert instant(s["next_send_at"]) == hour.timestamp()
        # The daemon's own index has the time back (its forecast, not the disk's).
        done = "exactmaild_queue_forecast_done_timestamp_seconds"
        assert wait_until(lambda: metric(scrape(port), done) == hour.timestamp(), 10), scrape(port)
        r = exactmaild("queue", "cancel", c, "-c", str(cfg))
        assert r.returncode == 0, r
        assert spool.exists(CANCELLED, c)
        s = status(cfg)
        assert s["queue"].get("scheduled", 0) == 0
        assert s["next_send_at"] is None and s["queue_done_at"] is None
        assert metric(scrape(port), "exactmaild_queue_messages", 'state="scheduled"') == 0
    finally:
        assert d.stop() == 0
    assert len(sink.messages) == 2


def test_submit_at_refuses_a_time_it_cannot_read(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg = write_config(tmp_path, smtp_server)
    Spool(tmp_path / "spool")
    r = exactmaild("submit", "-c", str(cfg), "--at", "tomorrow 9", input=message(1))
    assert r.returncode == 64, r
    assert b"--at 'tomorrow 9' is not a time" in r.stderr
    r = exactmaild("submit", "-c", str(cfg), input=message(1, Deferred_Delivery="soon"))
    assert r.returncode == 65, r
    assert b"Deferred-Delivery header 'soon' is not an RFC 5322 date" in r.stderr
    assert not list((tmp_path / "spool" / "new").iterdir())
