"""`status` and `queue list` through the real command and daemon: what blocks
sending and when it ends, the forecast in --json (ISO 8601 with offsets), the
same figure in the metrics, the queue in send order with its times, and the
monitoring-plugins exit codes."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from exactmaild.outbox.spool import Spool
from exactmaild.store.state import StateStore
from tests.fixtures.smtp import SmtpServer
from tests.helpers import Daemon, exactmaild, message, metric, scrape, write_config

LON = ZoneInfo("Europe/London")


def closed_window() -> str:
    """A one-hour window that opens two hours from now (London wall clock)."""
    start = (dt.datetime.now(LON) + dt.timedelta(hours=2)).replace(minute=0)
    return f"{start:%H}:00-{(start + dt.timedelta(hours=1)):%H}:00"


def instant(text: str) -> float:
    parsed = dt.datetime.fromisoformat(text)
    assert parsed.utcoffset() is not None, text  # always with its offset
    return parsed.timestamp()


def test_status_and_queue_list_tell_why_and_when(tmp_path: Path, smtp_server: SmtpServer) -> None:
    window = closed_window()
    cfg = write_config(
        tmp_path,
        smtp_server,
        send={"immediately": False, "delay": "30s", "daily_limit": 500},
        schedule={"window": window},
    )
    port = int(yaml.safe_load(cfg.read_text())["metrics"]["listen"].rsplit(":", 1)[1])
    spool = Spool(tmp_path / "spool")
    ids = []
    for n in range(4):
        ids.append(spool.submit(message(n)))
        time.sleep(0.01)  # the queue is ordered by arrival

    # Not running: CRITICAL, yet the forecast is there.
    r = exactmaild("status", "-c", str(cfg))
    assert r.returncode == 2, r
    assert r.stdout.decode().startswith("exactmaild CRITICAL: NOT RUNNING")

    d = Daemon(cfg)
    d.wait_ready(port)
    try:
        r = exactmaild("status", "--json", "-c", str(cfg))
        assert r.returncode == 0, r
        st = json.loads(r.stdout)
        assert st["state"] == "OK"
        assert st["blocked_by"] == "window"
        opens = instant(st["resumes_at"])
        assert dt.datetime.fromtimestamp(opens, LON).strftime("%H:%M") == window[:5]
        assert instant(st["next_send_at"]) == opens
        assert instant(st["queue_done_at"]) == opens + 3 * 30
        for key in ("now", "window_resets_at", "oldest_queued_at"):
            instant(st[key])
        # The daemon's gauge is the same figure.
        text = scrape(port)
        assert metric(text, "exactmaild_queue_forecast_done_timestamp_seconds") == opens + 90
        assert metric(text, "exactmaild_blocked", 'reason="window"') == 1
        assert metric(text, "exactmaild_blocked", 'reason="limit"') == 0

        text_out = exactmaild("status", "-c", str(cfg)).stdout.decode()
        assert "sending   window closed, opens " in text_out, text_out
        assert "all 4 sent by " in text_out and "at 2 a minute within " + window in text_out

        # queue list: send order, each with its time.
        listing = json.loads(exactmaild("queue", "list", "--json", "-c", str(cfg)).stdout)
        assert [row["id"] for row in listing] == ids
        assert [instant(row["sends_at"]) for row in listing] == [opens + 30 * k for k in range(4)]

        # A failed message wants a look: WARNING (in --json, as `state`).
        spool.fail(spool.submit(message(9)), "new", "test")
        r = exactmaild("status", "-c", str(cfg))
        assert r.returncode == 1 and r.stdout.decode().startswith("exactmaild WARNING"), r
        r = exactmaild("status", "--json", "-c", str(cfg))
        assert r.returncode == 0 and json.loads(r.stdout)["state"] == "WARNING", r
    finally:
        assert d.stop() == 0


def test_queue_list_puts_a_due_retry_first(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg = write_config(
        tmp_path,
        smtp_server,
        send={"immediately": False, "delay": "60s"},
        schedule={"window": closed_window()},
    )
    spool = Spool(tmp_path / "spool")
    first = spool.submit(message(1))
    retried = spool.submit(message(2))
    spool.move(retried, "new", "deferred")
    st = StateStore(tmp_path / "state")
    st.note_temporary_failure(retried, time.time() - 600, "451 try later", time.time() - 60)
    st.close()
    rows = json.loads(exactmaild("queue", "list", "--json", "-c", str(cfg)).stdout)
    assert [r["id"] for r in rows] == [retried, first]
    assert instant(rows[1]["sends_at"]) == instant(rows[0]["sends_at"]) + 60
    assert rows[0]["next_try"] is not None


def test_status_unknown_when_the_config_cannot_be_read(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("timezone: [\n")
    r = exactmaild("status", "-c", str(bad))
    assert r.returncode == 3, r
    assert r.stderr.decode().startswith("exactmaild UNKNOWN: "), r
