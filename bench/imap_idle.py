"""IMAP IDLE: how soon new mail is in the Maildir, and what keeping IDLE open costs.

What it measures, against a real Dovecot on loopback (tests/fixtures/dovecot.py,
implicit TLS), with `exactmaild run` as a child process:

* latency: the daemon with `incoming.idle: true` (and the default `every: 5m`
  safety net); --deliveries (default 20) messages, one at a time, delivered
  with `doveadm save` (Dovecot's own delivery, as its LDA or LMTP would); for
  each, the wall-clock time from just before `doveadm save` starts to the
  message's file appearing in the daemon's Maildir (new/), polled every 5 ms
  by this script. `doveadm save` itself (a process start, about 30-90 ms) is
  inside the figure. The daemon's own histogram
  (`exactmaild_receive_latency_seconds`, from INTERNALDATE, which has whole
  seconds) is printed beside it.
* idle cost: two daemons side by side for --seconds (default 300) with no mail
  arriving: one with IDLE (and `every: 5m`), one polling (`every: 5m`, no
  IDLE). For each, the CPU seconds (utime + stime from /proc/PID/stat, all
  threads) and voluntary context switches (wake-ups) over the window, after
  both have connected and settled for 3 s; and for the IDLE one, the CPU of
  Dovecot's imap process that serves its session (`doveadm who`).

Dovecot settings that decide the latency, written into its config here and
printed: `imap_idle_notify_interval = 2 mins` (Dovecot's default: how often
an idling client hears "* OK Still here"; it does NOT delay new-mail
notices) and `mailbox_idle_check_interval = 30 secs` (the default: how often
Dovecot looks at the mailbox while IDLE when inotify cannot tell it; with
inotify, as here, it is told at once).

How to read it: `median` latency is the figure against the < 2 s target
(ratio = median / 2 s; below 1.0 meets it). The CPU lines give CPU seconds
per hour for each mode, and IDLE's extra cost over polling.

    python bench/imap_idle.py [--deliveries 20] [--seconds 300]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    Daemon,
    free_port,
    machine,
    median,
    percentile,
    proc_cpu,
    proc_ctxt_switches,
    table,
    workdir,
)

from tests.fixtures.dovecot import USER, Dovecot, cleanup, make_message, start_dovecot

TARGET = 2.0
DOVECOT_IDLE_SETTINGS = (
    "imap_idle_notify_interval = 2 mins\nmailbox_idle_check_interval = 30 secs\n"
)


def config(work: Path, dovecot: Dovecot, *, idle: bool) -> tuple[Path, int]:
    work.mkdir(parents=True, exist_ok=True)
    pw = work / "password"
    pw.write_text(dovecot.password + "\n")
    pw.chmod(0o600)
    port = free_port()
    cfg: dict[str, Any] = {
        "timezone": "UTC",
        "account": {
            "address": f"{USER}@practice.example",
            "auth": {"method": "password", "username": USER, "password_file": str(pw)},
        },
        "incoming": {
            "protocol": "imap",
            "host": "127.0.0.1",
            "port": dovecot.imaps,
            "security": "tls",
            "tls_ca_file": str(dovecot.ca_file),
            "idle": idle,
        },
        # Nothing is sent: the outgoing server is never contacted.
        "outgoing": {"host": "127.0.0.1", "port": 9, "security": "none"},
        "receive": {"maildir": str(work / "inbox")},
        "schedule": {"every": "5m"},
        "spool": {"dir": str(work / "spool")},
        "state_dir": str(work / "state"),
        "metrics": {"listen": f"127.0.0.1:{port}"},
        "log": {"format": "json", "level": "info"},
    }
    path = work / "exactmaild.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path, port


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait(pred: Any, timeout: float, poll: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(poll)
    return False


def files(maildir: Path) -> int:
    d = maildir / "new"
    return sum(1 for _ in d.iterdir()) if d.is_dir() else 0


def latency(dovecot: Dovecot, work: Path, n: int) -> tuple[list[float], str]:
    cfg, port = config(work / "latency", dovecot, idle=True)
    d = Daemon(cfg)
    try:
        d.wait_metrics(port)
        if not wait(lambda: sample(scrape(port), "exactmaild_idle_connected") == 1, 30):
            raise RuntimeError(f"IDLE never connected: {d.log()[-2000:]}")
        maildir = work / "latency" / "inbox"
        out = []
        for i in range(n):
            before = files(maildir)
            data = make_message(i, subject=f"latency {i}")
            t0 = time.monotonic()
            dovecot.save(data)
            if not wait(lambda b=before: files(maildir) > b, 30, poll=0.005):
                raise RuntimeError(f"message {i} never arrived: {d.log()[-2000:]}")
            out.append(time.monotonic() - t0)
            time.sleep(0.2)
        hist = "\n".join(
            line
            for line in scrape(port).splitlines()
            if line.startswith("exactmaild_receive_latency_seconds")
        )
        return out, hist
    finally:
        d.stop()


def imap_pid(dovecot: Dovecot) -> int | None:
    pids = dovecot.imap_pids()
    return pids[0] if len(pids) == 1 else None


def idle_cost(dovecot: Dovecot, work: Path, seconds: float) -> list[list[Any]]:
    dovecot.wipe()
    runs = {}
    for name, idle in (("IDLE + every 5m", True), ("polling every 5m", False)):
        cfg, port = config(work / name.split()[0].lower(), dovecot, idle=idle)
        runs[name] = (Daemon(cfg), port)
    try:
        for d, port in runs.values():
            d.wait_metrics(port)
        d_idle, port_idle = runs["IDLE + every 5m"]
        if not wait(lambda: sample(scrape(port_idle), "exactmaild_idle_connected") == 1, 30):
            raise RuntimeError(f"IDLE never connected: {d_idle.log()[-2000:]}")
        # The polling daemon's first check has come and gone: one session left.
        if not wait(lambda: imap_pid(dovecot) is not None, 30):
            raise RuntimeError(f"expected one IMAP session: {dovecot.doveadm('who')}")
        time.sleep(3.0)
        server = imap_pid(dovecot)
        assert server is not None
        before = {k: (proc_cpu(d.pid), proc_ctxt_switches(d.pid)[0]) for k, (d, _) in runs.items()}
        server0 = proc_cpu(server)
        time.sleep(seconds)
        rows = []
        for k, (d, port) in runs.items():
            cpu = proc_cpu(d.pid) - before[k][0]
            wakes = proc_ctxt_switches(d.pid)[0] - before[k][1]
            checks = sum(
                v or 0
                for v in (sample(scrape(port), 'exactmaild_receive_checks_total{result="ok"}'),)
            )
            rows.append([k, seconds, cpu, cpu * 3600 / seconds, wakes / seconds, int(checks)])
        server_cpu = proc_cpu(server) - server0 if server == imap_pid(dovecot) else float("nan")
        rows.append(
            [
                "Dovecot imap (IDLE session)",
                seconds,
                server_cpu,
                server_cpu * 3600 / seconds,
                "-",
                "-",
            ]
        )
        return rows
    finally:
        for d, _ in runs.values():
            d.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--deliveries", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=300.0)
    args = ap.parse_args()
    print(machine())
    version = subprocess.run(["dovecot", "--version"], capture_output=True, text=True)
    print(f"Dovecot: {version.stdout.strip()}")
    print("Dovecot settings:", DOVECOT_IDLE_SETTINGS.strip().replace("\n", "; "))
    dovecot = start_dovecot(configure=lambda _d, conf: conf + DOVECOT_IDLE_SETTINGS)
    try:
        with workdir("imap-idle") as work:
            lat, hist = latency(dovecot, work, args.deliveries)
            print()
            print(
                table(
                    ["deliveries", "median s", "p90 s", "min s", "max s"],
                    [[len(lat), median(lat), percentile(lat, 90), min(lat), max(lat)]],
                )
            )
            print("daemon's histogram (from INTERNALDATE, whole seconds):")
            print(hist)
            ratio = median(lat) / TARGET
            print(f"ratio: median / {TARGET:g} s target = {ratio:.3f} (below 1.0 meets it)")
            print()
            rows = idle_cost(dovecot, work, args.seconds)
            print(
                table(
                    [
                        "mode",
                        "window s",
                        "CPU s",
                        "CPU s/hour",
                        "wake-ups/s",
                        "ok checks since start",
                    ],
                    rows,
                )
            )
            extra = rows[0][2] - rows[1][2]
            print(
                f"IDLE's extra cost over polling: {extra:+.3f} CPU s in {args.seconds:g} s "
                f"({extra * 3600 / args.seconds:+.3f} CPU s an hour)"
            )
    finally:
        cleanup(dovecot)


if __name__ == "__main__":
    main()
