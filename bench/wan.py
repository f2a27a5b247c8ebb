"""Round trips a message over a real link: RTT 50 ms, one connection.

What it measures, in one run, through a TCP proxy that adds --delay-ms each
way (`delayproxy.py`, default 25 ms: a provider tens of milliseconds away):

* rtt: the measured round trip through the proxy (NOOP, median of 20);
* the 1-RTT client: a raw socket client that writes one message's body and
  final dot in the same write as the next message's MAIL/RCPT/DATA (RFC
  2920): the physical limit on one connection with one message in flight;
* exactmaild: N messages in SPOOL/new/, `exactmaild run` in immediate mode
  into Postfix's smtp-sink, steady state (second to last send recorded);
* raw smtplib (`sendmail()` on one connection), msmtp (one process a
  message; skipped if missing) and nullmailer-send (as bench/peers.py runs
  it; skipped without root or its package);
* Postfix on one connection (`bench/_postfix.py`: relayhost through the
  proxy, `default_destination_concurrency_limit = 1`, a held queue of N
  released at once; needs root), into aiosmtpd advertising PIPELINING so
  that its arrival stamps time it, and exactmaild again into the same;
* exactmaild with STARTTLS into aiosmtpd (TLS, PIPELINING advertised):
  its connection set-up once (`SmtpConnection.connect()`: TCP, EHLO,
  STARTTLS, EHLO), then the steady rate.

Every figure is seconds a message divided by the measured RTT: round trips a
message (lower is better). Target: exactmaild at most 1.3.

    python bench/wan.py [--n 100] [--n-slow 10] [--delay-ms 25] [--proxy PATH]
"""

from __future__ import annotations

import argparse
import os
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    AioSink,
    Daemon,
    SentWatcher,
    SmtpSink,
    fill_spool,
    free_port,
    machine,
    median,
    table,
    wait_port,
    wire_message,
    workdir,
    write_config,
)
from _postfix import PrivatePostfix
from _postfix import available as postfix_available
from peers import MSMTP, msmtp_drain, nullmailer_drain, nullmailer_root

from exactmaild.auth.credentials import NoCredentials
from exactmaild.config.model import Account, Server
from exactmaild.send.smtp import SmtpConnection

PROXY = REPO.parent / "shared" / "tools" / "delayproxy.py"

_AIO_SINK = r"""
import os, sys, ssl, time
from aiosmtpd.controller import Controller
out = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
class H:
    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        responses.insert(-1, "250-PIPELINING")  # it answers pipelined input in order
        return responses
    async def handle_DATA(self, server, session, envelope):
        os.write(out, b"%17.6f\n" % time.time())
        return "250 2.0.0 OK"
tls = {}
if len(sys.argv) > 3:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    tls = {"tls_context": ctx, "require_starttls": True}
c = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[1]), **tls)
c.start()
print("ready", flush=True)
try:
    sys.stdin.read()
finally:
    c.stop()
"""


class StampSink(AioSink):
    """aiosmtpd advertising PIPELINING (it answers pipelined input in order),
    with STARTTLS if given a certificate; one arrival stamp a message."""

    SCRIPT = _AIO_SINK

    def __init__(self, work: Path, tls: tuple[Path, Path] | None = None) -> None:
        super().__init__(work, *((str(tls[0]), str(tls[1])) if tls else ()))

    def steady(self, n: int, timeout: float) -> float | None:
        """Seconds a message from the second arrival to the nth, or None."""
        deadline = time.monotonic() + timeout
        while len(got := self.stamps()) < n:
            if time.monotonic() > deadline:
                return None
            time.sleep(0.05)
        return (got[n - 1] - got[1]) / (n - 2)


def make_cert(work: Path) -> tuple[Path, Path]:
    cert, key = work / "cert.pem", work / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@contextmanager
