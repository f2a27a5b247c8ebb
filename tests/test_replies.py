"""The reply table: each provider's documented reply, at its stage, gets its action.

First the table itself (pure: code, enhanced status and stage in, a kind
out), with the providers' own texts as vectors. Then every row through the
real daemon against the scripted server (tests/fixtures/faults.py: no real
server can be made to answer as Gmail or Microsoft 365 do), one daemon for
all rows in turn: each pause is seen in the metrics and in `status`, the
message goes back unblamed, and `flush` resumes it. Last, a quota reply
under rolling_24h in a simulation with an injected clock: nothing is tried
until the oldest counted send ages out.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from exactmaild.auth.credentials import credentials_for
from exactmaild.cli.status import collect
from exactmaild.config import load as configload
from exactmaild.config.model import Config
from exactmaild.core.errors import AccountFailure, PermanentFailure, TemporaryFailure
from exactmaild.core.limits import DAY
from exactmaild.daemon import logs
from exactmaild.daemon.control import send_control
from exactmaild.daemon.metrics import Metrics
from exactmaild.outbox.spool import Spool
from exactmaild.send.replies import (
    TABLE,
    classify_reply,
    is_account_reply,
    meaning,
    too_many_recipients,
)
from exactmaild.send.sender import Sender
from exactmaild.send.smtp import SmtpConnection
from exactmaild.store.state import StateStore
from tests.fixtures.faults import FaultServer
from tests.fixtures.smtp import Sink, SmtpServer
from tests.helpers import exactmaild, message, metric, scrape, wait_until, write_config
from tests.test_faults import config, metrics_port, start, status_json

# (stage, reply as the provider sends it, kind)
VECTORS = [
    ("data", "451 4.3.0 Temporary server error. Please try again later", "message"),
    ("mail", "451 4.3.0 Temporary server error. Please try again later", "message"),
    ("mail", "450 4.3.2 System not accepting network messages", "message"),
    ("data", "452 4.3.1 Insufficient system storage", "message"),
    ("connect", "421 4.7.0 Try again later, closing connection.", "throttled"),
    ("data", "421 4.7.0 Try again later, closing connection.", "throttled"),
    ("mail", "432 4.3.2 Concurrent connections limit exceeded", "throttled"),
    ("data", "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", "throttled"),
    ("rcpt", "452 4.5.3 Your message has too many recipients.", "too_many_recipients"),
    ("mail", "550 5.4.5 Daily user sending limit exceeded.", "provider_quota"),
    (
        "data",
        "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
        "provider_quota",
    ),
    ("mail", "550 5.2.251 Sender throttled due to continuous spam", "provider_quota"),
    ("data", "550 5.2.255 Sender throttled due to continuous errors", "provider_quota"),
    (
        "auth",
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
        "for the Tenant.",
        "auth_disabled",
    ),
    (
        "mail",
        "550 5.7.30 Basic authentication is not supported for Client Submission.",
        "auth_disabled",
    ),
    ("auth", "454 4.7.0 Too many login attempts, please try again later.", "throttled"),
    ("mail", "450 4.7.1 Error: too much mail from 127.0.0.1", "rate_limited"),
    (
        "connect",
        "421 4.7.0 mail.example.net: Error: too many connections from 127.0.0.1",
        "rate_limited",
    ),
    (
        "data",
        "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException",
        "mailbox_full",
    ),
    ("auth", "535 5.7.8 Authentication credentials invalid", "refused"),
    ("mail", "530 5.7.0 Authentication required", "refused"),
    ("auth", "454 4.7.0 Temporary authentication failure", "refused"),
    ("mail", "454 4.7.0 Temporary authentication failure", "refused"),
    (
        "connect",
        "421 4.3.2 The maximum number of concurrent connections per resource forest has "
        "exceeded a limit, closing transmission channel",
        "throttled",
    ),
    ("rcpt", "452 Too many recipients", "too_many_recipients"),
    # Not the account: a recipient's own mailbox, a refusal for good, a
    # closing server that is not throttling.
    ("rcpt", "552 5.2.2 The email account that you tried to reach is over quota", "recipient"),
    (
        "rcpt",
        "450 4.2.1 The user you are trying to contact is receiving mail too quickly",
        "recipient",
    ),
    ("data", "554 5.7.1 Message rejected as spam", "permanent"),
    ("data", "421 4.3.2 shutting down", "message"),
]


def _split(reply: str) -> tuple[int, str]:
    code, _, text = reply.partition(" ")
    return int(code), text


@pytest.mark.parametrize(("stage", "reply", "kind"), VECTORS)
def test_each_provider_reply_has_its_kind(stage: Any, reply: str, kind: str) -> None:
    code, text = _split(reply)
    assert meaning(code, text, stage).kind == kind
    err = classify_reply(code, text, stage=stage)
    if kind in ("message", "recipient", "too_many_recipients") and code < 500:
        assert type(err) is TemporaryFailure
    elif kind in ("permanent", "recipient"):
        assert type(err) is PermanentFailure
    else:
        assert isinstance(err, AccountFailure) and err.kind == kind
        assert reply.split(" ", 2)[1] in str(err)  # the server's own words are kept


def test_too_many_recipients_is_neither_a_pause_nor_a_failure() -> None:
    code, text = _split("452 4.5.3 Your message has too many recipients.")
    assert too_many_recipients(code, text)
    assert not is_account_reply(code, text)
    assert not too_many_recipients(*_split("452 4.5.3 Too many recipients"), stage="data")
    # Postfix's anvil per-client recipient rate is the account, not the transaction.
    assert is_account_reply(*_split("450 4.7.1 Error: too many recipients from 127.0.0.1"))


def test_the_same_reply_has_the_same_key_whatever_its_text() -> None:
    a = meaning(*_split("451 4.3.0 Temporary server error. - gsmtp abc"), "data")
    b = meaning(*_split("451 4.3.0 Temporary server error. - gsmtp xyz"), "data")
    assert a.reply == b.reply == "451 4.3.0"


def test_every_row_is_reached_by_a_vector() -> None:
    hit = set()
    for stage, reply, _ in VECTORS:
        code, text = _split(reply)
        for i, row in enumerate(TABLE):
            if row.matches(code, meaning(code, text, stage).enhanced, text, stage):
                hit.add(i)
                break
    assert hit == set(range(len(TABLE)))


# -- every row through the real daemon -----------------------------------------------

# (phase, reply, blocked_by, words status shows)
PAUSES = [
    (
        "greeting",
        "421 4.7.0 mx: Error: too many connections from 127.0.0.1",
        "paused",
        "rate-limit",
    ),
    ("mail", "450 4.7.1 Error: too much mail from 127.0.0.1", "paused", "rate-limit"),
    ("greeting", "421 4.7.0 Try again later, closing connection.", "paused", "throttling"),
    ("mail", "432 4.3.2 Concurrent connections limit exceeded", "paused", "throttling"),
    ("body", "432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded", "paused", "throttl"),
    ("auth", "454 4.7.0 Too many login attempts, please try again later.", "paused", "throttl"),
    (
        "auth",
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled "
        "for the Tenant.",
        "paused",
        "auth.method: oauth2 with provider: microsoft365, then run `exactmaild authorize`",
    ),
    (
        "mail",
        "550 5.7.30 Basic authentication is not supported for Client Submission.",
        "paused",
        "disabled password logins",
    ),
    (
        "body",
        "554 5.2.2 mailbox full; STOREDRV.Submission.Exception:QuotaExceededException",
        "paused",
        "mailbox is full",
    ),
    ("body", "550 5.4.5 Daily user sending limit exceeded.", "provider_quota", "quota"),
    (
        "body",
        "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException",
        "provider_quota",
        "quota",
    ),
    ("mail", "550 5.2.253 Sender throttled due to continuous errors", "provider_quota", "quota"),
]
TEMPORARY = "451 4.3.0 Temporary server error. Please try again later"


def _script(srv: FaultServer, phase: str, reply: str, rcpt: str = "") -> None:
    s = srv.script
    {
        "greeting": s.greeting,
        "auth": s.auth,
        "mail": s.mail,
        "body": s.body_default,
        "rcpt": s.rcpt.setdefault(rcpt, []),
    }[phase].append(reply)


def _iso(v: str) -> float:
    return dt.datetime.fromisoformat(v).timestamp()


class Ask:
    """`status` and `flush` as the commands do them, in this process: a
    command's interpreter start per row would cost the suite seconds. The
    commands themselves run where their output is checked."""

    def __init__(self, path: Path) -> None:
        self.cfg = configload.load(path)

    def status(self) -> dict[str, Any]:
        return collect(self.cfg)

    def flush(self) -> None:
        send_control(self.cfg, "flush")


def test_every_row_through_the_daemon(tmp_path: Path) -> None:
    srv = FaultServer(auth=True)
    cfg = config(
        tmp_path,
        srv,
        password=True,
        send={"retry_intervals": ["1h"], "account_pause": ["1h"], "limit_window": "rolling_24h"},
    )
    port = metrics_port(cfg)
    spool = Spool(tmp_path / "spool")
    ask = Ask(cfg)
    # A one-message 451 holds up nothing: the four behind it go at once.
    srv.script.body["patient0@example.org"] = [TEMPORARY]
    five = [spool.submit(message(n)) for n in range(5)]
    d = start(cfg)
    try:
        assert srv.wait_for(lambda: len(srv.messages) == 4, 15), d.log()
        took = max(m.at for m in srv.messages) - srv.bodies[0].at
        assert took < 2.0, took
        assert spool.names("deferred") == [five[0]]
        text = scrape(port)
        assert metric(text, "exactmaild_queue_paused") == 0
        assert metric(text, "exactmaild_send_failures_total", 'kind="account"') == 0
        oldest = min(m.at for m in srv.messages)  # the oldest counted send, give or take
        assert exactmaild("flush", "-c", str(cfg)).returncode == 0
        assert srv.wait_for(lambda: len(srv.messages) == 5, 15), d.log()

        n = 5
        refused_logins = 0
        for i, (phase, reply, blocker, words) in enumerate(PAUSES):
            # A greeting or a login is only met on a new connection: wait for
            # the last one to close. (A refused login may leave its socket
            # open on the client side, never used again: not waited for.)
            assert srv.wait_for(lambda r=refused_logins: srv.sessions <= r, 15), d.log()
            refused_logins += phase == "auth"
            conns = len(srv._conns)
            _script(srv, phase, reply)
            # Three queued: the account pauses at the first, one connection, no reconnect.
            names = [spool.submit(message(100 * i + k)) for k in range(3)]
            assert wait_until(
                lambda: metric(scrape(port), "exactmaild_queue_paused") == 1, 15, 0.02
            ), (reply, d.log())
            want = sorted(names)
            assert wait_until(lambda w=want: sorted(spool.names("new")) == w, 5), reply
            # (The pause is stored just after the metrics see it.)
            assert wait_until(lambda b=blocker: ask.status()["blocked_by"] == b, 5), reply
            st = ask.status()
            assert words in st["pause_reason"], (reply, st)
            assert st["queue"]["deferred"] == 0 and st["queue"]["failed"] == 0, st
            assert len(srv._conns) <= conns + 1, reply
            if blocker == "provider_quota":
                # rolling_24h: until the oldest counted send ages out, not a back-off.
                assert abs(st["resumes_at"] - (oldest + DAY)) < 5, st
                assert metric(scrape(port), "exactmaild_blocked", 'reason="provider_quota"') == 1
                if "5.4.5" in reply:  # the command's own words, once
                    out = exactmaild("status", "-c", str(cfg)).stdout.decode()
                    assert "provider quota reached, resumes tomorrow" in out, out
                    assert abs(_iso(status_json(cfg)["resumes_at"]) - (oldest + DAY)) < 5
            ask.flush()
            n += 3
            assert srv.wait_for(lambda n=n: len(srv.messages) == n, 15), (reply, d.log())
        # A resume removes the stored pause: status does not say PAUSED until
        # the old pause time (a day away for the last, a quota).
        st = status_json(cfg)
        assert st["paused"] is False and st["blocked_by"] is None, st
        text = scrape(port)
        assert metric(text, "exactmaild_send_failures_total", 'kind="account"') == len(PAUSES)
        assert metric(text, "exactmaild_send_failures_total", 'kind="permanent"') == 0

        # Temporary replies for one message: deferred, nothing paused.
        for phase, reply in (("mail", "450 4.3.2 System not accepting network messages"),
                             ("body", TEMPORARY)):  # fmt: skip
            _script(srv, phase, reply)
            one = spool.submit(message(1000 + n))
            assert wait_until(lambda one=one: spool.names("deferred") == [one], 15), d.log()
            n += 1
            # The file reaches deferred/ a moment before its retry time is
            # set: a flush in between leaves it at that time, so ask again.
            for _ in range(5):
                ask.flush()
                if srv.wait_for(lambda n=n: len(srv.messages) == n, 3):
                    break
            assert len(srv.messages) == n, (reply, d.log())

        # 452 4.5.3 at RCPT: the transaction is full, not the account.
        rcpts = [f"r{k}@example.org" for k in range(3)]
        _script(srv, "rcpt", "452 4.5.3 Your message has too many recipients.", rcpts[2])
        spool.submit(message(0, to=", ".join(rcpts)))
        ask.flush()
        got: Counter[str] = Counter()

        def everyone() -> bool:
            got.clear()
            got.update(r for m in srv.messages for r in m.rcpt_tos if r in rcpts)
            return len(got) == 3

        if not wait_until(everyone, 5):  # deferred, if the transaction is not split at once
            ask.flush()
            assert wait_until(everyone, 15), d.log()
        assert set(got.values()) == {1}  # each once
        assert metric(scrape(port), "exactmaild_send_failures_total", 'kind="account"') == len(
            PAUSES
        )

        # The same temporary reply to three different messages in a row: the
        # server is in trouble, and the rest are not tried one by one.
        srv.script.body_default[:] = [TEMPORARY] * 3
        base = len(srv.messages)
        four = [spool.submit(message(2000 + k)) for k in range(4)]
        assert wait_until(lambda: metric(scrape(port), "exactmaild_queue_paused") == 1, 15, 0.02), (
            d.log()
        )
        assert wait_until(lambda: ask.status()["blocked_by"] == "paused", 5)
        st = ask.status()
        assert "3 different messages" in st["pause_reason"], st
        assert st["queue"]["deferred"] == 3 and st["queue"]["queued"] == 1, st
        ask.flush()
        assert srv.wait_for(lambda: len(srv.messages) == base + len(four), 15), d.log()

        # A quota pause, the message cancelled, a restart: the new run is not
        # paused, and status does not say it is.
        _script(srv, "body", "550 5.4.5 Daily user sending limit exceeded.")
        last = spool.submit(message(3000))
        assert wait_until(lambda: ask.status()["paused"] is True, 15), d.log()
        assert exactmaild("queue", "cancel", last, "-c", str(cfg)).returncode == 0
    finally:
        assert d.stop() == 0
    d = start(cfg)
    try:
        st = status_json(cfg)
        assert st["paused"] is False and st["blocked_by"] is None, st
    finally:
        assert d.stop() == 0
        srv.close()
    assert spool.names("failed") == []


# -- a quota reply under rolling_24h, with an injected clock -------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now


def _sender(tmp_path: Path, srv: FaultServer, clock: Clock) -> Sender:
    smtp = SmtpServer(srv.host, srv.port, Sink(), "none", None)
    cfg = configload.load(
        write_config(tmp_path, smtp, send={"limit_window": "rolling_24h", "daily_limit": 100})
    )
    logs.configure(cfg.log)

    def transport(c: Config) -> SmtpConnection:
        return SmtpConnection(c.outgoing, credentials_for(c.account), timeout=10.0)

    store, spool = StateStore(cfg.state_dir), Spool(cfg.spool.dir)
    return Sender(
        cfg, store, spool, Metrics(), logs.get(), transport_factory=transport, clock=clock
    )


def _steps(sender: Sender, pred: Any) -> float:
    """Step the sender until `pred()` (a new file's inotify event may take a moment)."""
    deadline = time.monotonic() + 10
    wait = sender.step()
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.01)
        wait = sender.step()
    return wait


