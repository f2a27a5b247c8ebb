"""`flush` at the cap: it says why nothing can go, never fires at the cap's
reset outside the window, and never sends in a burst once the limit is
raised. The daemon runs in-process on an injected clock (a little before
local midnight), sending to a real SMTP server; the flush goes through the
control socket as `exactmaild flush` sends it."""

from __future__ import annotations

import datetime as dt
import json
import signal
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import yaml

from exactmaild.cli.status import flush_outlook
from exactmaild.config import load as configload
from exactmaild.config.model import LogConfig
from exactmaild.daemon import logs
from exactmaild.daemon.control import send_control
from exactmaild.daemon.service import Service
from exactmaild.outbox.spool import Spool
from tests.fixtures.smtp import SmtpServer
from tests.helpers import OffsetClock, message, wait_until, write_config

LON = ZoneInfo("Europe/London")


def offset_to(local: dt.datetime) -> float:
    """The clock offset that makes now read `local` (London wall clock)."""
    return local.replace(tzinfo=LON).timestamp() - time.time()


def test_flush_at_the_cap(tmp_path: Path, smtp_server: SmtpServer) -> None:
    path = write_config(
        tmp_path,
        smtp_server,
        send={"immediately": False, "delay": "10s", "daily_limit": 3},
        schedule={"window": "08:00-17:00"},
        log={"format": "json", "level": "info", "file": str(tmp_path / "daemon.log")},
    )
    spool = Spool(tmp_path / "spool")
    for n in range(20):
        spool.submit(message(n))
    today = dt.date.today() + dt.timedelta(days=30)
    midnight = dt.datetime.combine(today + dt.timedelta(days=1), dt.time(0))
    clock = OffsetClock(offset_to(midnight - dt.timedelta(seconds=8)))
    cfg = configload.load(path)
    logs.configure(cfg.log)
    service = Service(cfg, clock=clock, install_signals=False)
    service.start()
    loop = threading.Thread(target=service.run)
    loop.start()
    sink = smtp_server.sink
    try:
        time.sleep(0.5)
        assert sink.messages == []  # 23:59, the window is closed
        said = flush_outlook(cfg, now=clock.time())
        assert said.startswith("sending 3 of 20 now"), said
        assert "the next tomorrow 08:00" in said, said
        send_control(cfg, "flush")
        assert len(sink.wait_for(3)) == 3
        # At the cap: the command says why nothing goes, and when the next does.
        said = flush_outlook(cfg, now=clock.time())
        assert said == (
            "nothing can be sent now: daily limit reached (3/3), resets tomorrow 00:00; "
            "the next send goes tomorrow 08:00"
        ), said
        send_control(cfg, "flush")
        # Past the midnight reset, still outside the window: nothing fires.
        assert wait_until(lambda: clock.time() > midnight.replace(tzinfo=LON).timestamp() + 2)
        assert len(sink.messages) == 3
        # The limit raised (SIGHUP): still nothing until the window opens...
        raised = yaml.safe_load(path.read_text())
        raised["send"]["daily_limit"] = 10
        path.write_text(yaml.safe_dump(raised))
        service._on_signal(signal.SIGHUP, None)
        assert wait_until(lambda: service.cfg.send.daily_limit == 10)
        time.sleep(1.0)
        assert len(sink.messages) == 3
        # ... and then one, paced: the next is 10 s later, not a burst.
        clock.offset = offset_to(midnight + dt.timedelta(hours=8))
        assert service.sender is not None
        service.sender.wake()
        assert len(sink.wait_for(4)) == 4
        time.sleep(2.0)
        assert len(sink.messages) == 4
    finally:
        service.request_stop()
        loop.join(10)
        logs.configure(LogConfig(format="json"))  # off the test's file again
    # The window closing and opening, logged once each, however many wake-ups.
    events = [
        json.loads(line).get("event")
        for line in (tmp_path / "daemon.log").read_text().splitlines()
        if line.startswith("{")
    ]
    assert events.count("sending_window_closed") == 1, events
    assert events.count("sending_window_opened") == 1, events
