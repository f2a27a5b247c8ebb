"""The hard cap: what the current limit window still allows, and from when.

This module owns the sending limit's arithmetic and nothing else:

- which instants make up a limit window: a local calendar day (DST-correct:
  23 h and 25 h days, and zones whose midnight falls into a DST gap) or a
  sliding 24 h;
- the `Ledger`, an in-memory record of the sends counted against the limit,
  which the send loop asks before *every* send and which says when a send of a
  given size fits next.

No I/O and no clock: every call takes `now` (unix seconds, UTC). The state
store persists sends and replays them into a Ledger at start; this module
never sees it.
"""

from __future__ import annotations

import bisect
import datetime as dt
import math
from typing import Literal
from zoneinfo import ZoneInfo

LimitWindow = Literal["calendar_day", "rolling_24h"]
LIMIT_WINDOWS: tuple[LimitWindow, ...] = ("calendar_day", "rolling_24h")
DAY = 86400.0
_MIDNIGHT = dt.time(0, 0)


def wall_clock(ts: float, tz: ZoneInfo) -> dt.datetime:
    """The naive local wall-clock time that `tz` shows at unix time `ts`.

    Truncated to the microsecond, where `fromtimestamp` rounds: rounding would
    show 07:59:59.9999996 as 08:00:00, so an instant just before a window or a
    day began would already count as inside it.
    """
    whole = math.floor(ts)
    # No UTC offset changes within a second (tzdata changes on whole
    # seconds), so adding the fraction as wall-clock time is exact.
    fraction = dt.timedelta(microseconds=math.floor((ts - whole) * 1_000_000))
    return (dt.datetime.fromtimestamp(whole, tz) + fraction).replace(tzinfo=None)


def local_instant(day: dt.date, time: dt.time, tz: ZoneInfo, *, last: bool = False) -> float:
    """Unix time at which the wall clock in `tz` shows `time` on `day`.

    A time that happens twice (the repeated hour when clocks go back) gives the
    earlier instant, or the later with `last=True`. A time that never happens
    (inside the gap when clocks go forward) gives the first instant after the
    gap, which is the moment of the change itself: a window "from 02:30" on a
    day that skips 02:00-03:00 opens at 03:00.
    """
    naive = dt.datetime.combine(day, time.replace(tzinfo=None))
    # PEP 495: fold=0 resolves with the offset in force before a transition,
    # fold=1 with the one after. Whichever of them round-trips is real.
    real = [
        ts
        for ts in (naive.replace(tzinfo=tz, fold=f).timestamp() for f in (0, 1))
        if wall_clock(ts, tz) == naive
    ]
    if real:
        return max(real) if last else min(real)
    # In a gap, fold=1 lands before it and fold=0 after it; the transition lies
    # between. tzdata transitions fall on whole seconds, so bisect on those.
    lo = math.floor(naive.replace(tzinfo=tz, fold=1).timestamp())
    hi = math.ceil(naive.replace(tzinfo=tz, fold=0).timestamp())
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if wall_clock(mid, tz) >= naive:
            hi = mid
        else:
            lo = mid
    return float(hi)


def window_bounds(now: float, tz: ZoneInfo, kind: LimitWindow) -> tuple[float, float]:
    """The limit window that contains `now`, as unix times.

    calendar_day: [first instant of today's local date, first instant of
    tomorrow's), so 23 h or 25 h on DST days. rolling_24h: (now - 24 h, now].
    """
    if kind == "rolling_24h":
        return (now - DAY, now)
    if kind != "calendar_day":
        raise ValueError(f"unknown limit window {kind!r}")
    today = wall_clock(now, tz).date()
    start = local_instant(today, _MIDNIGHT, tz)
    # `last=True`: in a zone whose clocks go back across midnight the next
    # date's 00:00 happens twice; ending the day at the later one keeps every
    # instant that shows today's date inside today's window. The two windows
    # then overlap, which only ever counts a send twice, never zero times.
    end = local_instant(today + dt.timedelta(days=1), _MIDNIGHT, tz, last=True)
    return (start, end)


def _after_a_day(ts: float) -> float:
    """Smallest t with `ts <= t - DAY`, i.e. when a send at `ts` stops counting.

    `ts + DAY` nearly always is; the loop guards against a float rounding that
    would leave the send counted at that instant and make a caller spin.
    """
    t = ts + DAY
    while t - DAY < ts:
        t = math.nextafter(t, math.inf)
    return t