def test_a_quota_reply_waits_until_the_oldest_send_ages_out(tmp_path: Path) -> None:
    srv = FaultServer()
    clock = Clock(time.time())
    sender = _sender(tmp_path, srv, clock)
    try:
        first = clock.now
        sender.spool.submit(message(1))
        sender.recover()
        _steps(sender, lambda: len(srv.messages) == 1)
        clock.now += 3600
        sender.spool.submit(message(2))
        _steps(sender, lambda: len(srv.messages) == 2)
        clock.now += 3600
        srv.script.body_default = ["550 5.4.5 Daily user sending limit exceeded."] * 5
        sender.spool.submit(message(3))
        sender.spool.submit(message(4))
        _steps(sender, lambda: sender.pause.until is not None)
        wait = sender.step()  # what it waits for now
        frees = first + DAY
        assert abs(clock.now + wait - frees) < 1, wait
        snap = sender.snapshot()
        assert snap.blocked_by == "provider_quota" and snap.resumes_at is not None
        assert abs(snap.resumes_at - frees) < 1
        tried, conns = len(srv.bodies), len(srv._conns)
        # Every ten minutes of the day that follows: nothing is tried.
        while clock.now + 600 < frees:
            clock.now += 600
            assert sender.step() > 0
        assert len(srv.bodies) == tried == 3 and len(srv._conns) == conns
        srv.script.body_default.clear()
        clock.now = frees + 1
        _steps(sender, lambda: len(srv.messages) == 4)
        assert len(srv.messages) == 4
        assert sender.snapshot().blocked_by is None
    finally:
        sender.outbox.settle()
        sender.transport.close()
        srv.close()


def test_a_reload_of_the_account_lifts_the_pause_and_its_stored_copy(tmp_path: Path) -> None:
    srv = FaultServer()
    clock = Clock(time.time())
    sender = _sender(tmp_path, srv, clock)
    try:
        srv.script.body_default = ["554 5.2.2 mailbox full; STOREDRV.Submission.Exception:"
                                   "QuotaExceededException"]  # fmt: skip
        sender.spool.submit(message(1))
        sender.recover()
        _steps(sender, lambda: sender.pause.until is not None)
        assert sender.pause.active(clock.now)
        assert "Sent Items" in (sender.state.get("pause_reason") or "")
        assert sender.state.get("pause_kind") == "mailbox_full"
        # Sent Items emptied, the account's settings changed and reloaded.
        cfg = sender._cfg
        sender.apply(replace(cfg, account=replace(cfg.account, address="desk@practice.example")))
        assert not sender.pause.active(clock.now)
        assert sender.state.get("pause_until") is None
        assert sender.state.get("pause_reason") is None
        _steps(sender, lambda: len(srv.messages) == 1)
        assert len(srv.messages) == 1
    finally:
        sender.outbox.settle()
        sender.transport.close()
        srv.close()
