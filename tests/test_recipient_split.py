"""A long recipient list through real aiosmtpd with a recipient limit of 100
(452 4.5.3 past it, as Gmail answers): the message reaches everyone in as
many transactions as it takes, at once, on one connection, counted once per
message or once per recipient; outgoing.max_recipients splits it before the
server refuses; and a crash between two transactions never sends it twice
to anyone."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope, Session

from exactmaild.auth.credentials import credentials_for
from exactmaild.config import load as configload
from exactmaild.config.model import Config
from exactmaild.daemon import logs
from exactmaild.daemon.metrics import Metrics
from exactmaild.outbox.claim import Claim
from exactmaild.outbox.spool import Spool
from exactmaild.send.sender import Sender
from exactmaild.send.smtp import SmtpConnection
from exactmaild.send.split import over_recipient_limit
from exactmaild.store.state import StateStore
from tests.fixtures.smtp import Sink, SmtpServer, free_port
from tests.helpers import Daemon, exactmaild, message, metric, scrape, wait_until, write_config

RECIPIENTS = [f"patient{i:03}@example.org" for i in range(150)]
BIG = message(1, to=", ".join(RECIPIENTS))


@dataclass
class Limited(Sink):
    """aiosmtpd's handler with a limit of `limit` recipients a transaction."""

    limit: int = 100
    refusals: int = 0  # the 452 4.5.3 replies given

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.limit:
            with self.lock:
                self.refusals += 1
            return "452 4.5.3 Your message has too many recipients"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"


def _start(pipelining: bool) -> tuple[Controller, SmtpServer]:
    sink = Limited(pipelining=pipelining)
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    return controller, SmtpServer("127.0.0.1", controller.port, sink, "none", None)


@pytest.fixture(params=[True, False], ids=["pipelining", "one-by-one"])
def limited(request: pytest.FixtureRequest) -> Iterator[SmtpServer]:
    controller, server = _start(request.param)
    yield server
    controller.stop()


def _check_everyone_once(smtp: SmtpServer, transactions: list[int]) -> None:
    got = [m.rcpt_tos for m in smtp.sink.messages]
    assert [len(r) for r in got] == transactions
    assert sorted(r for rcpts in got for r in rcpts) == RECIPIENTS


def test_150_recipients_reach_everyone_in_two_transactions_through_the_daemon(
    tmp_path: Path,
) -> None:
    controller, smtp = _start(pipelining=True)
    cfg = write_config(tmp_path, smtp, send={"limit_counts": "recipients", "daily_limit": 1000})
    port = int(yaml.safe_load(cfg.read_text())["metrics"]["listen"].rsplit(":", 1)[1])
    d = Daemon(cfg)
    try:
        d.wait_ready(port)
        t0 = time.monotonic()
        r = exactmaild("submit", "-c", str(cfg), input=BIG)
        assert r.returncode == 0, r.stderr
        assert wait_until(lambda: sum(len(m.rcpt_tos) for m in smtp.sink.messages) >= 150), d.log()
        took = time.monotonic() - t0
        assert wait_until(lambda: metric(scrape(port), "exactmaild_sent_total") == 1), d.log()
        text = scrape(port)
        status = json.loads(exactmaild("status", "--json", "-c", str(cfg)).stdout)
    finally:
        assert d.stop() == 0
        controller.stop()
    _check_everyone_once(smtp, [100, 50])
    assert smtp.sink.ehlos == 1  # on one connection
    assert took < 10  # "within a few seconds", on a loaded machine
    assert metric(text, "exactmaild_sent_in_window") == 150  # limit_counts: recipients
    # Nothing paused, nothing failed or deferred: one login, one send.
    assert status["blocked_by"] is None, status
    assert metric(text, "exactmaild_queue_paused") == 0
    for kind in ("transient", "permanent", "account"):
        assert metric(text, "exactmaild_send_failures_total", f'kind="{kind}"') == 0
    assert metric(text, "exactmaild_smtp_logins_total") == 1


