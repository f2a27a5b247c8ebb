"""Drain throughput and pick-up latency of `exactmaild run` in immediate mode.

What it measures, in one run, for each sink (Postfix's smtp-sink, aiosmtpd):

* raw: a plain smtplib client sending the same N messages (the exact bytes
  exactmaild would put on the wire) on one connection: the physical limit of
  this machine and this sink;
* exactmaild: N ~500-byte messages already in SPOOL/new/, the daemon started
  with `send: {immediately: true}` and a daily limit far above N; the clock
  runs from the daemon's start (process spawn) to the sink accepting the Nth
  message (smtp-sink's `-c` counter; aiosmtpd's own arrival stamps);
  "steady" leaves out start-up: first to last accepted message;
* durable raw: the raw client plus, before each message, the synced SQLite
  commit that records the previous send and reserves this one: the fastest a
  sender can go one message after another while keeping exactmaild's promise
  (a send is counted before it can be accepted, and at most one send is ever
  accepted but unrecorded, so a crash costs at most one duplicate);
* ratio = exactmaild / raw messages per second (from start; and steady), and
  steady exactmaild / durable raw.

Then the pick-up latency: the daemon idle, 50 messages dropped one at a time
(write tmp/, rename into new/), each timed from the rename to aiosmtpd
receiving it (server-side stamp); median and p99.

How to read it: the ratio is what matters (absolute figures move with the
machine and whatever else runs on it); the target is ratio >= 0.8 into
smtp-sink and pick-up p99 < 100 ms. Every figure is the median of --repeat
runs. A run that does not finish within --timeout reports the rate reached so
far and "partial".

    python bench/drain.py [--n 1000] [--repeat 3] [--sinks smtp-sink,aiosmtpd]
                          [--drops 50] [--profile DIR]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    AioSink,
    Daemon,
    SentWatcher,
    SmtpSink,
    aio_run,
    fill_spool,
    machine,
    median,
    percentile,
    raw_client,
    raw_durable_client,
    table,
    workdir,
    write_config,
)


@dataclass
class DrainRun:
    rate_total: float  # messages/s from daemon start
    rate_steady: float  # messages/s from first to last accepted
    startup: float  # seconds from spawn to first accepted
    cpu_per_msg_ms: float
    done: int
    complete: bool


def sent_in_state(state_dir: Path) -> int:
    db = sqlite3.connect(f"file:{state_dir / 'exactmaild.sqlite3'}?mode=ro", uri=True)
    try:
        return int(db.execute("SELECT COUNT(*) FROM attempts WHERE status = 'sent'").fetchone()[0])
    finally:
        db.close()


def daemon_drain(
    kind: str, n: int, timeout: float, profile: Path | None = None, tag: str = ""
) -> DrainRun:
    with workdir(f"drain-{kind}") as w:
        sink: SmtpSink | AioSink = SmtpSink() if kind == "smtp-sink" else AioSink(w)
        try:
            cfg, _ = write_config(w, sink.port)
            fill_spool(w / "spool", n)
            wrap = None
            if profile is not None:
                profile.mkdir(parents=True, exist_ok=True)
                out = profile / f"drain-{kind}-{n}{tag}.txt"
                wrap = ["py-spy", "record", "--idle", "--threads", "-r", "250"]
                wrap += ["-f", "raw", "-o", str(out), "--"]
            watcher = SentWatcher(w / "state")
            d = Daemon(cfg, wrap=wrap)
            try:
                if isinstance(sink, SmtpSink):
                    last = watcher.wait(n, timeout)
                    done = watcher.count()
                    first = watcher.first_at
                else:
                    last = sink.wait(n, timeout)
                    stamps = sink.stamps()
                    done = len(stamps)
                    first = stamps[0] if stamps else None
                    if last is None and stamps:
                        last = stamps[-1]
                cpu = d.cpu_seconds() if profile is None else float("nan")
                if last is None:
                    last = time.time()
                complete = done >= n
            finally:
                watcher.close()
                d.stop()
            if complete:
                sent = sent_in_state(w / "state")
                left = [p for s in ("new", "active") for p in (w / "spool" / s).iterdir()]
                if sent != n or left:
                    raise RuntimeError(f"sink has {n}, state says {sent} sent, {len(left)} left")
            total = last - d.started
            steady = (last - first) if first is not None else float("nan")
            return DrainRun(
                rate_total=done / total if total > 0 else float("nan"),
                rate_steady=(done - 1) / steady if steady and steady > 0 else float("nan"),
                startup=(first - d.started) if first is not None else float("nan"),
                cpu_per_msg_ms=1000 * cpu / max(1, done),
                done=done,
                complete=complete,
            )
        finally:
            sink.close()


def raw_drain(kind: str, n: int, durable: bool = False) -> tuple[float, float]:
    """(messages/s, median synced commit in seconds: durable only, else nan)."""
    with workdir(f"raw-{kind}") as w:
        sink: SmtpSink | AioSink = SmtpSink() if kind == "smtp-sink" else AioSink(w)
        try:
            commit = float("nan")
            if durable:
                secs, commit = raw_durable_client(sink.port, n, w / "state")
            else:
                secs = raw_client(sink.port, n)
            if isinstance(sink, AioSink):
                sink.wait(n, 30)
            return n / secs, commit
        finally:
            sink.close()


def pickup_latency(drops: int) -> list[float]:
    """Seconds from rename into new/ to the server's arrival stamp, per drop."""
    from _common import drop, message

    with aio_run("pickup", 0) as run:
        run.daemon.wait_metrics(run.metrics_port)
        time.sleep(0.5)  # let it settle into its idle wait
        out = []
        for i in range(drops):
            t = drop(run.work / "spool", f"drop{i:04d}", message(i))
            arrived = run.sink.wait(i + 1, 10, poll=0.002)
            if arrived is None:
                raise RuntimeError(f"drop {i} not delivered in 10 s: {run.daemon.log()[-1500:]}")
            out.append(arrived - t)
            time.sleep(0.05)
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sinks", default="smtp-sink,aiosmtpd")
    ap.add_argument("--timeout", type=float, default=120.0, help="per daemon drain, seconds")
    ap.add_argument("--drops", type=int, default=50, help="pick-up latency samples (0: skip)")
    ap.add_argument("--profile", type=Path, help="run the daemon under py-spy, raw stacks here")
    args = ap.parse_args(argv)

    print(f"# drain: N={args.n}, repeat={args.repeat}; {machine()}")
    rows = []
    ratios: dict[str, tuple[float, float, float]] = {}
    commits: list[float] = []
    raw_rates: dict[str, float] = {}
    for kind in args.sinks.split(","):
        raws, durables, runs = [], [], []
        for r in range(args.repeat):
            raws.append(raw_drain(kind, args.n)[0])
            rate, commit = raw_drain(kind, args.n, durable=True)
            durables.append(rate)
            commits.append(commit)
            runs.append(daemon_drain(kind, args.n, args.timeout, args.profile, f"-{r}"))
        raw = median(raws)
        raw_rates[kind] = raw
        durable = median(durables)
        tot = median([x.rate_total for x in runs])
        steady = median([x.rate_steady for x in runs])
        ratio_t = median([x.rate_total / y for x, y in zip(runs, raws, strict=True)])
        ratio_s = median([x.rate_steady / y for x, y in zip(runs, raws, strict=True)])
        ratio_d = median([x.rate_steady / y for x, y in zip(runs, durables, strict=True)])
        ratios[kind] = (ratio_t, ratio_s, ratio_d)
        partial = "" if all(x.complete for x in runs) else " (partial: timeout)"
        rows.append([kind, "raw smtplib, 1 connection", raw, raw, "-", "-", "-"])
        rows.append([kind, "raw + synced record per send", durable, durable, "-", "-", "-"])
        rows.append(
            [
                kind,
                "exactmaild immediate" + partial,
                tot,
                steady,
                median([x.startup for x in runs]),
                median([x.cpu_per_msg_ms for x in runs]),
                f"{ratio_t:.3f} / {ratio_s:.3f}",
            ]
        )
    print(
        table(
            ["sink", "sender", "msg/s total", "msg/s steady", "startup s", "cpu ms/msg", "ratio"],
            rows,
        )
    )
    for kind, (rt, rs, rd) in ratios.items():
        print(f"ratio {kind}: {rt:.3f} (from start; steady {rs:.3f}; target >= 0.8)")
        print(f"ratio {kind}, against raw + synced record per send: steady {rd:.3f}")
    c = median(commits)
    print(
        f"# a synced commit takes {c * 1e6:.0f} us here (median): with each send recorded "
        f"before the next can be accepted, no sender can pass {1 / c:,.0f} msg/s"
        + "".join(f", {1 / c / r:.2f} of raw into {k}" for k, r in raw_rates.items())
    )
    if args.drops > 0:
        lat = [x * 1000 for x in pickup_latency(args.drops)]
        print(
            f"pick-up latency over {len(lat)} drops: median {median(lat):.1f} ms, "
            f"p99 {percentile(lat, 99):.1f} ms, max {max(lat):.1f} ms (target p99 < 100 ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
