"""Receive: a check of a big mailbox costs O(new), not O(mailbox).

What it measures, in one run, against real Dovecot servers on loopback
(tests/fixtures/dovecot.py, implicit TLS: IMAPS and POP3S) holding --old
(default 10,000) already-delivered messages, and a second one holding --small
(default 100), each time --new (default 10) new messages have arrived:

* check: exactmaild's own mailbox check, in process, the way the daemon's
  receive thread runs it (`Receiver(cfg, state, credentials).check(now)`):
  TLS connect, login, EXAMINE + UID SEARCH (IMAP) or UIDL + LIST n (POP3), then
  each new message fetched, written durably into a local Maildir and its
  position committed to the state store (SQLite, synchronous=FULL). There is
  no one-shot check on the command line (`flush` asks a running daemon), so
  no process start-up is in the figure;
* raw: the least a client can do to fetch the same new messages, in the same
  run from the same server with the same login: imaplib, EXAMINE INBOX and one
  `UID FETCH <first new>:* (BODY.PEEK[])`; poplib, UIDL (POP3 has no other way
  to tell new from old) and `TOP n <more lines than the message>` for each new
  one (RETR would mark them read on the server; exactmaild leaves them unread
  the same way). Nothing is written anywhere;
* nothing new: right after each timed check, one more check that finds
  nothing new (what nearly every check costs: most find nothing);
* fetched: how many messages each check fetched in full, as exactmaild counts
  them and as Dovecot's own logout line says (body_count for IMAP, top+retr
  for POP3): it must equal --new.

Before the timed rounds exactmaild's position must say "the old messages are
delivered". The small mailbox gets a real first check (which fetches all of
it; its time is printed). The big one gets one too if the small one's rate
says they would fit in --first-check-budget seconds (10-25 s for 10,000 on
both protocols here); otherwise the position is set the way
tests/test_receive_imap_pop3.py does (IMAP: UIDVALIDITY and UIDNEXT - 1; POP3:
every UIDL recorded as seen through StateStore) and the estimate is printed
instead. Each round then puts --new fresh messages in both mailboxes, lets
Dovecot index them (one untimed EXAMINE and UIDL, so neither side pays the
server's indexing), and times raw and check back to back, alternating which
goes first; the two mailboxes are interleaved too.

How to read it: each `ratio` line gives, for the big mailbox, check / raw (the
median of the per-round ratios; lower is better, 1.0 would be "no dearer than
fetching the new ones by hand"); check(big) / check(small) next to raw's own
big / small (the server's EXAMINE and POP3's UIDL listing grow with the
mailbox for any client); and the check's own growth beyond raw's, in ms:
(check(big) - check(small)) - (raw(big) - raw(small)), what exactmaild itself
adds because the mailbox is bigger; and the same big / small for the check
that finds nothing new. O(new) means the growth is about 0 and
check / raw stays small (a few: the check writes each message durably, raw
does not; the line after the ratios prints what building the TLS context
costs, once per configuration, and what each check pays for it). The
"fetched" columns must all equal --new. Absolute times are printed for
context only; the machine is shared and noisy.

    python bench/receive.py [--old 10000] [--small 100] [--new 10] [--repeat 3]
                            [--protocols imap,pop3] [--first-check-budget 45]
"""

from __future__ import annotations

import argparse
import imaplib
import os
import poplib
import re
import signal
import ssl
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest
from _common import machine, median, table, workdir

from exactmaild.auth.tls import TlsContexts, build
from exactmaild.config.model import Config, LogConfig
from exactmaild.daemon import logs
from exactmaild.receive.mailbox.imap import IMAPMailbox
from exactmaild.receive.mailbox.pop3 import POP3Mailbox
from exactmaild.receive.receiver import CheckResult, Receiver
from exactmaild.store.state import StateStore
from tests.fixtures.dovecot import (
    Dovecot,
    StaticCredentials,
    build_config,
    cleanup,
    start_dovecot,
)

PROTOCOLS = ("imap", "pop3")
TIMEOUT = 60.0
_BODY_COUNT = re.compile(r"body_count=(\d+)")
_POP3_COUNTS = re.compile(r"top=(\d+)/\d+, retr=(\d+)/\d+")
# The end of a mail session (not of a login process): "imap(reception)<pid><id>: ... Disconnected"
_SESSION_END = re.compile(r" (?:imap|pop3)\([^)]*\)<[^>]*><[^>]*>: \w+: Disconnected")


