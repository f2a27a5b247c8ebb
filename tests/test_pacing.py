"""plan(): the daily limit turned into a safe steady rate (the brief's arithmetic)."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exactmaild.core.pacing import describe_rate, format_seconds, plan


@pytest.mark.parametrize(
    ("daily_limit", "hours", "reserve", "per_minute", "delay"),
    [
        # The brief's table: N a day over 8 working hours.
        (500, 8, 0, 1, 60.0),
        (1000, 8, 0, 2, 30.0),
        (1500, 8, 0, 3, 20.0),
        (2000, 8, 0, 4, 15.0),
        # Exactly on the boundary, and one below it.
        (480, 8, 0, 1, 60.0),
        (960, 8, 0, 2, 30.0),
        (959, 8, 0, 1, 60.0),
        # The reserve (mail sent from webmail) comes off first.
        (600, 8, 100, 1, 60.0),
        (1000, 8, 500, 1, 60.0),
        (1000, 8, 41, 1, 60.0),  # 959 left: just under 2 a minute
        (2000, 8, 1000, 2, 30.0),
        (500, 8, 21, 0, 61.0),  # 479 left: under 1 a minute
        # Under one a minute: the delay is rounded up to a whole second.
        (479, 8, 0, 0, 61.0),
        (100, 8, 0, 0, 288.0),
        (250, 10, 0, 0, 144.0),
        (7, 8, 0, 0, 4115.0),  # 28800 / 7 = 4114.29
        (1, 24, 0, 0, 86400.0),
        (2, 24, 1, 0, 86400.0),
        # Other working days.
        (500, 7.5, 0, 1, 60.0),
        (1000, 0.5, 0, 33, 60 / 33),
        (1440, 24, 0, 1, 60.0),
    ],
)
def test_plan_table(
    daily_limit: int, hours: float, reserve: int, per_minute: int, delay: float
) -> None:
    p = plan(daily_limit, hours, reserve)
    assert (p.daily_limit, p.reserve, p.hours) == (daily_limit, reserve, hours)
    assert p.per_minute == per_minute
    assert p.delay == pytest.approx(delay, abs=0)


@pytest.mark.parametrize(
    ("args", "text"),
    [
        ((500, 8), "500 sends over 8 h: 1 email a minute, a delay of 60 s between sends"),
        ((2000, 8), "2000 sends over 8 h: 4 emails a minute, a delay of 15 s between sends"),
        (
            (600, 8, 100),
            "500 sends over 8 h: 1 email a minute, a delay of 60 s between sends",
        ),
        (
            (100, 8),
            "100 sends over 8 h: about 12 an hour, a delay of 4 min 48 s between sends",
        ),
        (
            (10, 10),
            "10 sends over 10 h: 1 an hour, a delay of 1 h between sends",
        ),
    ],
)
def test_describe(args: tuple[int, ...], text: str) -> None:
    assert plan(*args).describe() == text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 8), "daily limit"),
        ((-5, 8), "daily limit"),
        ((500, 0), "hours"),
        ((500, -1), "hours"),
        ((500, 24.5), "hours"),
        ((500, 8, 500), "reserve"),
        ((500, 8, 501), "reserve"),
        ((500, 8, -1), "reserve"),
    ],
)
def test_plan_rejects(args: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "500 ms"),
        (15, "15 s"),
        (60, "60 s"),
        (90, "90 s"),
        (120, "2 min"),
        (288, "4 min 48 s"),
        (2469, "41 min"),
        (3600, "1 h"),
        (5400, "1 h 30 min"),
        (7200, "2 h"),
        (4 * 86400, "4 d"),
    ],
)
def test_format_seconds(seconds: float, text: str) -> None:
    assert format_seconds(seconds) == text


@pytest.mark.parametrize(
    ("delay", "text"),
    [
        (0, "no delay"),
        (60, "1 email a minute"),
        (30, "2 emails a minute"),
        (40, "90 an hour"),
        (68, "about 53 an hour"),
        (2469, "about 1 an hour"),
        (7200, "12 a day"),
        (7000, "about 12 a day"),
    ],
)
def test_describe_rate(delay: float, text: str) -> None:
    assert describe_rate(delay) == text


@settings(max_examples=300, deadline=None)
@given(
    daily_limit=st.integers(1, 100_000),
    quarter_hours=st.integers(1, 96),
    reserve_share=st.fractions(0, 1).filter(lambda f: f < 1),
)
def test_plan_never_exceeds_and_is_the_largest(
    daily_limit: int, quarter_hours: int, reserve_share: Fraction
) -> None:
    reserve = math.floor(daily_limit * reserve_share)
    hours = quarter_hours / 4
    p = plan(daily_limit, hours, reserve)
    allowance = daily_limit - reserve
    minutes = Fraction(quarter_hours * 15)
    if p.per_minute >= 1:
        # Steady rate over the whole working day stays within the allowance...
        assert p.per_minute * minutes <= allowance
        # ...and one more a minute would not.
        assert (p.per_minute + 1) * minutes > allowance
        assert p.delay == 60 / p.per_minute
    else:
        assert allowance < minutes
        # Sends at 0, d, 2d, ... inside [0, H): ceil(H / d) of them.
        assert math.ceil(minutes * 60 / Fraction(p.delay)) <= allowance
        assert p.delay == math.ceil(p.delay)
        # Rounded up by less than a second: not needlessly slow.
        assert Fraction(p.delay) - 1 < minutes * 60 / allowance
