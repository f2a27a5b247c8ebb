"""Scale: a paced daemon in front of a very large queue.

What it measures, for a spool of N queued messages (default 100,000) and for
one a tenth the size (10,000), each written straight into SPOOL/new/ before
the daemon starts:

* start-up: from spawning `exactmaild run` (paced, `delay: 1h`) to its
  /metrics answering (the queue index is built before it listens);
* first send: from spawning to an aiosmtpd server (own process) receiving the
  first message (the daemon then waits an hour for the next);
* RSS: VmRSS of the daemon from /proc/PID/status once the first message is out;
* `exactmaild queue list`: wall time of the command, output discarded.

How to read it: the ratio line divides the big-spool figures by the small
ones. 10x the queue should cost at most ~10x at start-up and in `queue list`
(one directory scan, linear), and far less in memory; anything per send must
not grow at all. Targets: RSS under 80 MB at 100,000 queued.

    python bench/scale.py [--n 100000] [--small N/10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    aio_run,
    machine,
    median,
    proc_rss_kb,
    table,
)


def scale_run(n: int) -> tuple[float, float, float, float]:
    """(start-up s, first send s, RSS MB, queue list s) for a spool of n messages."""
    with aio_run("scale", n, immediately=False, delay="1h") as run:
        d = run.daemon
        up = d.wait_metrics(run.metrics_port, timeout=300) - d.started
        first_at = run.sink.wait(1, 300)
        if first_at is None:
            raise RuntimeError(f"nothing sent: {d.log()[-1500:]}")
        first = first_at - d.started
        time.sleep(0.2)
        rss = proc_rss_kb(d.daemon_pid()) / 1024
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "exactmaild", "-c", str(run.config), "queue", "list"],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=300,
        )
        listing = time.perf_counter() - t0
        if r.returncode != 0:
            raise RuntimeError(f"queue list failed: {r.stderr.decode()[-800:]}")
    return up, first, rss, listing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--small", type=int, help="the comparison spool (default n/10)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    small = args.small or max(1, args.n // 10)

    print(f"# scale: N={args.n} vs {small}, repeat={args.repeat}; {machine()}")
    results: dict[int, list[float]] = {}
    for size in (small, args.n):
        runs = [scale_run(size) for _ in range(args.repeat)]
        results[size] = [median([r[i] for r in runs]) for i in range(4)]
    rows = [[f"{size:,} queued", *vals] for size, vals in results.items()]
    growth = [
        b / a if a else float("nan") for a, b in zip(results[small], results[args.n], strict=True)
    ]
    rows.append([f"ratio {args.n // small}x queue", *growth])
    print(table(["spool", "start-up s", "first send s", "RSS MB", "queue list s"], rows))
    print(
        f"ratio {args.n}/{small}: start-up {growth[0]:.2f}x, first send {growth[1]:.2f}x, "
        f"RSS {growth[2]:.2f}x, queue list {growth[3]:.2f}x "
        f"(RSS at {args.n:,}: {results[args.n][2]:.1f} MB, target < 80)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
