"""The fleet benchmark's plumbing: N accounts, their daemons, one sink, one Dovecot.

bench/fleet.py measures; this module sets up what it measures: a Dovecot
with one IMAP user per account, an aiosmtpd that accepts any login, and per
account a directory with its config, password file, spool, state, Maildir
and NOTIFY_SOCKET, the daemon started with that socket, and the readings
of its memory from /proc.
"""

from __future__ import annotations

import contextlib
import os
import random
import selectors
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from _common import REPO, AioSink, proc_cpu

from tests.fixtures.dovecot import MAIL_UID, Dovecot, _chown_tree, make_message, start_dovecot

MB = 1024  # kB in a MB, as the figures are printed

_AUTHSINK = r"""
import os, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
out = os.open(sys.argv[2], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
class H:
    async def handle_DATA(self, server, session, envelope):
        os.write(out, b"%17.6f\n" % time.time())
        return "250 2.0.0 OK"
def accept(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=True)
c = Controller(H(), hostname="127.0.0.1", port=int(sys.argv[1]), authenticator=accept,
               auth_require_tls=False)
c.start()
print("ready", flush=True)
try:
    sys.stdin.read()
finally:
    c.stop()
"""


class AuthSink(AioSink):
    """aiosmtpd that accepts any login (the daemons log in, as to a provider)."""

    SCRIPT = _AUTHSINK


@dataclass
class Account:
    """One practice: its directory, config, notify socket and daemon process."""

    n: int
    dir: Path
    metrics_port: int
    notify: socket.socket
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    ready: float | None = None
    cpu_at_ready: float = 0.0
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.dir / "daemon.log"

    @property
    def user(self) -> str:
        return f"practice{self.n:03d}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, python: str) -> None:
        env = {**os.environ, "NOTIFY_SOCKET": str(self.dir / "notify.sock")}
        with self.log.open("wb") as out:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "exactmaild",
                    "-c",
                    str(self.dir / "exactmaild.yaml"),
                    "run",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
            )

    def delivered(self) -> int:
        new = self.dir / "inbox" / "new"
        return sum(1 for _ in new.iterdir()) if new.is_dir() else 0


def metrics_port() -> int:
    """A free port below the ephemeral range (32768 and up here): the daemons bind
    theirs only once started, and an ephemeral one may be some client's by then."""
    while True:
        port = random.randrange(20000, 30000)
        with socket.socket() as s, contextlib.suppress(OSError):
            s.bind(("127.0.0.1", port))
            return port


def write_account(
    n: int, base: Path, dovecot_dir: Path, imaps: int, sink_port: int, every: str
) -> Account:
    d = base / f"account-{n:03d}"
    d.mkdir(parents=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(d / "notify.sock"))
    acct = Account(n, d, metrics_port(), sock)
    pw = d / "password"
    pw.write_text("secret\n")
    pw.chmod(0o600)
    cfg = {
        "timezone": "UTC",
        "account": {
            "address": f"{acct.user}@practice.example",
            "display_name": f"Practice {n}",
            "auth": {"method": "password", "username": acct.user, "password_file": str(pw)},
        },
        "incoming": {
            "protocol": "imap",
            "host": "127.0.0.1",
            "port": imaps,
            "security": "tls",
            "tls_ca_file": str(dovecot_dir / "cert.pem"),
        },
        "outgoing": {"host": "127.0.0.1", "port": sink_port, "security": "none"},
        "schedule": {"every": every},
        "receive": {"maildir": str(d / "inbox")},
        "send": {"delay": "1s", "daily_limit": 500},
        "spool": {"dir": str(d / "spool")},
        "state_dir": str(d / "state"),
        "metrics": {"listen": f"127.0.0.1:{acct.metrics_port}"},
        "log": {"format": "json", "level": "info"},
    }
    (d / "exactmaild.yaml").write_text(yaml.safe_dump(cfg))
    return acct


def fleet_dovecot(accounts: int, inbox: int) -> Dovecot:
    """One Dovecot with `accounts` users, each with `inbox` new messages."""
    users: list[str] = []

    def configure(d: Path, conf: str) -> str:
        for n in range(accounts):
            user = f"practice{n:03d}"
            users.append(f"{user}:{{PLAIN}}secret:8:8::{d}/mail/{user}::")
        (d / "fleet-users").write_text("\n".join(users) + "\n")
        return conf.replace(f"{d}/users", f"{d}/fleet-users")

    server = start_dovecot(configure=configure, prefix="exactmaild-bench-fleet-dovecot-")
    for n in range(accounts):
        maildir = server.dir / "mail" / f"practice{n:03d}" / "Maildir"
        for sub in ("tmp", "new", "cur"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        for i in range(inbox):
            data = make_message(i, subject=f"for practice {n}, {i}")
            (maildir / "new" / f"{time.time():.6f}.P{os.getpid()}Q{n}_{i}.bench").write_bytes(data)
        _chown_tree(server.dir / "mail" / f"practice{n:03d}")
    os.chown(server.dir / "mail", MAIL_UID, MAIL_UID)
    return server


def wait_ready(accts: list[Account], timeout: float) -> None:
    """Read each account's NOTIFY_SOCKET until READY=1 (or the daemon exits)."""
    sel = selectors.DefaultSelector()
    for a in accts:
        sel.register(a.notify, selectors.EVENT_READ, a)
    waiting = len(accts)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for key, _ in sel.select(0.5):
            a = key.data
            data = a.notify.recv(4096)
            if a.ready is None and b"READY=1" in data.split(b"\n"):
                a.ready = time.monotonic()
                a.cpu_at_ready = proc_cpu(a.pid)
                sel.unregister(a.notify)
                waiting -= 1
        for a in accts:
            if a.ready is None and a.proc is not None and a.proc.poll() is not None:
                raise RuntimeError(f"{a.user} exited: {a.log.read_text()[-1500:]}")
    sel.close()
    if waiting:
        raise RuntimeError(f"{waiting} daemons not READY after {timeout} s")


def memory(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (status) and Pss, Private (smaps_rollup) in kB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1])
    priv = 0
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            out["Pss"] = int(line.split()[1])
        elif line.startswith(("Private_Clean:", "Private_Dirty:")):
            priv += int(line.split()[1])
    out["Private"] = priv
    return out


def memory_row(label: str, accts: list[Account]) -> list[object]:
    mems = [memory(a.pid) for a in accts]
    rss = [m["VmRSS"] / MB for m in mems]
    return [
        label,
        sum(rss),
        sum(m["Pss"] for m in mems) / MB,
        statistics.median(rss),
        max(rss),
        statistics.median(m["Private"] / MB for m in mems),
        max(m["VmHWM"] / MB for m in mems),
    ]


def wait_for(what: str, cond: object, timeout: float) -> float:
    assert callable(cond)
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - t0
