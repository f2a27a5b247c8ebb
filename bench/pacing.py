"""Pacing accuracy: how close the gaps between sends are to `send.delay`.

What it measures: a daemon with `send: {delay: 200ms}` (paced, not immediate;
daily limit far above N) and N messages (default 50) already queued; an
aiosmtpd server in its own process stamps each arrival. The gaps between
consecutive arrivals are compared with the configured delay: median and p99
of the error (gap - delay), and the shortest gap.

How to read it: the daemon must never send faster than the delay (min gap >=
delay: the delay is what keeps a practice under its provider's limit) and
should not drift much slower either (target: p99 error < 20 ms). The ratio
line is median gap / delay (1.000 is perfect). The gaps are measured at the
server, so they include the jitter of each SMTP transaction (well under 1 ms
on loopback) as well as the daemon's timer accuracy.

    python bench/pacing.py [--n 50] [--delay-ms 200] [--repeat 3]
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    aio_run,
    machine,
    median,
    percentile,
    table,
)


def gaps(n: int, delay_ms: float) -> list[float]:
    """Arrival gaps in milliseconds for one paced run of n messages."""
    with aio_run("pacing", n, immediately=False, delay=f"{delay_ms:g}ms") as run:
        timeout = 30 + n * delay_ms / 1000 * 2
        if run.sink.wait(n, timeout) is None:
            raise RuntimeError(f"only {run.sink.count} of {n} sent: {run.daemon.log()[-1500:]}")
        t = run.sink.stamps()  # all n arrived: nothing more can come
    return [1000 * (b - a) for a, b in itertools.pairwise(t)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--delay-ms", type=float, default=200.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    if args.n < 3:
        ap.error("--n must be at least 3")

    print(f"# pacing: N={args.n}, delay={args.delay_ms:g} ms, repeat={args.repeat}; {machine()}")
    rows = []
    runs = []
    for r in range(args.repeat):
        g = gaps(args.n, args.delay_ms)
        err = [x - args.delay_ms for x in g]
        abs_err = [abs(x) for x in err]
        run = (median(g), median(err), percentile(abs_err, 99), min(g), max(g))
        runs.append(run)
        rows.append([f"run {r + 1}", len(g), *run])
    med = [median([run[i] for run in runs]) for i in range(5)]
    rows.append(["median", "", *med])
    print(
        table(
            ["", "gaps", "median gap ms", "median err ms", "p99 |err| ms", "min gap ms", "max ms"],
            rows,
        )
    )
    worst_min = min(run[3] for run in runs)
    verdict = "ok" if worst_min >= args.delay_ms else "TOO SHORT"
    print(
        f"ratio median-gap/delay: {med[0] / args.delay_ms:.3f}; p99 error {med[2]:.1f} ms "
        f"(target < 20); shortest gap of all runs {worst_min:.1f} ms ({verdict}, must be >= "
        f"{args.delay_ms:g})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