def _sender(tmp_path: Path, smtp: SmtpServer, **overrides: Any) -> Sender:
    cfg = configload.load(write_config(tmp_path, smtp, **overrides))
    logs.configure(cfg.log)

    def transport(c: Config) -> SmtpConnection:
        return SmtpConnection(
            c.outgoing,
            credentials_for(c.account),
            timeout=10.0,
            max_recipients=c.outgoing.max_recipients,
        )

    s = Sender(
        cfg,
        StateStore(cfg.state_dir),
        Spool(cfg.spool.dir),
        Metrics(),
        logs.get(),
        transport_factory=transport,
    )
    s.recover()
    return s


def _drain(sender: Sender) -> None:
    for _ in range(5):
        sender.step()
        if not sender.outbox.queued:
            break
    sender.outbox.settle()
    sender.transport.close()


@pytest.mark.parametrize(
    ("counts", "max_recipients", "transactions", "counted"),
    [("messages", None, [100, 50], 1), ("recipients", 60, [60, 60, 30], 150)],
)
def test_split_counts_and_max_recipients(
    tmp_path: Path,
    limited: SmtpServer,
    counts: str,
    max_recipients: int | None,
    transactions: list[int],
    counted: int,
) -> None:
    outgoing = {} if max_recipients is None else {"max_recipients": max_recipients}
    sender = _sender(tmp_path, limited, outgoing=outgoing, send={"limit_counts": counts})
    sender.spool.submit(BIG)
    _drain(sender)
    _check_everyone_once(limited, transactions)
    assert limited.sink.ehlos == 1
    assert sender.outbox.ledger.own_used(time.time()) == counted
    # Split before the server refuses: no 452 seen.
    assert isinstance(limited.sink, Limited)
    assert (limited.sink.refusals == 0) is (max_recipients is not None)
    assert not sender.pause.streak and sender.spool.names("deferred") == []


class Crash(BaseException):
    """The daemon dies here (a kill, a power cut): nothing after it runs."""


def test_a_crash_between_transactions_sends_nobody_a_second_copy(
    tmp_path: Path, limited: SmtpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = _sender(tmp_path, limited)
    first.spool.submit(BIG)
    real = Claim.progress

    def crash_after(self: Claim, done: tuple[str, ...]) -> None:
        real(self, done)  # the first 100 are recorded as having it ...
        raise Crash  # ... and the daemon dies before the rest go

    monkeypatch.setattr(Claim, "progress", crash_after)
    with pytest.raises(Crash):
        first.step()
    first.transport.abort()
    first.transport.close()
    assert [len(m.rcpt_tos) for m in limited.sink.messages] == [100]
    assert len(first.spool.names("active")) == 1

    monkeypatch.setattr(Claim, "progress", real)
    # Start-up recovery requeues it; the recorded 100 are skipped.
    second = _sender(tmp_path, limited)
    _drain(second)
    _check_everyone_once(limited, [100, 50])


@pytest.mark.parametrize(
    ("reply", "over"),
    [
        ("452 4.5.3 Your message has too many recipients. For more information regarding "
         "Google's sending limits, visit https://support.google.com/mail/answer/22839", True),
        ("452 Too many recipients", True),  # no enhanced status code
        ("552 5.5.3 Too many recipients", True),  # RFC 821's code: RFC 5321 4.5.3.1.10
        ("452 4.3.1 Insufficient system storage", False),
        ("452 4.2.2 Mailbox full", False),
        ("550 5.1.1 The email account that you tried to reach does not exist", False),
        ("451 4.3.0 Temporary server error. Please try again later", False),
        ("452 4.5.3 too many recipients"[:3] + " 4.7.1 Recipient rate limit", False),
    ],
)  # fmt: skip
def test_what_a_recipient_limit_reply_looks_like(reply: str, over: bool) -> None:
    code, _, text = reply.partition(" ")
    assert over_recipient_limit(int(code), text) is over