def delayed(port: int, delay_ms: float, proxy: Path) -> Iterator[int]:
    """A delay proxy in front of 127.0.0.1:port; yields its port."""
    listen = free_port()
    proc = subprocess.Popen(
        [
            *(sys.executable, str(proxy), "--listen", str(listen)),
            *("--to", f"127.0.0.1:{port}", "--delay-ms", str(delay_ms)),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(listen)
        yield listen
    finally:
        proc.terminate()
        proc.wait(10)


def measure_rtt(port: int, *, ehlo_only: bool = False) -> float:
    """One command's round trip through the proxy, median of 20 (EHLO again
    and again where the server wants STARTTLS before anything else)."""
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo()
    times = []
    for _ in range(20):
        t0 = time.perf_counter()
        s.ehlo() if ehlo_only else s.noop()
        times.append(time.perf_counter() - t0)
    s.close()
    return median(times)


def _replies(f: BinaryIO, count: int) -> None:
    """Read `count` complete replies (multi-line ones whole)."""
    done = 0
    while done < count:
        line = f.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        if line[3:4] == b" ":
            done += 1


def one_rtt_client(port: int, n: int) -> float:
    """Seconds a message, steady: each write is a body and its dot with the
    next message's MAIL/RCPT/DATA; one reply group read a message."""
    msgs = [wire_message(i) for i in range(n)]

    def group(sender: str, rcpts: tuple[str, ...]) -> bytes:
        cmds = [f"MAIL FROM:<{sender}>", *(f"RCPT TO:<{r}>" for r in rcpts), "DATA"]
        return "".join(c + "\r\n" for c in cmds).encode()

    def body(data: bytes) -> bytes:
        lines = data.replace(b"\r\n", b"\n").split(b"\n")
        return b"".join((b"." + x if x.startswith(b".") else x) + b"\r\n" for x in lines) + b".\r\n"

    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    f = sock.makefile("rb")
    _replies(f, 1)
    sock.sendall(b"EHLO bench.example\r\n")
    _replies(f, 1)
    sender, rcpts, _ = msgs[0]
    sock.sendall(group(sender, rcpts))
    _replies(f, 2 + len(rcpts))
    stamps = []
    for i, (_, _rcpts, data) in enumerate(msgs):
        out = body(data)
        expect = 1
        if i + 1 < n:
            nsender, nrcpts, _ = msgs[i + 1]
            out += group(nsender, nrcpts)
            expect += 2 + len(nrcpts)
        sock.sendall(out)
        _replies(f, expect)
        stamps.append(time.perf_counter())
    sock.sendall(b"QUIT\r\n")
    sock.close()
    return (stamps[-1] - stamps[0]) / (n - 1)


def smtplib_client(port: int, n: int) -> float:
    msgs = [wire_message(i) for i in range(n)]
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo()
    stamps = []
    for sender, rcpts, data in msgs:
        s.sendmail(sender, list(rcpts), data)
        stamps.append(time.perf_counter())
    s.quit()
    return (stamps[-1] - stamps[0]) / (n - 1)


def exactmaild_steady(port: int, n: int, timeout: float, **outgoing: object) -> float | None:
    """Seconds a message between the second and the last send recorded."""
    with workdir("wan") as w:
        cfg, _ = write_config(w, port)
        if outgoing:
            doc = yaml.safe_load(cfg.read_text())
            doc["outgoing"].update(outgoing)
            cfg.write_text(yaml.safe_dump(doc))
        fill_spool(w / "spool", n)
        watcher = SentWatcher(w / "state")
        d = Daemon(cfg)
        try:
            if watcher.wait(2, timeout) is None:
                return None
            t2 = time.time()
            end = watcher.wait(n, timeout)
            return None if end is None else (end - t2) / (n - 2)
        finally:
            d.stop()
            watcher.close()


def tls_setup(port: int, ca: Path) -> float:
    """exactmaild's own connection set-up with STARTTLS: seconds."""
    conn = SmtpConnection(
        Server("127.0.0.1", port, "starttls", tls_ca_file=ca),
        NoCredentials(Account("reception@practice.example")),
    )
    t0 = time.perf_counter()
    conn.connect()
    took = time.perf_counter() - t0
    conn.close()
    return took


def postfix_steady(work: Path, port: int, sink: StampSink, n: int, timeout: float) -> float:
    """Postfix relaying a held queue of n over one connection to `port`."""
    pf = PrivatePostfix(work, port)
    try:
        pf.inject(n)
        pf.release()
        got = sink.steady(n, timeout)
        if got is None:
            raise RuntimeError("Postfix did not deliver in time")
        return got
    finally:
        pf.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help="messages per sender")
    ap.add_argument("--n-slow", type=int, default=10, help="for smtplib, msmtp, nullmailer")
    ap.add_argument("--delay-ms", type=float, default=25.0, help="one way")
    ap.add_argument("--proxy", type=Path, default=PROXY)
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--no-download", action="store_true", help="no apt-get for nullmailer")
    args = ap.parse_args(argv)
    if not args.proxy.exists():
        print(f"wan: {args.proxy} not found (give --proxy PATH to delayproxy.py)")
        return 2
    n, slow = max(3, args.n), max(3, args.n_slow)
    print(f"# wan: N={n} (slow peers {slow}), {args.delay_ms:g} ms each way; {machine()}")
    rows: list[list[object]] = []
    rtts: list[float] = []

    def row(name: str, per_msg: float | None, rtt: float, why: str = "") -> None:
        if per_msg is None:
            rows.append([name, "-", "-", why or "did not finish"])
        else:
            rows.append([name, per_msg * 1000, per_msg / rtt, why])

    sink = SmtpSink()
    try:
        with delayed(sink.port, args.delay_ms, args.proxy) as port:
            rtt = measure_rtt(port)
            rtts.append(rtt)
            row("1-RTT client (dot + next MAIL/RCPT/DATA)", one_rtt_client(port, n), rtt)
            row("exactmaild (immediate)", exactmaild_steady(port, n, args.timeout), rtt)
            row("raw smtplib sendmail()", smtplib_client(port, slow), rtt)
            if os.path.exists(MSMTP):
                rate = msmtp_drain(port, slow, args.timeout)
                row("msmtp, 1 process/msg", None if rate is None else 1 / rate, rtt)
            else:
                row("msmtp, 1 process/msg", None, rtt, f"{MSMTP} not found")
            root, why = nullmailer_root(None, not args.no_download)
            if root is not None:
                rate = nullmailer_drain(root, port, slow, args.timeout)
                per = None if rate is None else 1 / rate
                row("nullmailer-send", per, rtt, "1 process and connection/msg")
            else:
                row("nullmailer-send", None, rtt, why)
    finally:
        sink.close()
    # Postfix is timed by the server's arrival stamps, so it and exactmaild
    # beside it go to aiosmtpd advertising PIPELINING, as smtp-sink does.
    with workdir("wan-pf") as w:
        sink2 = StampSink(w)
        try:
            with delayed(sink2.port, args.delay_ms, args.proxy) as port:
                rtt = measure_rtt(port)
                rtts.append(rtt)
                if why := postfix_available():
                    row("Postfix, 1 connection (aiosmtpd)", None, rtt, why)
                else:
                    per = postfix_steady(w / "postfix", port, sink2, n, args.timeout)
                    row("Postfix, 1 connection (aiosmtpd)", per, rtt, "RSET probe before reuse")
                row("exactmaild (aiosmtpd)", sink_steady(sink2, port, n, args, {}), rtt)
        finally:
            sink2.close()
    with workdir("wan-tls") as w:
        cert, key = make_cert(w)
        sink3 = StampSink(w, (cert, key))
        try:
            with delayed(sink3.port, args.delay_ms, args.proxy) as port:
                rtt = measure_rtt(port, ehlo_only=True)
                rtts.append(rtt)
                setup = tls_setup(port, cert)
                row("exactmaild STARTTLS: connection set-up", setup, rtt, "TCP+EHLO+TLS+EHLO")
                opts = {"security": "starttls", "tls_ca_file": str(cert)}
                row("exactmaild STARTTLS: steady", sink_steady(sink3, port, n, args, opts), rtt)
        finally:
            sink3.close()
    print(f"# measured RTT through the proxy: {', '.join(f'{r * 1000:.1f}' for r in rtts)} ms")
    print(table(["sender", "ms/msg", "RTT/msg", "note"], rows))
    ex = next(r for r in rows if r[0] == "exactmaild (immediate)")
    one = rows[0]
    if isinstance(ex[2], float) and isinstance(one[2], float):
        print(
            f"round trips a message: exactmaild {ex[2]:.2f}, 1-RTT client {one[2]:.2f} "
            "(target <= 1.3)"
        )
        print(f"ratio exactmaild to the 1-RTT client: {ex[2] / one[2]:.3f}")
    else:
        print("round trips a message: exactmaild did not finish")
    return 0


def sink_steady(
    sink: StampSink, port: int, n: int, args: argparse.Namespace, outgoing: dict[str, str]
) -> float | None:
    """exactmaild's steady seconds a message by the sink's own stamps."""
    start = len(sink.stamps())
    exactmaild_steady(port, n, args.timeout, **outgoing)
    got = sink.stamps()[start:]
    return (got[-1] - got[1]) / (len(got) - 2) if len(got) == n else None


if __name__ == "__main__":
    sys.exit(main())
