"""Idle cost: CPU time and wake-ups of a paced daemon with nothing to send.

What it measures: `exactmaild run` with `send: {delay: 60s}` (paced), an empty
spool and no incoming server; once its metrics answer and it has settled for
2 s, the CPU time (utime + stime from /proc/PID/stat, all threads) and the
voluntary context switches (summed over /proc/PID/task/*/status: each is one
sleep of one thread, i.e. roughly one wake-up) over --seconds (default 60).
Nothing scrapes the daemon during the window.

How to read it: a paced daemon spends 59 s of every minute waiting, so it
should cost next to nothing: target well under 0.1 CPU-seconds per minute.
The ratio line is the measured CPU per minute divided by that 0.1 s budget
(below 1.0 meets it; lower is better). Wake-ups per second show timers that
tick without need (each costs little, but they keep a CPU out of deep sleep).

    python bench/idle.py [--seconds 60] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    aio_run,
    machine,
    median,
    proc_cpu,
    proc_ctxt_switches,
    proc_rss_kb,
    table,
)

BUDGET_PER_MINUTE = 0.1


def idle_run(seconds: float) -> tuple[float, int, int, int]:
    """(CPU seconds, voluntary switches, involuntary switches, RSS kB) over `seconds`."""
    with aio_run("idle", 0, immediately=False, delay="60s") as run:
        run.daemon.wait_metrics(run.metrics_port)
        time.sleep(2.0)
        pid = run.daemon.daemon_pid()
        cpu0, (v0, i0) = proc_cpu(pid), proc_ctxt_switches(pid)
        time.sleep(seconds)
        cpu1, (v1, i1) = proc_cpu(pid), proc_ctxt_switches(pid)
        rss = proc_rss_kb(pid)
    return cpu1 - cpu0, v1 - v0, i1 - i0, rss


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    print(f"# idle: {args.seconds:g} s, repeat={args.repeat}; {machine()}")
    rows = []
    per_min = []
    for r in range(args.repeat):
        cpu, vol, invol, rss = idle_run(args.seconds)
        pm = cpu * 60 / args.seconds
        per_min.append(pm)
        rows.append([f"run {r + 1}", cpu, pm, vol, vol / args.seconds, invol, rss // 1024])
    print(
        table(
            ["", "CPU s", "CPU s/min", "wakeups", "wakeups/s", "involuntary", "RSS MB"],
            rows,
        )
    )
    m = median(per_min)
    print(
        f"ratio cpu-per-minute/budget: {m / BUDGET_PER_MINUTE:.3f} "
        f"({m:.4f} CPU s per minute; budget {BUDGET_PER_MINUTE} s; clock tick "
        f"{1 / 100:.2f} s, so figures under a few ticks are at the resolution limit)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
