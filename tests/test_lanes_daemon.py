"""Priority lanes through the real daemon and a real SMTP server: a recall
batch (bulk) is queued, an appointment change (urgent) overtakes it, and the
urgent reserve keeps the end of the day's allowance for urgent mail."""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from exactmaild.outbox.spool import Spool
from tests.fixtures.smtp import SmtpServer
from tests.helpers import Daemon, exactmaild, message, metric, scrape, write_config


def _lane(data: bytes) -> str:
    head = data.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    return "urgent" if b"Priority: urgent" in head else "bulk"


def test_urgent_overtakes_the_batch_and_uses_the_reserve(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    cfg_path = write_config(
        tmp_path,
        smtp_server,
        send={
            "immediately": False,
            "delay": "1s",
            "daily_limit": 20,
            "reserve": 0,
            "urgent_reserve": 3,
        },
    )
    port = int(yaml.safe_load(cfg_path.read_text())["metrics"]["listen"].rsplit(":", 1)[1])
    spool = Spool(tmp_path / "spool")
    for n in range(30):
        spool.submit(message(n, Precedence="bulk"))
    sink = smtp_server.sink

    d = Daemon(cfg_path)
    try:
        d.wait_ready(port)
        assert len(sink.wait_for(5, timeout=30)) >= 5, d.log()
        spool.submit(message(100, Priority="urgent"))
        # 17 = 20 - 3: then bulk stops, the urgent one included in the count.
        assert len(sink.wait_for(17, timeout=60)) == 17, d.log()
        lanes = [_lane(m.data) for m in sink.messages]
        assert lanes[:5] == ["bulk"] * 5
        assert lanes[5] == "urgent", lanes  # the next one sent after it was dropped
        time.sleep(2.5)  # more than two delays: an 18th bulk send would have gone
        assert len(sink.messages) == 17, d.log()

        text = scrape(port)
        assert metric(text, "exactmaild_queue_messages", 'state="queued",lane="bulk"') == 14
        assert metric(text, "exactmaild_queue_messages", 'state="queued",lane="urgent"') == 0
        assert metric(text, "exactmaild_queue_messages", 'state="queued"') == 14
        st = json.loads(exactmaild("status", "--json", "-c", str(cfg_path)).stdout)
        assert st["blocked_by"] == "limit" and st["remaining"] == 3
        assert st["lanes"]["bulk"]["waiting"] == 14
        assert st["resumes_at"] == st["window_resets_at"]  # bulk goes again tomorrow

        for n in range(3):
            spool.submit(message(200 + n, Priority="urgent"))
        assert len(sink.wait_for(20, timeout=30)) == 20, d.log()
        assert [_lane(m.data) for m in sink.messages[17:]] == ["urgent"] * 3
        spool.submit(message(300, Priority="urgent"))
        time.sleep(2.5)  # the cap: nothing more, urgent or not, until the window resets
        assert len(sink.messages) == 20, d.log()
        st = json.loads(exactmaild("status", "--json", "-c", str(cfg_path)).stdout)
        assert st["blocked_by"] == "limit" and st["remaining"] == 0
        assert st["resumes_at"] == st["window_resets_at"]
        assert st["lanes"]["urgent"]["waiting"] == 1
    finally:
        assert d.stop() == 0
