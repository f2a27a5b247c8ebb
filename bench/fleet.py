"""Many practices on one host: N daemons (default 50), one SMTP sink, one Dovecot.

What it measures: N `exactmaild run` processes, each with its own config,
password file, spool, state, Maildir and metrics port, as `exactmaild@.service`
runs them; all send to one aiosmtpd (AUTH accepted, in its own process) and
check their own IMAP account (implicit TLS) on one Dovecot every `--every`
(default 5m), each account holding `--inbox` new messages at start.

1. start-up to READY: from fork to the READY=1 datagram on the daemon's own
   NOTIFY_SOCKET (systemd's notify protocol), and the CPU that took: one
   daemon alone, then the other N-1 started at once (a host booting);
2. the first checks: every account's messages delivered into its Maildir;
3. idle: total utime + stime (/proc/PID/stat, all threads) of all daemons
   over `--seconds` (default 300, so one scheduled check of each falls in
   the window) with nothing to send and nothing scraping them, as a share
   of one core; then memory: VmRSS and VmHWM (/proc/PID/status), and PSS
   (/proc/PID/smaps_rollup: shared pages such as libpython and libcrypto
   divided among the processes that map them, so the total is what the host
   really gives them);
4. one message: `--messages` (default 5) queued into every spool at once
   (paced: `delay: 1s`); the CPU each daemon spent beyond its idle rate,
   per message;
5. one scrape of every /metrics (prometheus-client is imported on the first
   one), then memory again.

Targets: an idle daemon at most 20 MB RSS; 50 accounts in at most 1 GB and
under 1% of one core idle. The ratio lines divide the measured figure by the
target (below 1.0 meets it).

    python bench/fleet.py [--accounts 50] [--seconds 300] [--messages 5] [--every 5m]
                          [--python VENV/bin/python]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, message, proc_cpu, table
from _fleet import AuthSink, fleet_dovecot, memory_row, wait_for, wait_ready, write_account

RSS_TARGET_MB = 20.0
FLEET_TARGET_MB = 1024.0
IDLE_TARGET = 0.01  # of one core


def run(args: argparse.Namespace, base: Path) -> int:
    print(
        f"# fleet: {args.accounts} accounts, idle window {args.seconds:g} s, check every "
        f"{args.every}, {args.messages} messages each; python {args.python}; {machine()}"
    )
    server = fleet_dovecot(args.accounts, args.inbox)
    ddir = server.dir
    sink = AuthSink(base)
    accts = [
        write_account(n, base, ddir, server.imaps, sink.port, args.every)
        for n in range(args.accounts)
    ]
    try:
        # 1. start-up to READY: one alone, then the rest at once.
        accts[0].start(args.python)
        wait_ready(accts[:1], 60)
        for a in accts[1:]:
            a.start(args.python)
        wait_ready(accts[1:], 300)
        alone = accts[0].ready - accts[0].started  # type: ignore[operator]
        together = [a.ready - a.started for a in accts[1:]]  # type: ignore[operator]
        print()
        print(
            table(
                ["start-up to READY", "daemons", "median s", "max s", "CPU s each (median)"],
                [
                    ["one alone", 1, alone, alone, accts[0].cpu_at_ready],
                    [
                        "the rest at once",
                        len(together),
                        statistics.median(together) if together else 0.0,
                        max(together, default=0.0),
                        statistics.median(a.cpu_at_ready for a in accts[1:]) if together else 0.0,
                    ],
                ],
            )
        )
        # 2. every account's first check has delivered its messages.
        took = wait_for(
            "the first checks", lambda: all(a.delivered() >= args.inbox for a in accts), 300
        )
        print(
            f"\nfirst checks: {args.inbox} messages into each of {len(accts)} Maildirs, "
            f"all done {took:.1f} s after the last READY"
        )
        time.sleep(2.0)
        mem_rows = [memory_row("after start and the first check", accts)]
        # 3. idle: nothing to send, nobody scraping.
        cpu0 = {a.n: proc_cpu(a.pid) for a in accts}
        t0 = time.monotonic()
        time.sleep(args.seconds)
        idle_secs = time.monotonic() - t0
        cpu1 = {a.n: proc_cpu(a.pid) for a in accts}
        idle_cpu = sum(cpu1[a.n] - cpu0[a.n] for a in accts)
        idle_share = idle_cpu / idle_secs
        mem_rows.append(memory_row(f"after {args.seconds:g} s idle", accts))
        # 4. messages: M into every spool at once.
        if args.messages:
            before = sink.count
            for a in accts:
                spool = a.dir / "spool"
                for i in range(args.messages):
                    name = f"fleet{i:04d}"
                    (spool / "tmp" / name).write_bytes(message(i))
                    os.rename(spool / "tmp" / name, spool / "new" / name)
            m0 = time.monotonic()
            c0 = {a.n: proc_cpu(a.pid) for a in accts}
            total = args.messages * len(accts)
            took = wait_for(
                "the messages", lambda: sink.count - before >= total, 60 + 5 * args.messages
            )
            time.sleep(1.0)  # the last records and tidying
            window = time.monotonic() - m0
            per_msg = sorted(
                max(0.0, proc_cpu(a.pid) - c0[a.n] - (cpu1[a.n] - cpu0[a.n]) / idle_secs * window)
                / args.messages
                for a in accts
            )
            print(
                f"\nmessages: {total} ({args.messages} a daemon, paced 1 s) into the sink in "
                f"{took:.1f} s; CPU a message, beyond the idle rate: median "
                f"{statistics.median(per_msg) * 1000:.1f} ms, max {per_msg[-1] * 1000:.1f} ms"
            )
            mem_rows.append(memory_row(f"after {args.messages} messages each", accts))
        # 5. one scrape of each.
        for a in accts:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{a.metrics_port}/metrics", timeout=10
            ) as r:
                r.read()
        time.sleep(1.0)
        mem_rows.append(memory_row("after one scrape each", accts))
        print()
        print(
            table(
                ["memory", "RSS MB", "PSS MB", "RSS each", "max", "private each", "peak max"],
                mem_rows,
            )
        )
        print(
            f"\nidle CPU: {idle_cpu:.2f} CPU s over {idle_secs:.0f} s for {len(accts)} daemons = "
            f"{idle_share * 100:.3f}% of one core ({idle_cpu / len(accts) / idle_secs * 60:.4f} "
            "CPU s a minute each)"
        )
        idle_rss = float(mem_rows[1][3])  # type: ignore[arg-type]
        total_rss = max(float(r[1]) for r in mem_rows)  # type: ignore[arg-type]
        scale = 50 / len(accts)
        print(
            f"ratio idle-rss-per-daemon/target: {idle_rss / RSS_TARGET_MB:.3f} "
            f"(median {idle_rss:.1f} MB unscraped; target {RSS_TARGET_MB:g} MB)"
        )
        print(
            f"ratio fleet-rss/target: {total_rss * scale / FLEET_TARGET_MB:.3f} "
            f"(largest total {total_rss:.0f} MB RSS for {len(accts)}, scaled to 50; "
            f"target {FLEET_TARGET_MB:g} MB)"
        )
        print(
            f"ratio idle-cpu/target: {idle_share * scale / IDLE_TARGET:.3f} "
            f"({idle_share * 100:.3f}% of a core for {len(accts)}, scaled to 50; "
            f"target {IDLE_TARGET * 100:g}%)"
        )
    finally:
        for a in accts:
            if a.proc is not None and a.proc.poll() is None:
                a.proc.send_signal(signal.SIGTERM)
        for a in accts:
            if a.proc is not None:
                try:
                    a.proc.wait(20)
                except subprocess.TimeoutExpired:
                    a.proc.kill()
                    a.proc.wait()
            a.notify.close()
        sink.close()
        server.stop()
        if not os.environ.get("BENCH_KEEP"):
            shutil.rmtree(ddir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=300.0, help="the idle window")
    ap.add_argument("--messages", type=int, default=5, help="queued into each spool")
    ap.add_argument("--inbox", type=int, default=2, help="new messages in each account at start")
    ap.add_argument("--every", default="5m", help="schedule.every of each daemon")
    ap.add_argument(
        "--python",
        default=sys.executable,
        help="the daemons' interpreter, e.g. of a venv with exactmaild installed as users "
        "install it (no editable finder, no development tools); default: this one",
    )
    args = ap.parse_args(argv)
    base = Path(os.environ.get("TMPDIR", "/tmp")) / f"exactmaild-bench-fleet-{os.getpid()}"
    base.mkdir()
    try:
        return run(args, base)
    finally:
        with contextlib.suppress(OSError):
            if not os.environ.get("BENCH_KEEP"):
                shutil.rmtree(base)


if __name__ == "__main__":
    sys.exit(main())
