"""A message that was being sent each time the daemon died is failed with a
reason after the third time, instead of being retried forever (it may be what
kills the daemon); other mail goes on."""

from __future__ import annotations

from pathlib import Path

import yaml

from exactmaild.outbox.spool import Spool
from tests.fixtures.smtp import SmtpServer
from tests.helpers import Daemon, message, wait_until, write_config
from tests.test_sending import HangingServer


def test_third_crash_mid_send_fails_the_message(tmp_path: Path, smtp_server: SmtpServer) -> None:
    hanging = HangingServer()
    try:
        fake = SmtpServer("127.0.0.1", hanging.port, smtp_server.sink, "none", None)
        cfg = write_config(tmp_path, fake)
        port = int(yaml.safe_load(cfg.read_text())["metrics"]["listen"].rsplit(":", 1)[1])
        spool = Spool(tmp_path / "spool")
        qid = spool.submit(message(1))
        for crash in range(3):
            hanging.got_body.clear()
            d = Daemon(cfg)
            d.wait_ready(port)
            assert hanging.got_body.wait(15), (crash, d.log())
            d.kill()  # kill -9 while the message is in flight
            assert spool.names("active") == [qid]
    finally:
        hanging.close()

    # A fourth start, against a server that works: the crash-looping message is
    # set aside with a reason, and a new message still goes.
    cfg = write_config(tmp_path, smtp_server)
    port = int(yaml.safe_load(cfg.read_text())["metrics"]["listen"].rsplit(":", 1)[1])
    other = spool.submit(message(2))
    d = Daemon(cfg)
    d.wait_ready(port)
    try:
        got = smtp_server.sink.wait_for(1)
        assert [m.rcpt_tos for m in got] == [["patient2@example.org"]], d.log()
        assert wait_until(lambda: spool.names("failed") == [qid])
    finally:
        assert d.stop() == 0
    reason = (tmp_path / "spool" / "failed" / f"{qid}.reason").read_text()
    assert "stopped unexpectedly 3 times" in reason
    assert "queue retry" in reason
    assert other not in spool.names("failed")
