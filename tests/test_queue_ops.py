"""The operator's view through the real daemon and a real aiosmtpd: `history`
answers "did Mrs X get it?", `queue show` works after a message has gone,
`queue send-now` jumps the queue (still paced), and the batch operations
`queue hold|release|cancel` act on a running daemon's queue at once."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from exactmaild.outbox.spool import Spool
from tests.fixtures.smtp import Sink, SmtpServer, free_port
from tests.helpers import Daemon, exactmaild, metric, scrape, wait_until, write_config

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")


class RefusingSink(Sink):
    """aiosmtpd's handler: refuses one mailbox at RCPT, as a real server does."""

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address == "gone@example.org":
            return "550 5.1.1 <gone@example.org>: no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"


@pytest.fixture
def refusing_smtp() -> Iterator[SmtpServer]:
    sink = RefusingSink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield SmtpServer("127.0.0.1", controller.port, sink, "none", None)
    controller.stop()


def _mail(to: str, subject: str) -> bytes:
    return f"To: {to}\nSubject: {subject}\n\nSee you on Tuesday.\n".encode()


def _run(cfg: Path, *args: str) -> str:
    r = exactmaild(*args, "-c", str(cfg))
    assert r.returncode == 0, (args, r.returncode, r.stderr.decode())
    return r.stdout.decode()


def _submit_raw(cfg: Path, to: str, subject: str) -> str:
    r = exactmaild("submit", "-c", str(cfg), input=_mail(to, subject))
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout.decode().strip()


def test_history_answers_did_mrs_x_get_it(tmp_path: Path, refusing_smtp: SmtpServer) -> None:
    port = free_port()
    cfg = write_config(
        tmp_path,
        refusing_smtp,
        metrics={"listen": f"127.0.0.1:{port}"},
        send={"retry_intervals": ["1h"]},
    )
    Spool(tmp_path / "spool")  # as the daemon's first start leaves it
    mrs_x = _submit_raw(cfg, "Mrs X <mrs.x@example.org>", "Your appointment on Tuesday")
    both = _submit_raw(cfg, "a@example.org, gone@example.org", "Recall")
    refusing_smtp.sink.data_replies.append("451 4.3.0 mailbox busy")  # Mrs X's first try
    deferred = 'state="deferred"'
    daemon = Daemon(cfg)
    try:
        daemon.wait_ready(port)
        assert len(refusing_smtp.sink.wait_for(1)) == 1
        assert wait_until(lambda: metric(scrape(port), "exactmaild_queue_messages", deferred) == 1)
        shown = _run(cfg, "queue", "show", mrs_x)
        assert "state: deferred" in shown and "tries: 1" in shown, shown
        assert "last error: " in shown and "451 4.3.0 mailbox busy" in shown
        assert "next retry: " in shown and "mrs.x@example.org  waiting" in shown
        # Not in the history yet; `history --to` says where it is.
        assert f"STILL DEFERRED  {mrs_x}" in _run(cfg, "history", "--to", "mrs.x@example.org")
        # Retried by hand out of deferred/: sent now, and gone from the retry
        # index at once (not in an hour, when its retry was due).
        assert f"{mrs_x}: queued again (was deferred)" in _run(cfg, "queue", "retry", mrs_x)
        assert len(refusing_smtp.sink.wait_for(2)) == 2
        assert wait_until(lambda: metric(scrape(port), "exactmaild_queue_messages", deferred) == 0)
        assert wait_until(lambda: len(json.loads(_run(cfg, "history", "--json"))) == 2)
    finally:
        assert daemon.stop() == 0
    out = _run(cfg, "history", "--to", "MRS.X@example.org")
    assert f"SENT  {mrs_x}" in out, out
    assert "subject: Your appointment on Tuesday" in out
    assert "mrs.x@example.org  accepted: 250 2.0.0 OK queued" in out
    assert both not in out
    (rec,) = json.loads(_run(cfg, "history", "--to", "mrs.x@example.org", "--json"))
    assert rec["queue_id"] == mrs_x and rec["result"] == "sent" and rec["tries"] == 2
    assert ISO.match(rec["finished_at"]) and ISO.match(rec["queued_at"]), rec
    assert rec["user"] and rec["message_id"].startswith("<")
    (rcpt,) = rec["recipients"]
    assert (rcpt["address"], rcpt["status"]) == ("mrs.x@example.org", "accepted")
    assert ISO.match(rcpt["at"])
    (rec,) = json.loads(_run(cfg, "history", "--to", "gone@example.org", "--json"))
    assert rec["queue_id"] == both and rec["result"] == "partly sent"
    got = {r["address"]: (r["status"], r["reply"]) for r in rec["recipients"]}
    assert got["a@example.org"][0] == "accepted"
    assert got["gone@example.org"] == ("refused", "550 5.1.1 <gone@example.org>: no such user")
    # queue show works once the message has left the spool.
    shown = _run(cfg, "queue", "show", mrs_x)
    assert "SENT" in shown and "mrs.x@example.org  accepted" in shown, shown
    # Nothing since tomorrow; and a date it cannot read is a usage error.
    tomorrow = time.strftime("%Y-%m-%d", time.localtime(time.time() + 2 * 86400))
    assert "no finished message" in _run(cfg, "history", "--since", tomorrow)
    assert exactmaild("history", "--since", "someday", "-c", str(cfg)).returncode == 64


