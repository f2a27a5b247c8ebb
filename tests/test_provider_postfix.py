"""The real daemon against a provider in a box: Postfix as the submission server.

Postfix (tests/fixtures/postfix.py) requires STARTTLS, checks logins through
Dovecot, allows one connection per client and a few messages per anvil time
unit, as hosting providers' servers do. These tests run `exactmaild run` as a
child process against it and check what a provider would see: its own log
(sessions, logins, refusals, accepted messages), what reached the relay sink,
the daemon's descriptors, `status` and the ledger.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from exactmaild.outbox.spool import Spool
from tests.fixtures.postfix import Provider
from tests.fixtures.smtp import Received, SmtpServer
from tests.helpers import Daemon, exactmaild, message, wait_until, write_config

WRONG = "an-old-password"


def provider_config(tmp: Path, provider: Provider, password: str, **send: Any) -> Path:
    """The daemon's config for the provider's port, logging in with `password`."""
    pw = tmp / "password"
    pw.write_text(password + "\n")
    pw.chmod(0o600)
    server = SmtpServer(provider.host, provider.port, provider.sink, "starttls", provider.ca_file)
    return write_config(
        tmp,
        server,
        timezone="UTC",
        account={
            "address": provider.user,
            "auth": {"method": "password", "username": provider.user, "password_file": str(pw)},
        },
        # A message deferred on its own waits a minute: only an account pause
        # (a few seconds here) can make the tests' deadlines.
        send={"retry_intervals": ["60s"], "give_up_after": "1h", **send},
    )


def start(cfg: Path) -> Daemon:
    d = Daemon(cfg)
    d.wait_ready(int(yaml.safe_load(cfg.read_text())["metrics"]["listen"].rsplit(":", 1)[1]), 30)
    return d


def submit(cfg: Path, count: int, start_at: int = 1) -> None:
    spool = Spool(Path(yaml.safe_load(cfg.read_text())["spool"]["dir"]))
    for n in range(start_at, start_at + count):
        spool.submit(message(n))


def status(cfg: Path) -> dict[str, Any]:
    r = exactmaild("status", "--json", "-c", str(cfg))
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def subjects(received: list[Received]) -> Counter[str]:
    out: Counter[str] = Counter()
    for m in received:
        for line in m.data.decode(errors="replace").splitlines():
            if line.startswith("Subject: "):
                out[line[9:]] += 1
    return out


def log_events(d: Daemon, event: str) -> list[dict[str, Any]]:
    out = []
    for line in d.log().splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if rec.get("event") == event:
                out.append(rec)
    return out


def seconds_until(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp() - time.time()


def stamps(lines: list[str]) -> list[float]:
    """The times of Postfix log lines ("Dec 02 00:06:34 ..."), in seconds of the day."""
    out = []
    for ln in lines:
        h, m, s = ln.split()[2].split(":")
        out.append(int(h) * 3600 + int(m) * 60 + int(s))
    return out


def test_anvil_throttle_pauses_the_account_and_every_message_arrives_once(
    tmp_path: Path, postfix_provider: Provider
) -> None:
    """A burst of 5 against 3 messages per 3 s: Postfix answers "450 4.7.1 Error:
    too much mail from 127.0.0.1". The account pauses (status says why) until the
    rate frees; messages are not deferred one by one on fresh connections."""
    p = postfix_provider
    n = 5
    cfg = provider_config(tmp_path, p, p.password, account_pause=["1500ms"])
    submit(cfg, n)
    began = time.monotonic()
    d = start(cfg)
    try:
        seen_pause: list[dict[str, Any]] = []
        deadline = time.monotonic() + 40
        # Until all have arrived, or a message was deferred on its own (it would
        # wait a minute: the test has failed, no need to wait for it).
        while (
            len(p.sink.messages) < n
            and time.monotonic() < deadline
            and not log_events(d, "deferred")
        ):
            s = status(cfg)
            if s["paused"]:
                seen_pause.append(s)
            time.sleep(0.2)
        took = time.monotonic() - began
        got = subjects(p.sink.wait_for(n, timeout=1))
    finally:
        d.stop()
    detail = f"\npostfix:\n{p.log()}\ndaemon:\n{d.log()[-4000:]}"
    # Paused, not deferred message by message.
    deferred = [e["error"] for e in log_events(d, "deferred")]
    assert deferred == [], f"messages were deferred one by one: {deferred}{detail}"
    # Every message once, at the sink and in Postfix's own count, and the ledger agrees.
    assert got == Counter({f"Appointment reminder {k}": 1 for k in range(1, n + 1)}), detail
    assert wait_until(lambda: p.relayed() == n, timeout=10), detail
    assert p.accepted() == n, detail
    s = status(cfg)
    assert s["sent_in_window"] == n and s["queue"].get("queued", 0) == 0, s
    # The throttle was hit (else this test proves nothing) and paused the account:
    # status said so, with the server's reply as the reason.
    refusals = p.rate_refusals()
    assert refusals, f"the burst never hit Postfix's rate limit{detail}"
    assert seen_pause, f"status never showed the account paused{detail}"
    assert all(s["blocked_by"] == "paused" for s in seen_pause), seen_pause
    assert any("too much mail" in (s["pause_reason"] or "") for s in seen_pause), seen_pause
    # After each refusal the daemon waited out its pause before asking again.
    times = stamps(refusals)
    assert all(b - a >= 1 for a, b in itertools.pairwise(times)), (times, detail)
    # One connection for what a rate window allows, not one per message: each
    # session (connection, TLS handshake, login) ends at a refusal or at the end.
    assert p.tls_sessions() <= len(refusals) + 1, detail
    # The rate frees every 3 s: 5 messages at 3 a window need 2 windows; a
    # message deferred on its own would wait its retry interval, a minute.
    assert took < 2 * p.rate_unit + 15, (took, detail)


def test_wrong_then_fixed_password_delivers_at_once_after_flush(
    tmp_path: Path, postfix_provider: Provider
) -> None:
    """The login is refused and the account pauses (for ten minutes here). The
    password file is fixed and `exactmaild flush` run: the message goes at once,
    not after Postfix times out a session the refused login left open (300 s),
    which with one connection allowed would answer "421 too many connections"."""
    p = postfix_provider
    cfg = provider_config(tmp_path, p, WRONG, account_pause=["10m"])
    submit(cfg, 1)
    d = start(cfg)
    try:
        assert wait_until(lambda: log_events(d, "sending_paused"), timeout=30), d.log()
        s = status(cfg)
        assert s["blocked_by"] == "paused" and "refused the login" in s["pause_reason"], s
        assert p.failed_logins() >= 1, p.log()
        (tmp_path / "password").write_text(p.password + "\n")
        began = time.monotonic()
        r = exactmaild("flush", "-c", str(cfg))
        assert r.returncode == 0, r.stdout + r.stderr
        # Until it arrives, or Postfix turns the new connection away because the
        # refused login's session is still open.
        wait_until(lambda: p.sink.messages or p.connection_refusals(), timeout=30)
        arrived = p.sink.wait_for(1, timeout=1)
        took = time.monotonic() - began
        resumed = bool(arrived) and wait_until(lambda: not status(cfg)["paused"], timeout=10)
    finally:
        d.stop()
    detail = f"\npostfix:\n{p.log()}\ndaemon:\n{d.log()[-4000:]}"
    assert p.connection_refusals() == [], f"a connection was left open to Postfix{detail}"
    assert len(arrived) == 1, f"not delivered within 30 s of the flush{detail}"
    assert took < 10, (took, detail)
    assert wait_until(lambda: p.relayed() == 1, timeout=10), detail
    assert p.accepted() == 1 and status(cfg)["sent_in_window"] == 1, detail
    assert resumed, f"status still says paused after the send: {status(cfg)}"


def test_refused_logins_leave_no_connection_open(
    tmp_path: Path, postfix_provider: Provider
) -> None:
    """After refused logins the daemon holds no descriptor to the submission port
    (neither ESTABLISHED nor CLOSE-WAIT), and Postfix sees every session end."""
    p = postfix_provider
    # Two refused logins a second apart, then a long pause to look at the daemon in.
    cfg = provider_config(tmp_path, p, WRONG, account_pause=["1s", "10m"])
    submit(cfg, 1)
    d = start(cfg)
    try:

        def long_pause() -> bool:
            # The daemon logs the first pause of a streak only: ask status.
            s = status(cfg)
            until = s["pause_until"]
            return bool(s["paused"]) and until is not None and seconds_until(until) > 60

        assert wait_until(long_pause, timeout=60, interval=0.3), f"{d.log()}\n{p.log()}"
        held = p.established(d.proc.pid)
        # Postfix ends a session as soon as its client closes: give the log a moment.
        wait_until(lambda: p.open_sessions() == 0, timeout=5)
        still_open = p.open_sessions()
    finally:
        d.stop()
    detail = f"\npostfix:\n{p.log()}\ndaemon:\n{d.log()[-4000:]}"
    assert p.failed_logins() + len(p.connection_refusals()) >= 2, detail
    assert held == [], f"the daemon (pid {d.proc.pid}) still holds: {held}{detail}"
    assert still_open == 0, f"{still_open} session(s) still open at Postfix{detail}"
    assert p.accepted() == 0 and math.isclose(status(cfg)["sent_in_window"], 0)