class Ledger:
    """The sends counted against the limit, and what they leave for `now`.

    Entries are (unix time, units) kept sorted by time with running totals,
    so `used()` is two bisections: O(log n). `record()` of the newest send (the
    usual case) is amortised O(1); recording out of order or `forget()`ting a
    send other than the newest rebuilds the totals after it, O(n).

    `allowance` is what the window may hold: daily_limit - reserve. A send is
    `units` messages or recipients, as `limit_counts` says; a send whose units
    exceed the whole allowance can never go (`fits_at_all()` is False,
    `next_allowed()` is math.inf), and the caller should fail that message
    rather than wait. `keep` (the questions' last argument) is what a send
    must leave unused: a normal or bulk message leaves `urgent_reserve`
    (`core.lanes.kept_back()`), so only urgent mail reaches the cap.
    """

    def __init__(self, kind: LimitWindow, tz: ZoneInfo, allowance: int) -> None:
        if kind not in LIMIT_WINDOWS:
            raise ValueError(f"unknown limit window {kind!r}")
        self.kind: LimitWindow = kind
        self.tz = tz
        self._allowance = _checked_allowance(allowance)
        self._ts: list[float] = []
        self._units: list[int] = []
        # _before[i]: units of every entry ever recorded before entry i. Kept
        # absolute, so pruning a prefix leaves the remaining totals valid.
        self._before: list[int] = []
        self._total = 0
        self._external_start: float | None = None
        self._external_units = 0
        # The last calendar window looked up, as (start, end, reuse_until);
        # see _window().
        self._last_window: tuple[float, float, float] | None = None

    # -- configuration ---------------------------------------------------

    @property
    def allowance(self) -> int:
        return self._allowance

    def set_allowance(self, allowance: int) -> None:
        """A reload changed daily_limit or reserve: applies to the current window at once.

        Sends already made stay counted, so lowering the limit below what was
        sent today stops sending until the window moves on.
        """
        self._allowance = _checked_allowance(allowance)

    def set_external(self, window_start: float, units: int) -> None:
        """Mail sent elsewhere (webmail, counted in the IMAP Sent folder).

        `units` is the whole count for the window that began at `window_start`
        (as `window_bounds()` gave it when counting): it replaces the previous
        figure rather than adding to it, since each check re-counts the folder.

        calendar_day: it counts while `now` is in the window containing
        `window_start`, and stops at that window's end.
        rolling_24h: the folder count covered (window_start, window_start + 24 h];
        those messages have all aged out by window_start + 48 h, and which of
        them ages out earlier is unknown, so the whole figure counts until then
        (or until the next count replaces it).
        """
        if units < 0:
            raise ValueError("external units must be 0 or more")
        self._external_start = window_start
        self._external_units = units

    # -- recording -------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ts)

    def record(self, ts: float, units: int = 1) -> None:
        """Count a send of `units` at unix time `ts` (also: reserve before sending)."""
        if units < 1:
            raise ValueError("a send counts at least 1 unit")
        if math.isnan(ts):
            raise ValueError("send time is NaN")
        if not self._ts or ts >= self._ts[-1]:
            self._ts.append(ts)
            self._units.append(units)
            self._before.append(self._total)
            self._total += units
            return
        i = bisect.bisect_right(self._ts, ts)
        base = self._before[i]
        self._ts.insert(i, ts)
        self._units.insert(i, units)
        self._before.insert(i, base)
        self._rebuild(i, base)

    def forget(self, ts: float, units: int = 1) -> None:
        """Undo a `record(ts, units)`: a reservation whose send did not happen.

        Raises ValueError if no such send is recorded (or it was pruned).
        """
        i = bisect.bisect_left(self._ts, ts)
        while i < len(self._ts) and self._ts[i] == ts:
            if self._units[i] == units:
                base = self._before[i]
                del self._ts[i], self._units[i], self._before[i]
                self._rebuild(i, base)
                return
            i += 1
        raise ValueError(f"no send of {units} unit(s) recorded at {ts}")

    def prune(self, now: float) -> None:
        """Drop sends that no window containing `now` or later can count."""
        if self.kind == "calendar_day":
            cutoff = self._window(now)[0]
            k = bisect.bisect_left(self._ts, cutoff)
        else:
            k = bisect.bisect_right(self._ts, now - DAY)
        if k:
            del self._ts[:k], self._units[:k], self._before[:k]
        if self._external_start is not None and not self._external_applies(now):
            self._external_start = None
            self._external_units = 0

    def _rebuild(self, i: int, base: int) -> None:
        running = base
        for k in range(i, len(self._ts)):
            self._before[k] = running
            running += self._units[k]
        self._total = running

    # -- questions -------------------------------------------------------

    def used(self, now: float) -> int:
        """Units counted in the limit window containing `now`, webmail included.

        rolling_24h also counts sends stamped after `now`: they can only exist
        if the clock was stepped back, and counting them is the safe side.
        """
        return self._own_used(now) + self._external_at(now)

    def own_used(self, now: float) -> int:
        """Units of exactmaild's own sends in the window containing `now`."""
        return self._own_used(now)

    def external_used(self, now: float) -> int:
        """Units of mail sent elsewhere (`set_external`) counted at `now`."""
        return self._external_at(now)

    def remaining(self, now: float) -> int:
        """Allowance left in the window containing `now`, never below 0."""
        return max(0, self._allowance - self.used(now))

    def fits_at_all(self, units: int = 1, keep: int = 0) -> bool:
        """Whether a send of `units` could ever go: False means fail it, don't wait."""
        _check_units(units)
        return units <= self._allowance - keep

    def can_send(self, now: float, units: int = 1, keep: int = 0) -> bool:
        """Whether a send of `units` at `now` keeps the window within the
        allowance, `keep` of it left unused."""
        return self.fits_at_all(units, keep) and self.used(now) + units <= self._allowance - keep

    def next_allowed(self, now: float, units: int = 1, keep: int = 0) -> float:
        """Earliest instant >= `now` at which a send of `units` fits; math.inf if never.

        calendar_day: `now`, or the start of the next window with room.
        rolling_24h: `now`, or when enough of the counted sends have aged out.
        """
        if not self.fits_at_all(units, keep):
            return math.inf
        limit = self._allowance - keep
        if self.kind == "calendar_day":
            t = now
            # Terminates: past the last recorded send a window holds at most
            # the external figure, which only applies to one window.
            while not self.can_send(t, units, keep):
                end = self._window(t)[1]
                t = end if end > t else math.nextafter(t, math.inf)
            return t
        external = self._external_at(now)
        excess = self._own_used(now) + external + units - limit
        if excess <= 0:
            return now
        t = self._aged_out(now, excess)
        if external == 0:
            return t
        assert self._external_start is not None
        external_ends = self._external_start + 2 * DAY
        if t < external_ends:
            return t
        # Our own sends cannot make room while the webmail figure counts:
        # wait for it to lapse, and for whatever of ours is still in the way.
        own_excess = self._own_used(now) + units - limit
        own_t = now if own_excess <= 0 else self._aged_out(now, own_excess)
        return max(external_ends, own_t)

    def reset_at(self, now: float) -> float:
        """When the count next drops by itself (for `status`).

        calendar_day: the end of the current window. rolling_24h: when the
        oldest counted send ages out (or the webmail figure lapses, if
        sooner); `now` when nothing is counted.
        """
        if self.kind == "calendar_day":
            return self._window(now)[1]
        candidates: list[float] = []
        i = bisect.bisect_right(self._ts, now - DAY)
        if i < len(self._ts):
            candidates.append(_after_a_day(self._ts[i]))
        if self._external_at(now) and self._external_start is not None:
            candidates.append(self._external_start + 2 * DAY)
        return max(now, min(candidates)) if candidates else now

    # -- internals -------------------------------------------------------

    def _window(self, now: float) -> tuple[float, float]:
        """window_bounds(now) for this ledger, remembered while `now` stays in it.

        Working out local midnights costs more than the rest of a send's
        limit check, and every check of a day lands in the same window. The
        window is reused only up to the start of the next one: on a day whose
        clocks go back across midnight the two overlap, and an instant in the
        overlap belongs to the later day, so it is worked out afresh.
        """
        if self.kind != "calendar_day":
            return window_bounds(now, self.tz, self.kind)
        last = self._last_window
        if last is not None and last[0] <= now < last[2]:
            return last[0], last[1]
        start, end = window_bounds(now, self.tz, self.kind)
        following = window_bounds(end, self.tz, self.kind)[0]
        self._last_window = (start, end, min(end, following))
        return start, end

    def _prefix(self, k: int) -> int:
        """Units recorded before entry k (absolute, like _before)."""
        return self._before[k] if k < len(self._ts) else self._total

    def _own_used(self, now: float) -> int:
        if self.kind == "calendar_day":
            start, end = self._window(now)
            i = bisect.bisect_left(self._ts, start)
            j = bisect.bisect_left(self._ts, end)
        else:
            i = bisect.bisect_right(self._ts, now - DAY)
            j = len(self._ts)
        return self._prefix(j) - self._prefix(i)

    def _aged_out(self, now: float, excess: int) -> float:
        """rolling_24h: when the oldest counted sends totalling >= `excess` have aged out."""
        i = bisect.bisect_right(self._ts, now - DAY)
        target = self._prefix(i) + excess
        n = len(self._ts)
        # Smallest j > i with prefix(j) >= target: entries i..j-1 must go.
        j = bisect.bisect_left(self._before, target, lo=min(i + 1, n), hi=n)
        if j == n and self._total < target:
            return math.inf
        return max(now, _after_a_day(self._ts[j - 1]))

    def _external_applies(self, now: float) -> bool:
        if self._external_start is None:
            return False
        if self.kind == "calendar_day":
            start, end = self._window(now)
            return start <= self._external_start < end
        return now < self._external_start + 2 * DAY

    def _external_at(self, now: float) -> int:
        return self._external_units if self._external_applies(now) else 0


def _checked_allowance(allowance: int) -> int:
    if allowance < 0:
        raise ValueError("allowance must be 0 or more")
    return allowance


def _check_units(units: int) -> None:
    if units < 1:
        raise ValueError("a send counts at least 1 unit")
