"""Issue acceptance: paced sending under the hard daily cap, across a restart,
released by the next limit window. Real daemon process, real SMTP server."""

from __future__ import annotations

import itertools
import json
import threading
import time
from pathlib import Path

import yaml

from exactmaild.config import load as configload
from exactmaild.daemon import logs
from exactmaild.daemon.service import Service
from exactmaild.outbox.spool import Spool
from tests.fixtures.smtp import SmtpServer
from tests.helpers import (
    Daemon,
    OffsetClock,
    exactmaild,
    message,
    metric,
    scrape,
    write_config,
)


def test_cap_holds_across_restart_and_next_window_releases(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    cfg_path = write_config(
        tmp_path,
        smtp_server,
        send={
            "immediately": False,
            "delay": "1s",
            "daily_limit": 4,
            "reserve": 1,
            "limit_window": "calendar_day",
        },
    )
    port = int(yaml.safe_load(cfg_path.read_text())["metrics"]["listen"].rsplit(":", 1)[1])
    spool = Spool(tmp_path / "spool")
    ids = [spool.submit(message(n)) for n in range(5)]

    d = Daemon(cfg_path)
    d.wait_ready(port)
    got = smtp_server.sink.wait_for(3, timeout=20)
    assert len(got) == 3, d.log()
    time.sleep(2.5)  # more than two delays: a 4th send would have happened by now
    got = smtp_server.sink.messages
    assert len(got) == 3, d.log()
    gaps = [b.at - a.at for a, b in itertools.pairwise(got)]
    assert all(g >= 0.95 for g in gaps), gaps  # receive-side stamps; the daemon waits >= 1 s

    text = scrape(port)
    assert metric(text, "exactmaild_sent_in_window") == 3
    assert metric(text, "exactmaild_daily_limit") == 4
    assert metric(text, "exactmaild_daily_limit_remaining") == 0
    assert metric(text, "exactmaild_queue_messages", 'state="queued"') == 2
    assert metric(text, "exactmaild_sent_total") == 3

    st = json.loads(exactmaild("status", "--json", "-c", str(cfg_path)).stdout)
    assert st["sent_in_window"] == 3
    assert st["daily_limit"] == 4 and st["remaining"] == 0
    assert st["queue"]["queued"] == 2
    assert st["daemon_running"] is True
    assert d.stop() == 0

    # A restart in the same window: the count survived, nothing more goes.
    d2 = Daemon(cfg_path)
    d2.wait_ready(port)
    time.sleep(2.5)
    assert len(smtp_server.sink.messages) == 3, d2.log()
    assert metric(scrape(port), "exactmaild_sent_in_window") == 3
    assert d2.stop() == 0

    # The next window (the one thing injected: the clock) releases the rest.
    logs.configure(configload.load(cfg_path).log)
    service = Service(configload.load(cfg_path), clock=OffsetClock(86400), install_signals=False)
    service.start()
    t = threading.Thread(target=service.run)
    t.start()
    try:
        assert len(smtp_server.sink.wait_for(5, timeout=20)) == 5
    finally:
        service.request_stop()
        t.join(10)
    sent_to = sorted(r for m in smtp_server.sink.messages for r in m.rcpt_tos)
    assert sent_to == sorted(f"patient{n}@example.org" for n in range(5))
    assert not any((tmp_path / "spool" / "new").iterdir())
    assert ids  # every queued id was one of the five


def test_limit_counts_recipients(tmp_path: Path, smtp_server: SmtpServer) -> None:
    cfg_path = write_config(
        tmp_path,
        smtp_server,
        send={"immediately": True, "daily_limit": 5, "limit_counts": "recipients"},
    )
    port = int(yaml.safe_load(cfg_path.read_text())["metrics"]["listen"].rsplit(":", 1)[1])
    spool = Spool(tmp_path / "spool")
    two = "a{n}@example.org, b{n}@example.org"
    # Six recipients can never fit an allowance of five: failed, not waited for.
    too_big = spool.submit(message(0, to=", ".join(f"r{i}@example.org" for i in range(6))))
    time.sleep(0.01)  # the queue is ordered by arrival
    spool.submit(message(1, to=two))
    spool.submit(message(2, to=two))
    spool.submit(message(3, to=two))  # 4 + 2 > 5: waits for the next window
    d = Daemon(cfg_path)
    d.wait_ready(port)
    try:
        assert len(smtp_server.sink.wait_for(2)) == 2, d.log()
        time.sleep(1.0)
        assert len(smtp_server.sink.messages) == 2
        text = scrape(port)
        assert metric(text, "exactmaild_sent_in_window") == 4
        assert metric(text, "exactmaild_daily_limit_remaining") == 1
        assert metric(text, "exactmaild_queue_messages", 'state="queued"') == 1
    finally:
        assert d.stop() == 0
    reason = (tmp_path / "spool" / "failed" / f"{too_big}.reason").read_text()
    assert "split the recipients" in reason