def test_send_now_and_batch_operations_on_a_running_daemon(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    port = free_port()
    delay = 4.0
    cfg = write_config(
        tmp_path,
        smtp_server,
        send={"immediately": False, "delay": f"{delay:g}s"},
        metrics={"listen": f"127.0.0.1:{port}"},
    )
    spool = Spool(tmp_path / "spool")
    first, second, third = (
        spool.submit(_mail(f"patient{i}@example.org", f"Reminder {i}")) for i in (1, 2, 3)
    )
    letters = [spool.submit(_mail(f"n{i}@example.org", "Our newsletter")) for i in (1, 2)]
    daemon = Daemon(cfg)
    try:
        daemon.wait_ready(port)
        got = smtp_server.sink.wait_for(1)
        assert [m.rcpt_tos for m in got] == [["patient1@example.org"]]
        _run(cfg, "queue", "send-now", third)
        got = smtp_server.sink.wait_for(2, timeout=delay + 10)
        assert [m.rcpt_tos[0] for m in got] == ["patient1@example.org", "patient3@example.org"]
        assert got[1].at - got[0].at >= delay - 0.2  # still paced
        # Before the next send is due: hold one by recipient, cancel two by subject.
        out = _run(cfg, "queue", "hold", "--all", "--to", "patient2@example.org")
        assert f"{second}: held (was queued)" in out and "1 message held" in out
        out = _run(cfg, "queue", "cancel", "--all", "--subject", "NEWSLETTER")
        assert "2 messages cancelled" in out and second not in out, out
        # The daemon's queue (its index, which the metrics read) empties at once,
        # not when their turn would have come (the next send, seconds away).
        queued = 'state="queued"'
        level = lambda: metric(scrape(port), "exactmaild_queue_messages", queued)  # noqa: E731
        assert wait_until(lambda: level() == 0, timeout=1.5), level()
        out = _run(cfg, "queue", "release", second)
        assert f"{second}: released (was hold)" in out
        got = smtp_server.sink.wait_for(3, timeout=delay + 10)
        assert [m.rcpt_tos[0] for m in got][2] == "patient2@example.org"
        assert wait_until(lambda: level() == 0)
        assert len(smtp_server.sink.messages) == 3  # the cancelled never went
    finally:
        assert daemon.stop() == 0
    recs = json.loads(_run(cfg, "history", "--json"))
    by_id = {r["queue_id"]: r for r in recs}
    assert {by_id[q]["result"] for q in letters} == {"cancelled"}
    assert "exactmaild queue cancel" in by_id[letters[0]]["reason"]
    assert by_id[letters[0]]["recipients"][0]["status"] == "not sent"
    assert {by_id[q]["result"] for q in (first, second, third)} == {"sent"}
    # Ids and --all together, or neither, are usage errors; an unknown id is 69.
    assert exactmaild("queue", "cancel", "-c", str(cfg)).returncode == 64
    assert exactmaild("queue", "hold", "x", "--all", "-c", str(cfg)).returncode == 64
    r = exactmaild("queue", "cancel", "no-such-id", "-c", str(cfg))
    assert r.returncode == 69 and b"no such message" in r.stderr
    # send-now needs the daemon.
    r = exactmaild("queue", "send-now", letters[0], "-c", str(cfg))
    assert r.returncode == 69 and b"no daemon" in r.stderr