@dataclass
class Round:
    """One timed round for one protocol and one mailbox."""

    raw: float
    check: float
    raw_fetched: int  # messages the raw client received
    fetched: int  # exactmaild's own count (Receiver.last_fetches)
    server_fetched: int  # Dovecot's logout line for the check's session
    delivered: int
    empty: float = 0.0  # the check right after, with nothing new
    empty_fetched: int = 0  # what Dovecot says that one fetched


@dataclass
class Box:
    """A Dovecot holding `old` messages, and exactmaild's state and Maildir for it."""

    label: str
    old: int
    server: Dovecot
    base: Path
    state: StateStore
    cfgs: dict[str, Config]
    next_n: int = 1_000_000  # numbers (subjects) of the new messages
    known_uidls: set[str] = field(default_factory=set)  # what the raw POP3 client has seen
    first_new_uid: int = 0  # the raw IMAP client fetches from here
    added: int = 0  # messages put on the server since the last index()
    rounds: dict[str, list[Round]] = field(default_factory=dict)
    first_check: dict[str, tuple[float, int, bool]] = field(default_factory=dict)
    first_empty: dict[str, float] = field(default_factory=dict)  # the check right after it
    # Kept across checks, as the daemon keeps one per configuration.
    tls: TlsContexts = field(default_factory=TlsContexts)

    def log_offset(self) -> int:
        """Where Dovecot's log ends once every session so far has logged its end.

        A session's logout line can come a moment after the client has left;
        waiting for it keeps one session's counts from landing in the next one's.
        """
        p = self.server.log_path
        deadline = time.monotonic() + 5
        while True:
            text = p.read_text(errors="replace") if p.exists() else ""
            logins = text.count("Login: user=<")
            ends = len(_SESSION_END.findall(text))
            if ends >= logins or time.monotonic() > deadline:
                return len(text.encode())
            time.sleep(0.01)

    def session_fetches(self, offset: int, protocol: str) -> int:
        """Messages fetched in full by the one session that ended after `offset` (-1: unknown)."""
        deadline = time.monotonic() + 5
        while True:
            with self.server.log_path.open("rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
            lines = [ln for ln in text.splitlines() if _SESSION_END.search(ln)]
            if lines:
                break
            if time.monotonic() > deadline:
                return -1
            time.sleep(0.01)
        if len(lines) != 1 or f" {protocol}(" not in lines[0]:
            raise RuntimeError(f"expected one {protocol} session in Dovecot's log, got:\n{text}")
        if protocol == "imap":
            m = _BODY_COUNT.search(lines[0])
            return int(m.group(1)) if m else -1
        p = _POP3_COUNTS.search(lines[0])
        return int(p.group(1)) + int(p.group(2)) if p else -1


# -- the two clients ------------------------------------------------------------------


def raw_imap(box: Box) -> tuple[float, int]:
    """(seconds, messages received): EXAMINE + one UID FETCH of the new messages."""
    s = box.server
    t0 = time.perf_counter()
    ctx = ssl.create_default_context(cafile=str(s.ca_file))
    m = imaplib.IMAP4_SSL(s.host, s.imaps, ssl_context=ctx, timeout=TIMEOUT)
    m.login(s.user, s.password)
    m.select("INBOX", readonly=True)
    typ, data = m.uid("FETCH", f"{box.first_new_uid}:*", "(BODY.PEEK[])")
    m.logout()
    elapsed = time.perf_counter() - t0
    if typ != "OK":
        raise RuntimeError(f"raw UID FETCH refused: {data!r}")
    got = [item for item in data if isinstance(item, tuple)]
    return elapsed, len(got)


def raw_pop3(box: Box) -> tuple[float, int]:
    """(seconds, messages received): UIDL, then TOP of each UIDL not seen before."""
    s = box.server
    t0 = time.perf_counter()
    ctx = ssl.create_default_context(cafile=str(s.ca_file))
    p = poplib.POP3_SSL(s.host, s.pop3s, context=ctx, timeout=TIMEOUT)
    p.user(s.user)
    p.pass_(s.password)
    _resp, lines, _octets = p.uidl()
    got = 0
    for line in lines:
        num, uidl = line.split()
        if uidl.decode() not in box.known_uidls:
            p.top(int(num), 1 << 30)
            got += 1
    p.quit()
    return time.perf_counter() - t0, got


RAW = {"imap": raw_imap, "pop3": raw_pop3}


def check(box: Box, protocol: str) -> tuple[float, CheckResult, int]:
    """(seconds, result, messages fetched): one check as the daemon's receive thread runs it."""
    t0 = time.perf_counter()
    receiver = Receiver(
        box.cfgs[protocol], box.state, StaticCredentials(), timeout=TIMEOUT, tls=box.tls
    )
    result = receiver.check(time.time())
    elapsed = time.perf_counter() - t0
    if result.error:
        raise RuntimeError(f"{protocol} check of {box.label} failed: {result.error}")
    return elapsed, result, receiver.last_fetches


# -- set-up ---------------------------------------------------------------------------


def index(box: Box, protocols: list[str]) -> None:
    """Untimed: let Dovecot index what arrived (EXAMINE, UIDL) and note the first new UID."""
    s = box.server
    ctx = ssl.create_default_context(cafile=str(s.ca_file))
    if "imap" in protocols:
        m = imaplib.IMAP4_SSL(s.host, s.imaps, ssl_context=ctx, timeout=TIMEOUT)
        m.login(s.user, s.password)
        m.select("INBOX", readonly=True)
        found = m.untagged_responses.get("UIDNEXT")
        uidnext = found[-1] if found else None
        m.logout()
        if not isinstance(uidnext, bytes):
            raise RuntimeError(f"{box.label}: no UIDNEXT from EXAMINE INBOX")
        box.first_new_uid = int(uidnext) - box.added
    if "pop3" in protocols:
        p = poplib.POP3_SSL(s.host, s.pop3s, context=ctx, timeout=TIMEOUT)
        p.user(s.user)
        p.pass_(s.password)
        p.uidl()
        p.quit()


def uidls(server: Dovecot) -> set[str]:
    ctx = ssl.create_default_context(cafile=str(server.ca_file))
    p = poplib.POP3_SSL(server.host, server.pop3s, context=ctx, timeout=TIMEOUT)
    p.user(server.user)
    p.pass_(server.password)
    _resp, lines, _octets = p.uidl()
    p.quit()
    return {line.split()[1].decode() for line in lines}


def mark_delivered(box: Box, protocol: str) -> None:
    """Set the position as if a first check had delivered every message (the tests' way)."""
    cfg = box.cfgs[protocol]
    assert cfg.incoming is not None
    if protocol == "imap":
        mb = IMAPMailbox(cfg.incoming, StaticCredentials(), box.state, timeout=TIMEOUT)
        mb.connect()
        info = mb.select(cfg.incoming.folder)
        mb.close()
        if info.exists != box.old or info.uidnext is None:
            raise RuntimeError(f"{box.label}: {info.exists} messages, UIDNEXT {info.uidnext}")
        box.state.set_imap_position(mb.key, info.uidvalidity, info.uidnext - 1)
    else:
        key = POP3Mailbox(cfg.incoming, StaticCredentials(), box.state).key
        now = time.time()
        for u in uidls(box.server):
            box.state.add_pop3_seen(key, u, now)


def timed_check(box: Box, proto: str, expect: int) -> tuple[float, CheckResult, int, int]:
    """check() plus Dovecot's count for its session; raises unless `expect` were delivered."""
    off = box.log_offset()
    t, result, fetched = check(box, proto)
    server = box.session_fetches(off, proto)
    if result.delivered != expect or server != expect:
        raise RuntimeError(
            f"{proto} check of {box.label}: delivered {result.delivered}, Dovecot says "
            f"{server} fetched, expected {expect}"
        )
    return t, result, fetched, server


def first_checks(boxes: list[Box], protocols: list[str], budget: float) -> None:
    """The small mailbox: a real first check. The big one: the same if it fits the budget.

    The estimate for the big one takes the small one's first check less the
    check right after it (nothing new: connection and folder only), per message.
    """
    small, big = boxes
    rates: dict[str, float] = {}
    for box in (small, big):
        for proto in protocols:
            honest = box is small or sum(rates[p] * box.old for p in protocols) <= budget
            if honest:
                t, result, _, _ = timed_check(box, proto, box.old)
                box.first_check[proto] = (t, result.delivered, True)
                box.first_empty[proto] = timed_check(box, proto, 0)[0]
                rates[proto] = max(0.0, t - box.first_empty[proto]) / box.old
            else:
                mark_delivered(box, proto)
                box.first_check[proto] = (rates[proto] * box.old, 0, False)


def make_box(label: str, old: int, protocols: list[str], work: Path, cert: Path | None) -> Box:
    server = start_dovecot(cert_from=cert, prefix=f"exactmaild-bench-receive-{label}-")
    base = work / label
    base.mkdir()
    cfgs = {p: build_config(base, server.incoming(p, "tls")) for p in protocols}  # type: ignore[arg-type]
    box = Box(label, old, server, base, StateStore(base / "state"), cfgs)
    box.rounds = {p: [] for p in protocols}
    server.add_old_messages(old)
    index(box, protocols)  # Dovecot builds its index of the old messages: not measured
    box.known_uidls = uidls(server) if "pop3" in protocols else set()
    return box


# -- the rounds -----------------------------------------------------------------------


def one_round(box: Box, protocols: list[str], new: int, r: int) -> None:
    """Put `new` messages on the server, then time raw and check for each protocol."""
    box.server.add_messages(box.next_n, new)
    box.next_n += new
    box.added = new
    index(box, protocols)
    for proto in protocols:

        def raw(proto: str = proto) -> tuple[float, int]:
            off = box.log_offset()
            t, n = RAW[proto](box)
            box.session_fetches(off, proto)  # its logout line, before the next session
            return t, n

        if r % 2 == 0:
            raw_t, raw_n = raw()
        off = box.log_offset()
        chk_t, result, fetched = check(box, proto)
        server = box.session_fetches(off, proto)
        if r % 2 == 1:
            raw_t, raw_n = raw()
        rnd = Round(raw_t, chk_t, raw_n, fetched, server, result.delivered)
        # The next check finds nothing new: what every check costs most of the day.
        off = box.log_offset()
        rnd.empty, empty, _ = check(box, proto)
        rnd.empty_fetched = box.session_fetches(off, proto) + empty.delivered
        box.rounds[proto].append(rnd)
    if "pop3" in protocols:
        box.known_uidls = uidls(box.server)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", type=int, default=10_000, help="messages already delivered")
    ap.add_argument(
        "--small",
        type=int,
        default=None,
        help="the small mailbox (default 100, or --old/10 if less)",
    )
    ap.add_argument("--new", type=int, default=10, help="new messages each round")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds (medians reported)")
    ap.add_argument("--protocols", default="imap,pop3", help="imap, pop3 or both")
    ap.add_argument(
        "--first-check-budget",
        type=float,
        default=45.0,
        help="seconds the first full checks of the big mailbox may take in all (estimated "
        "from the small one's); over it, the position is set instead",
    )
    args = ap.parse_args(argv)
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if not protocols or any(p not in PROTOCOLS for p in protocols):
        ap.error(f"--protocols: a comma-separated subset of {','.join(PROTOCOLS)}")
    small_n = args.small if args.small is not None else min(100, max(1, args.old // 10))
    if small_n >= args.old:
        ap.error("--small must be below --old")
    if args.repeat < 1 or args.new < 1:
        ap.error("--repeat and --new must be at least 1")

    print(
        f"# receive: {args.old:,} old vs {small_n:,} old, {args.new} new a round, "
        f"repeat={args.repeat}, protocols={','.join(protocols)}; {machine()}"
    )
    started = time.perf_counter()
    boxes: list[Box] = []
    try:
        with workdir("receive") as work:
            logs.configure(LogConfig(format="json", level="info", file=work / "exactmaild.log"))
            t0 = time.perf_counter()
            try:
                small = make_box("small", small_n, protocols, work, None)
                boxes.append(small)
                big = make_box("big", args.old, protocols, work, small.server.dir)
                boxes.append(big)
            except (pytest.skip.Exception, pytest.fail.Exception) as exc:
                print(f"cannot start Dovecot: {exc}", file=sys.stderr)
                return 2
            setup = time.perf_counter() - t0
            t0 = time.perf_counter()
            first_checks(boxes, protocols, args.first_check_budget)
            firsts = time.perf_counter() - t0
            t0 = time.perf_counter()
            for r in range(args.repeat):
                for box in boxes if r % 2 == 0 else boxes[::-1]:
                    one_round(box, protocols, args.new, r)
            rounds = time.perf_counter() - t0
            report(boxes, protocols, args.new, *tls_setup(small))
            print(
                f"# times: set-up {setup:.1f} s, first checks {firsts:.1f} s, "
                f"rounds {rounds:.1f} s, total {time.perf_counter() - started:.1f} s"
            )
            for box in boxes:
                box.state.close()
    finally:
        for box in boxes:  # both stop at once (each takes about a second)
            if box.server.proc.poll() is None:
                box.server.proc.send_signal(signal.SIGTERM)
        for box in boxes:
            if os.environ.get("BENCH_KEEP"):
                box.server.stop()
                print(f"# kept {box.server.dir}")
            else:
                cleanup(box.server)
    return 0


def tls_setup(box: Box, n: int = 7) -> tuple[float, float]:
    """Median seconds of exactmaild's TLS context: (built afresh, as a check gets it).

    The first is paid once per configuration (start-up, reload); the second,
    the kept context (`TlsContexts.get`), is what every check pays.
    """
    cfg = next(iter(box.cfgs.values()))
    assert cfg.incoming is not None
    built, per_check = [], []
    for _ in range(n):
        t0 = time.perf_counter()
        build(box.server.ca_file)
        built.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        box.tls.get(cfg.incoming.tls_ca_file)
        per_check.append(time.perf_counter() - t0)
    return median(built), median(per_check)


def report(boxes: list[Box], protocols: list[str], new: int, tls_build: float, tls: float) -> None:
    small, big = boxes
    rows: list[list[object]] = []
    for proto in protocols:
        for box in (small, big):
            t, n, honest = box.first_check[proto]
            rows.append(
                [
                    proto,
                    f"{box.old:,} old",
                    f"{n:,}" if honest else "position set",
                    f"{t:.2f}" if honest else f"~{t:.1f} (est.)",
                    f"{t / box.old * 1000:.2f}",
                    f"{box.first_empty[proto] * 1000:.1f}" if proto in box.first_empty else "-",
                ]
            )
    print("first check (position empty: fetches the whole mailbox), then one with nothing new:")
    print(table(["protocol", "mailbox", "fetched", "seconds", "ms/message", "next check ms"], rows))

    print(f"\neach round: {new} new messages (medians over rounds; times in ms):")
    rows = []
    for proto in protocols:
        for box in (small, big):
            rs = box.rounds[proto]
            rows.append(
                [
                    proto,
                    f"{box.old:,} + {new}",
                    median([x.raw for x in rs]) * 1000,
                    median([x.check for x in rs]) * 1000,
                    median([x.check / x.raw for x in rs]),
                    median([x.empty for x in rs]) * 1000,
                    "/".join(str(x.raw_fetched) for x in rs),
                    "/".join(str(x.fetched) for x in rs),
                    "/".join(str(x.server_fetched) for x in rs),
                ]
            )
    print(
        table(
            [
                "protocol",
                "mailbox",
                "raw ms",
                "check ms",
                "check/raw",
                "nothing new ms",
                "raw got",
                "check fetched",
                "Dovecot says",
            ],
            rows,
        )
    )
    for proto in protocols:
        bs, ss = big.rounds[proto], small.rounds[proto]
        ok = all(
            x.fetched == x.server_fetched == x.delivered == new and x.empty_fetched == 0
            for x in bs + ss
        )
        ratio = median([x.check / x.raw for x in bs])
        pairs = list(zip(bs, ss, strict=True))
        growth = median([b.check / s.check for b, s in pairs])
        raw_growth = median([b.raw / s.raw for b, s in pairs])
        # What the check adds for the bigger mailbox beyond what the server costs raw too.
        extra = median([(b.check - s.check) - (b.raw - s.raw) for b, s in pairs])
        idle = median([b.empty / s.empty for b, s in pairs])
        print(
            f"ratio {proto}: {ratio:.2f} (check of {big.old:,} old + {new} new / raw fetch "
            f"of the {new} new; target: O(new)); check({big.old:,} old)/check({small.old:,} "
            f"old) {growth:.2f}, raw's {raw_growth:.2f}; the check's own growth beyond "
            f"raw's {extra * 1000:+.1f} ms; nothing new: check({big.old:,})/check("
            f"{small.old:,}) {idle:.2f}; fetched only the new: {'yes' if ok else 'NO'}"
        )
    without = {p: median([(x.check - tls) / x.raw for x in big.rounds[p]]) for p in protocols}
    print(
        f"# TLS context: built once per configuration in {tls_build * 1000:.1f} ms "
        f"(tlscontext.build); each check pays {tls * 1000:.3f} ms "
        f"(TlsContexts.get); check/raw without it: "
        + ", ".join(f"{p} {v:.2f}" for p, v in without.items())
    )


if __name__ == "__main__":
    sys.exit(main())
