"""The SMTP session over a real link: a kept connection against a login per
message, and a recipient list split over transactions.

Through the delay proxy (`delayproxy.py`, --delay-ms each way; 25 ms: a
provider across the internet) in front of aiosmtpd with AUTH (PLAIN) and a
recipient limit of 100 a transaction (452 4.5.3 past it, as Gmail answers):

* paced send, kept: one message on a connection idle past the probe
  threshold (NOOP, then MAIL/RCPT/DATA and the body), median of --n;
* paced send, new login: one message on a fresh connection (TCP, greeting,
  EHLO, AUTH PLAIN, then the same), what a sender that closes between
  paced sends pays each time (without TLS: STARTTLS adds its own round
  trips and a handshake);
* 150 recipients: one message past the server's limit (100 in the first
  transaction, 452 4.5.3 for the rest, 50 in the next at once), and the same
  split before the server refuses (outgoing.max_recipients: 100);
* logins for 10 messages paced 20 s apart (the Sender on an injected clock,
  no proxy): outgoing.keepalive 4m against 0s.

Figures are milliseconds and round trips (divided by the measured RTT).

    python bench/session.py [--n 10] [--delay-ms 25] [--proxy PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, median, table
from wan import PROXY, delayed

from exactmaild.config.model import Server
from exactmaild.send.smtp import SmtpConnection
from exactmaild.send.split import finish

USER, PASSWORD = "reception@practice.example", "bench-password"
RECIPIENTS = tuple(f"patient{i:03}@example.org" for i in range(150))


class Password:
    method = "password"
    username = USER

    def secret(self) -> str:
        return PASSWORD

    def invalidate(self) -> None:
        pass


def start_server(pipelining: bool) -> Any:
    """aiosmtpd with AUTH and a recipient limit of 100, in this process."""
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    class Limited:
        async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
            session.host_name = hostname
            if pipelining:
                responses.insert(-1, "250-PIPELINING")
            return responses

        async def handle_RCPT(self, server, session, envelope, address, options):  # type: ignore[no-untyped-def]
            if len(envelope.rcpt_tos) >= 100:
                return "452 4.5.3 Your message has too many recipients"
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 OK"

        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            return "250 2.0.0 OK queued"

    def auth(server, session, envelope, mechanism, data):  # type: ignore[no-untyped-def]
        return AuthResult(success=data.password.decode() == PASSWORD, handled=False)

    from _common import free_port

    c = Controller(
        Limited(),
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=auth,
        auth_required=True,
        auth_require_tls=False,
    )
    c.start()
    return c


def rtt_of(port: int) -> float:
    conn = SmtpConnection(Server("127.0.0.1", port, "none"), Password(), timeout=10)
    conn.connect()
    assert conn._conn is not None
    times = []
    for _ in range(10):
        t = time.perf_counter()
        conn._conn.noop()
        times.append(time.perf_counter() - t)
    conn.close()
    return median(times)


def paced(port: int, n: int) -> tuple[float, float]:
    """(kept, new login): seconds for one paced send, medians of n."""
    server = Server("127.0.0.1", port, "none")
    data = b"Subject: reminder\r\n\r\nSee you Tuesday.\r\n"
    kept = SmtpConnection(server, Password(), timeout=10)
    kept.connect()
    kept_times, new_times = [], []
    for _ in range(n):
        time.sleep(1.1)  # past the probe threshold: the NOOP is paid
        t = time.perf_counter()
        kept.send(USER, ("patient@example.org",), data)
        kept_times.append(time.perf_counter() - t)
        fresh = SmtpConnection(server, Password(), timeout=10)
        t = time.perf_counter()
        fresh.send(USER, ("patient@example.org",), data)
        new_times.append(time.perf_counter() - t)
        fresh._drop()
    kept.close()
    return median(kept_times), median(new_times)


def split(port: int, n: int, max_recipients: int | None) -> tuple[float, int]:
    """Seconds for one message to 150 recipients (median of n), and transactions."""
    server = Server("127.0.0.1", port, "none")
    data = b"Subject: practice closed on Friday\r\n\r\nSee you Monday.\r\n"
    times, parts = [], 0
    for _ in range(n):
        conn = SmtpConnection(server, Password(), timeout=10, max_recipients=max_recipients)
        conn.connect()
        seen: list[int] = []
        t = time.perf_counter()
        tx = conn.begin(USER, RECIPIENTS, data)
        tx.end()
        result = finish(tx, tx.reply(), lambda done, seen=seen: seen.append(len(done)))
        times.append(time.perf_counter() - t)
        assert len(result.accepted) == 150, result
        parts = len(seen) + 1
        conn.close()
    return median(times), parts


def logins(keepalive: str) -> int:
    """SMTP logins for 10 messages 20 s apart, through the Sender on an injected clock."""
    sys.path.insert(0, str(REPO))
    from tests.fixtures.smtp import start_smtp
    from tests.test_smtp_session import _paced, _sender

    controller, smtp = start_smtp("none", auth=True)
    try:
        with tempfile.TemporaryDirectory() as d:
            sender, metrics = _sender(Path(d), smtp, keepalive=keepalive)
            _paced(sender, 10, smtp)
            sender.transport.close()
            return int(metrics.smtp_logins._only().get())
    finally:
        controller.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--delay-ms", type=float, default=25.0)
    ap.add_argument("--proxy", type=Path, default=PROXY)
    args = ap.parse_args()
    if not args.proxy.exists():
        print(f"session: {args.proxy} not found (give --proxy PATH to delayproxy.py)")
        return
    import logging

    logging.getLogger("mail.log").setLevel(logging.ERROR)
    rows = []
    for pipelining in (True, False):
        controller = start_server(pipelining)
        try:
            with delayed(controller.port, args.delay_ms, args.proxy) as port:
                rtt = rtt_of(port)
                kept, new = paced(port, args.n)
                over, over_parts = split(port, max(3, args.n // 2), None)
                pre, pre_parts = split(port, max(3, args.n // 2), 100)
        finally:
            controller.stop()
        print(
            f"# PIPELINING {'on' if pipelining else 'off'}: "
            f"RTT through the proxy {rtt * 1000:.1f} ms"
        )
        rows += figures(pipelining, rtt, kept, new, over, over_parts, pre, pre_parts)
    print(table(["PIPELINING", "what", "ms", "round trips"], rows))
    print(f"logins for 10 messages 20 s apart: keepalive 4m: {logins('4m')}, 0s: {logins('0s')}")


def figures(
    pipelining: bool,
    rtt: float,
    kept: float,
    new: float,
    over: float,
    over_parts: int,
    pre: float,
    pre_parts: int,
) -> list[list[str]]:
    on = "on" if pipelining else "off"
    rows = [
        ["paced send, kept connection (NOOP probe)", f"{kept * 1000:.0f}", f"{kept / rtt:.1f}"],
        ["paced send, new login each time", f"{new * 1000:.0f}", f"{new / rtt:.1f}"],
        [
            f"150 recipients, 452 4.5.3 past 100 ({over_parts} transactions)",
            f"{over * 1000:.0f}",
            f"{over / rtt:.1f}",
        ],
        [
            f"150 recipients, max_recipients 100 ({pre_parts} transactions)",
            f"{pre * 1000:.0f}",
            f"{pre / rtt:.1f}",
        ],
    ]
    return [[on, *r] for r in rows]


if __name__ == "__main__":
    main()
