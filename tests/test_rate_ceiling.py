"""The provider's rate ceiling (`send.max_per_minute`, 30 for microsoft365) in
the pure pacing core: whatever the pacing (a delay, `immediately: true`,
`exactmaild flush`), across DST days, no minute holds more sends than the
ceiling; a flush goes on at the ceiling's pace instead of ending."""

from __future__ import annotations

import itertools
import math
from collections import deque
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exactmaild.config.values import parse_window
from exactmaild.core.forecast import Pacing, Waiting, forecast
from exactmaild.core.hours import ALL_DAYS, Window
from exactmaild.core.limits import Ledger
from exactmaild.core.schedule import next_send_time
from tests.helpers import at

LON = ZoneInfo("Europe/London")
NYC = ZoneInfo("America/New_York")
CEILING = 30  # microsoft365: 30 messages a minute
GAP = 60.0 / CEILING


def simulate(
    pacing: Pacing,
    ledger: Ledger,
    arrivals: list[tuple[float, int]],
    flush_at: set[int],
    start: float,
) -> list[float]:
    """The sender's loop on an injected clock: each burst of arrivals (index
    in `flush_at`) is followed by an `exactmaild flush`, which lasts while
    `Pacing.flushing()` says so, as `Sender.step()` keeps it."""
    pending = deque(sorted(arrivals))
    queue: deque[int] = deque()
    sends: list[float] = []
    clock, last, flush = start, None, False
    burst = 0
    while pending or queue:
        if not queue:
            clock = max(clock, pending[0][0])
            while pending and pending[0][0] <= clock:
                queue.append(pending.popleft()[1])
            flush = burst in flush_at
            burst += 1
            continue
        units = queue[0]
        due = pacing.due(clock, last_send=last, flush=flush, ledger=ledger, units=units)
        if math.isinf(due):
            queue.popleft()
            continue
        flush = flush and pacing.flushing(clock, due, last)
        clock = due
        ledger.record(due, units)
        sends.append(due)
        last = due
        queue.popleft()
        while pending and pending[0][0] <= clock:
            queue.append(pending.popleft()[1])
    return sends


def most_in_a_minute(sends: list[float]) -> int:
    """The most sends any half-open minute [t, t + 60 s) holds."""
    best, j = 0, 0
    for i, t in enumerate(sends):
        while sends[j] <= t - 60.0:
            j += 1
        best = max(best, i - j + 1)
    return best


# Days the clocks change (spring forward, fall back) and an ordinary one.
DAYS = [
    (LON, "2026-03-29 00:30"),
    (LON, "2026-10-25 00:30"),
    (NYC, "2026-03-08 01:30"),
    (NYC, "2026-11-01 00:30"),
    (LON, "2026-06-10 07:55"),
]


@settings(max_examples=300, deadline=None)
@given(
    day=st.sampled_from(DAYS),
    mode=st.sampled_from(["immediately", "paced", "flush"]),
    delay=st.sampled_from([0.0, 0.5, 1.0, 1.99, 2.0, 3.0, 60.0]),
    window=st.sampled_from([None, "01:00-02:00", "08:00-17:00", "22:00-06:00"]),
    kind=st.sampled_from(["calendar_day", "rolling_24h"]),
    allowance=st.integers(min_value=20, max_value=400),
    bursts=st.lists(
        st.tuples(
            st.floats(min_value=0, max_value=6 * 3600, allow_nan=False),
            st.integers(min_value=1, max_value=80),
            st.integers(min_value=1, max_value=3),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_no_minute_holds_more_than_the_ceiling(
    day: tuple[ZoneInfo, str],
    mode: str,
    delay: float,
    window: str | None,
    kind: str,
    allowance: int,
    bursts: list[tuple[float, int, int]],
) -> None:
    tz, when = day
    start = at(tz, when)
    win: Window | None = parse_window(window) if window else None
    pacing = Pacing(delay, mode == "immediately", tz, ALL_DAYS, win, GAP)
    ledger = Ledger(kind, tz, allowance)  # type: ignore[arg-type]
    arrivals = [(start + offset, units) for offset, n, units in bursts for _ in range(n)]
    flush_at = set(range(len(bursts))) if mode == "flush" else set()
    sends = simulate(pacing, ledger, arrivals, flush_at, start)
    assert sends == sorted(sends)
    assert most_in_a_minute(sends) <= CEILING
    # The ceiling is a gap between sends, never a send sooner than it.
    assert all(b - a >= GAP - 1e-9 for a, b in itertools.pairwise(sends))


@pytest.mark.parametrize(
    ("immediately", "flush", "delay", "last", "now", "want"),
    [
        # (mode, delay, the last send, now) -> when the next may go; the ceiling is 2 s.
        (True, False, 0.0, None, 100.0, 100.0),  # nothing sent yet: now
        (True, False, 0.0, 99.0, 100.0, 101.0),  # immediately: held to the ceiling
        (True, False, 0.0, 90.0, 100.0, 100.0),  # long enough ago: now
        (False, True, 60.0, 99.5, 100.0, 101.5),  # flush: the ceiling, not the delay
        (False, True, 60.0, 50.0, 100.0, 100.0),
        (False, False, 60.0, 99.0, 100.0, 159.0),  # paced slower than the ceiling: the delay
        (False, False, 0.5, 99.0, 100.0, 101.0),  # paced faster: the ceiling
    ],
)
def test_the_ceiling_in_each_mode(
    immediately: bool, flush: bool, delay: float, last: float | None, now: float, want: float
) -> None:
    ledger = Ledger("rolling_24h", LON, 1000)
    got = next_send_time(
        now,
        last_send=last,
        delay=delay,
        immediately=immediately,
        flush=flush,
        ledger=ledger,
        units=1,
        tz=LON,
        days=ALL_DAYS,
        window=None,
        min_gap=GAP,
    )
    assert got == want


def test_a_flush_goes_on_at_the_ceiling_and_ends_at_the_cap() -> None:
    """100 waiting, 70 left under the cap: a flush sends the 70 two seconds
    apart (the forecast as the sender goes), then the cap's wait ends it."""
    now = at(LON, "2026-10-25 00:30")  # the night the clocks go back
    ledger = Ledger("rolling_24h", LON, 70)
    pacing = Pacing(60.0, False, LON, ALL_DAYS, parse_window("08:00-17:00"), GAP)
    queue = [Waiting(f"m{i}") for i in range(100)]
    f = forecast(now, ledger, queue, pacing, last_send=None, flush=True)
    times = [t for _, t in f.sends]
    assert times[:70] == [now + GAP * i for i in range(70)]
    # The 71st waits for the first to age out of the rolling 24 h, then paced.
    assert times[70] >= now + 86400.0
    assert most_in_a_minute(times) <= CEILING
