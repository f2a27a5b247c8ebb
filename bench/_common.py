"""Shared plumbing for the benchmarks in bench/: sinks, the daemon, the spool.

Nothing here measures anything by itself. Each script imports it to:

* start Postfix's `smtp-sink` (the fastest SMTP server here) and learn when it
  has accepted N messages, from its `-c` running counter on stdout;
* start an aiosmtpd server in a separate process (so it never shares a GIL with
  the client being measured) that appends one fixed-width arrival timestamp
  per accepted message to a file: the file size says how many arrived, the
  lines say exactly when;
* write a config, fill a spool, start `exactmaild run` as a real process and
  read its CPU time and memory from /proc.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SMTP_SINK = "/usr/sbin/smtp-sink"
STAMP_WIDTH = 18  # "1700000000.123456\n"
ADDRESS = "reception@practice.example"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def message(i: int, size: int = 500) -> bytes:
    """A spooled message of about `size` bytes (before exactmaild adds From/Date/Message-ID)."""
    head = f"To: patient{i}@example.org\nSubject: Appointment reminder {i}\n\n".encode()
    line = b"Dear patient, this is a reminder of your appointment on Tuesday at 10:00.\n"
    body = (line * (size // len(line) + 1))[: max(0, size - len(head) - 1)] + b"\n"
    return head + body


def wire_message(i: int, size: int = 500) -> tuple[str, tuple[str, ...], bytes]:
    """What exactmaild puts on the wire for message(i): the raw client sends the same bytes."""
    from exactmaild.send import message as msgmod

    p = msgmod.prepare(
        message(i, size),
        sender=ADDRESS,
        display_name="Smiles Dental",
        signature=None,
        max_size=25 << 20,
    )
    return p.sender, p.recipients, p.data


def fill_spool(spool: Path, n: int, size: int = 500, *, start: int = 0) -> None:
    """Queue n messages as producers do (tmp/ then rename into new/), without fsync:
    this is set-up, not what is measured."""
    for d in ("tmp", "new", "active", "deferred", "hold", "failed", "cancelled"):
        (spool / d).mkdir(parents=True, exist_ok=True)
    tmp, new = spool / "tmp", spool / "new"
    base = time.time() - n - 10
    for i in range(start, start + n):
        name = f"m{i:07d}"
        p = tmp / name
        p.write_bytes(message(i, size))
        os.utime(p, (base + i, base + i))  # distinct mtimes: the queue order is defined
        os.rename(p, new / name)


def drop(spool: Path, name: str, data: bytes) -> float:
    """Queue one message the producer way; returns the time of the rename."""
    p = spool / "tmp" / name
    p.write_bytes(data)
    t = time.time()
    os.rename(p, spool / "new" / name)
    return t


# -- sinks -----------------------------------------------------------------------


class SmtpSink:
    """Postfix's smtp-sink. It cannot say when it accepted a message (its `-c`
    counter sits in an output buffer), so the daemon's side is timed with
    `SentWatcher` and the raw client's with its own last reply."""

    def __init__(self) -> None:
        if not os.path.exists(SMTP_SINK):
            raise RuntimeError(f"{SMTP_SINK} not found (Debian package postfix)")
        self.port = free_port()
        self.proc = subprocess.Popen(
            [SMTP_SINK, "-u", "nobody", f"127.0.0.1:{self.port}", "256"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class SentWatcher:
    """Polls the daemon's state store (read-only) for the number of sends
    recorded as sent: a send is recorded right after the server's 250 reply."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "exactmaild.sqlite3"
        self._db: Any = None
        self.first_at: float | None = None

    def count(self) -> int:
        import sqlite3

        if self._db is None:
            if not self.path.exists():
                return 0
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=5)
        try:
            row = self._db.execute("SELECT COUNT(*) FROM attempts WHERE status = 'sent'").fetchone()
        except sqlite3.OperationalError:  # schema not created yet
            return 0
        n = int(row[0])
        if n and self.first_at is None:
            self.first_at = time.time()
        return n

    def wait(self, n: int, timeout: float, poll: float = 0.005) -> float | None:
        """The time the nth send was seen recorded, or None after timeout."""
        deadline = time.monotonic() + timeout
        while self.count() < n:
            if time.monotonic() > deadline:
                return None
            time.sleep(poll)
        return time.time()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


_AIOSINK = r"""
import os, sys, time, asyncio
from aiosmtpd.controller import Controller
out = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
class H:
    async def handle_DATA(self, server, session, envelope):
        os.write(out, b"%17.6f\n" % time.time())
        return "250 2.0.0 OK"
c = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
try:
    sys.stdin.read()
finally:
    c.stop()
"""


class AioSink:
    """aiosmtpd in its own process; one fixed-width timestamp line per message.

    `SCRIPT` is the server (it takes the port, the stamp file and `extra`,
    prints "ready" once listening, and stops when its stdin closes):
    subclasses swap it for one that takes logins or advertises PIPELINING.
    """

    SCRIPT = _AIOSINK

    def __init__(self, workdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.path = workdir / f"aiosink-{self.port}.txt"
        self.path.touch()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT, str(self.port), str(self.path), *extra],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("aiosmtpd did not start (pip install aiosmtpd)")
        wait_port(self.port)

    @property
    def count(self) -> int:
        return os.stat(self.path).st_size // STAMP_WIDTH

    def stamps(self) -> list[float]:
        return [float(x) for x in self.path.read_bytes().split()]

    def wait(self, n: int, timeout: float, poll: float = 0.01) -> float | None:
        """The server-side arrival time of message n, or None after timeout."""
        deadline = time.monotonic() + timeout
        while self.count < n:
            if time.monotonic() > deadline:
                return None
            time.sleep(poll)
        return self.stamps()[n - 1]

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def raw_client(
    port: int, n: int, size: int = 500, before_each: Callable[[], None] | None = None
) -> float:
    """A plain smtplib client, N messages on one connection: seconds taken.
    `before_each` runs before each message (inside the timing)."""
    msgs = [wire_message(i, size) for i in range(n)]
    t0 = time.perf_counter()
    s = smtplib.SMTP("127.0.0.1", port, timeout=30)
    s.ehlo()
    for sender, rcpts, data in msgs:
        if before_each is not None:
            before_each()
        s.sendmail(sender, list(rcpts), data)
    s.quit()
    return time.perf_counter() - t0


def raw_durable_client(port: int, n: int, state_dir: Path, size: int = 500) -> tuple[float, float]:
    """The raw client that also keeps exactmaild's promise: before each message
    a synced SQLite commit (WAL, synchronous=FULL) that records the previous
    send and reserves this one, so at most one send is ever accepted but
    unrecorded. The fastest any sender keeping that promise can go here one
    message after another. Returns (seconds taken, median seconds per commit).

    The commit is also the floor for any sender keeping that promise: the
    record of message i must be durable before message i+1 can be accepted,
    so consecutive acceptances are at least one synced commit apart."""
    import sqlite3

    state_dir.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(state_dir / "raw.sqlite3"), isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE sends (id INTEGER PRIMARY KEY, status TEXT NOT NULL)")
    prev: list[int] = []
    commits: list[float] = []

    def record_and_reserve() -> None:
        c0 = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        if prev:
            db.execute("UPDATE sends SET status = 'sent' WHERE id = ?", (prev.pop(),))
        cur = db.execute("INSERT INTO sends (status) VALUES ('inflight')")
        assert cur.lastrowid is not None
        prev.append(cur.lastrowid)
        db.execute("COMMIT")
        commits.append(time.perf_counter() - c0)

    secs = raw_client(port, n, size, record_and_reserve)
    db.close()
    return secs, statistics.median(commits)


# -- the daemon ---------------------------------------------------------------------


def write_config(work: Path, port: int, **send: Any) -> tuple[Path, int]:
    """A config for a plain local SMTP server; returns (path, metrics port)."""
    metrics_port = free_port()
    cfg: dict[str, Any] = {
        "timezone": "UTC",
        "account": {
            "address": ADDRESS,
            "display_name": "Smiles Dental",
            "auth": {"method": "none"},
        },
        "incoming": "none",
        "outgoing": {"host": "127.0.0.1", "port": port, "security": "none"},
        "send": {"immediately": True, "daily_limit": 10_000_000, **send},
        "spool": {"dir": str(work / "spool")},
        "state_dir": str(work / "state"),
        "metrics": {"listen": f"127.0.0.1:{metrics_port}"},
        "log": {"format": "json", "level": "info"},
    }
    path = work / "exactmaild.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, metrics_port


class Daemon:
    """`python -m exactmaild run` as a child process, log to a file."""

    def __init__(self, config: Path, *, wrap: list[str] | None = None) -> None:
        self.log_path = config.parent / f"daemon-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.started = time.time()
        self.wrapped = bool(wrap)
        self.proc = subprocess.Popen(
            [*(wrap or []), sys.executable, "-m", "exactmaild", "-c", str(config), "run"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def daemon_pid(self) -> int:
        """The exactmaild process itself (the child of a wrapper, if any)."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        with contextlib.suppress(OSError):
            kids = children.read_text().split()
            if kids and self.wrapped:
                return int(kids[0])
        return self.pid

    def wait_metrics(self, port: int, timeout: float = 60.0) -> float:
        """Poll /metrics until it answers; returns the time it first did."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.log()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    r.read()
                return time.time()
            except OSError:
                time.sleep(0.01)
        raise RuntimeError(f"metrics did not answer in {timeout}s: {self.log()[-2000:]}")

    def cpu_seconds(self) -> float:
        return proc_cpu(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            # Under a wrapper (py-spy), stop the daemon itself: the wrapper then
            # writes its output and exits.
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
            kids = children.read_text().split() if children.exists() else []
            for kid in kids:
                os.kill(int(kid), signal.SIGTERM)
            if not kids:
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")


def proc_cpu(pid: int) -> float:
    """utime + stime of a process (all threads), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proc_ctxt_switches(pid: int) -> tuple[int, int]:
    """(voluntary, involuntary) context switches summed over the process's threads."""
    vol = invol = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except FileNotFoundError:
            continue
        for line in text.splitlines():
            if line.startswith("voluntary_ctxt_switches:"):
                vol += int(line.split()[1])
            elif line.startswith("nonvoluntary_ctxt_switches:"):
                invol += int(line.split()[1])
    return vol, invol


# -- runs and tables --------------------------------------------------------------


@contextmanager
def workdir(prefix: str) -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=f"exactmaild-bench-{prefix}-"))
    try:
        yield d
    finally:
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(d, ignore_errors=True)


@dataclass
class Run:
    """One benchmark run: its work dir, the sink, the config and the daemon sending to it."""

    work: Path
    sink: AioSink
    config: Path
    metrics_port: int
    daemon: Daemon


@contextmanager
def aio_run(prefix: str, n: int, **send: Any) -> Iterator[Run]:
    """An AioSink, a spool of `n` messages and the daemon draining it; all stopped after."""
    with workdir(prefix) as w:
        sink = AioSink(w)
        try:
            cfg, mport = write_config(w, sink.port, **send)
            fill_spool(w / "spool", n)
            d = Daemon(cfg)
            try:
                yield Run(w, sink, cfg, mport, d)
            finally:
                d.stop()
        finally:
            sink.close()


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def table(headers: list[str], rows: list[list[Any]]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:,.3f}" if abs(v) < 10 else f"{v:,.1f}"
        if isinstance(v, int):
            return f"{v:,}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(out)


def machine() -> str:
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()[0]
    return f"nproc={os.cpu_count()} cpu={cpu} load1={load:.2f} date={time.strftime('%F %T %Z')}"
