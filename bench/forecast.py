"""Forecast cost: how long working out every waiting message's send time takes.

What it measures: `core.forecast.forecast()` over a queue of N new messages
(paced 30 s apart, 08:00-17:00 on weekdays, a cap of 500 a calendar day, so
10,000 messages span four weeks of windows and cap resets), best of
--repeat runs; and the daemon's `Forecaster` asked again with nothing
changed (the metrics and STATUS= read it every few seconds), which only
compares what the forecast rests on.

How to read it: linear in N is expected (each message is one
`next_send_time()` and one ledger record). The cached call is what a scrape
costs while the queue waits; the full one is paid once per send.

    python bench/forecast.py [--sizes 1000,10000,100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import machine, table

from exactmaild.core.forecast import Pacing, Waiting, forecast
from exactmaild.core.hours import Window
from exactmaild.core.limits import Ledger
from exactmaild.outbox.levels import Snapshot
from exactmaild.send.blocking import Forecaster

TZ = ZoneInfo("Europe/London")
PACING = Pacing(
    30.0, False, TZ, ("mon", "tue", "wed", "thu", "fri"), Window(dt.time(8), dt.time(17))
)
NOW = dt.datetime(
    2026, 10, 20, 7, 0, tzinfo=TZ
).timestamp()  # Tuesday, before the window; DST ends Sunday


def best(repeat: int, fn: object) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    rows = []
    per: list[float] = []
    for n in sizes:
        queue = [Waiting(f"m{i:06d}") for i in range(n)]
        ledger = Ledger("calendar_day", TZ, 500)
        full = best(
            args.repeat,
            lambda q=queue, led=ledger: forecast(NOW, led, q, PACING, last_send=None),  # type: ignore[misc]
        )
        done = forecast(NOW, ledger, queue, PACING, last_send=None).queue_done_at
        levels = Snapshot(0, 0, 500, 500, 0.0)
        f = Forecaster()
        f(levels, NOW, ledger, queue, PACING, None, None)
        cached = best(
            args.repeat,
            lambda f=f, q=queue, led=ledger, lv=levels: f(lv, NOW + 1, led, q, PACING, None, None),  # type: ignore[misc]
        )
        assert done is not None
        span = (done - NOW) / 86400
        rows.append(
            [
                n,
                f"{full * 1000:.1f} ms",
                f"{full / n * 1e6:.1f} us",
                f"{cached * 1000:.2f} ms",
                f"{span:.1f} d",
            ]
        )
        per.append(full / n)
    print(machine())
    print(table(["queue", "forecast", "per message", "cached call", "queue spans"], rows))
    print(f"ratio per-message cost, largest/smallest queue: {per[-1] / per[0]:.2f}")


if __name__ == "__main__":
    main()
