"""The send section: pacing, the daily limit and its reserve, retries and pauses.

`send` applies the cross-key rules (one of delay or per_minute, `delay: auto`
from the limit over the schedule's window, a reserve below the limit) and
warns when an explicit pacing would spend the day's allowance before the
sending window ends. A provider preset's limits are the defaults of the
limit keys (`Origins` notes where each value came from). Called by the
top-level walk in `exactmaild.config.load`.
"""

from __future__ import annotations

import math
from typing import Literal, cast

from yaml.nodes import ScalarNode

from exactmaild.config import convert as conv
from exactmaild.config.model import Incoming, Schedule, Send
from exactmaild.config.origins import Origins
from exactmaild.config.schema import DEFAULT_DAILY_LIMIT, DEFAULT_DELAY, SEND_KEYS
from exactmaild.config.values import span
from exactmaild.config.yamlnodes import Checker, Map, as_str, is_null
from exactmaild.core.pacing import format_seconds, plan


def send_section(
    c: Checker,
    top: Map,
    schedule: Schedule,
    incoming: Incoming | None,
    origins: Origins | None = None,
) -> Send:
    m = c.mapping(top.get("send"), "send", SEND_KEYS, line=top.line)
    origins = origins or Origins(c.file, None)
    for key in ("daily_limit", "limit_window", "limit_counts", "reserve", "max_per_minute"):
        origins.note(m, key, f"send.{key}")
    immediately = c.get(m, "immediately", conv.as_bool, False)
    daily_limit = c.get(m, "daily_limit", conv.positive_int, None)
    reserve = c.get(m, "reserve", conv.as_int, 0)
    limit_ok = daily_limit is not None or not m.given("daily_limit")
    limit = daily_limit or int(str(origins.default("send.daily_limit", DEFAULT_DAILY_LIMIT)))
    max_per_minute = _max_per_minute(c, m, origins)
    reserve_ok = True
    if reserve < 0 or (limit_ok and reserve >= limit):
        c.problem(
            m.key_line("reserve"),
            m.sub("reserve"),
            f"must be at least 0 and below daily_limit ({limit}), got {reserve}",
        )
        reserve_ok = False
    urgent_reserve = c.get(m, "urgent_reserve", conv.as_int, 0)
    if urgent_reserve < 0 or (limit_ok and reserve_ok and urgent_reserve >= limit - reserve):
        c.problem(
            m.key_line("urgent_reserve"),
            m.sub("urgent_reserve"),
            f"must be at least 0 and below daily_limit - reserve ({limit - reserve}), "
            f"got {urgent_reserve}: normal and bulk mail need some of the allowance",
        )
    hours = schedule.window.hours if schedule.window else 24.0

    delay = DEFAULT_DELAY
    source: Literal["delay", "per_minute", "auto"] = "delay"
    if m.given("delay") and m.given("per_minute"):
        c.problem(
            m.key_line("per_minute"),
            m.sub("per_minute"),
            "give either delay or per_minute, not both",
        )
    elif m.given("per_minute"):
        per_minute = c.get(m, "per_minute", conv.positive_int, None)
        if per_minute is not None:
            delay, source = 60.0 / per_minute, "per_minute"
    elif m.given("delay"):
        node = m.get("delay")
        assert node is not None
        if isinstance(node, ScalarNode) and str(node.value).strip().lower() == "auto":
            source = "auto"
            if limit_ok and reserve_ok:
                delay = plan(limit, hours, reserve).delay
        else:
            delay = c.get(m, "delay", conv.duration, DEFAULT_DELAY)

    retry_intervals = c.items(m, "retry_intervals", conv.positive_duration, Send.retry_intervals)
    if retry_intervals is not None and not retry_intervals:
        c.problem(
            m.key_line("retry_intervals"),
            m.sub("retry_intervals"),
            "empty: give at least one interval, e.g. [1m, 5m, 15m, 1h]",
        )
    account_pause = c.items(m, "account_pause", conv.positive_duration, Send.account_pause)
    if account_pause is not None and not account_pause:
        c.problem(
            m.key_line("account_pause"),
            m.sub("account_pause"),
            "empty: give at least one pause, e.g. [1m, 5m, 30m]",
        )
    count_sent_folder = c.get(m, "count_sent_folder", as_str, None)
    if count_sent_folder is not None and (incoming is None or incoming.protocol != "imap"):
        c.warn(
            "send.count_sent_folder needs an imap incoming server: mail sent from webmail "
            "will not be counted against the limit"
        )
    signature = c.get(m, "signature", c.path, None)
    if signature is not None and not signature.is_file():
        c.warn(f"send.signature {signature} does not exist (yet): sending will fail without it")

    if immediately and (m.given("delay") or m.given("per_minute")):
        c.warn("send.delay / send.per_minute are ignored while send.immediately is true")
    # Only a delay the user chose: the built-in 60 s default fits the design's
    # 500 a day over 8 h, and warning about a value nobody wrote is noise.
    explicit = m.given("delay") or m.given("per_minute")
    if not immediately and explicit and limit_ok and reserve_ok:
        gap = 60.0 / max_per_minute if max_per_minute else 0.0
        _warn_fast(c, max(delay, gap), limit, reserve, hours, schedule)

    return Send(
        immediately=immediately,
        delay=delay,
        delay_source=source,
        daily_limit=limit,
        limit_window=cast(
            Literal["calendar_day", "rolling_24h"],
            c.get(
                m,
                "limit_window",
                conv.choice("calendar_day", "rolling_24h"),
                str(origins.default("send.limit_window", "calendar_day")),
            ),
        ),
        limit_counts=cast(
            Literal["messages", "recipients"],
            c.get(
                m,
                "limit_counts",
                conv.choice("messages", "recipients"),
                str(origins.default("send.limit_counts", "messages")),
            ),
        ),
        reserve=reserve,
        urgent_reserve=max(0, urgent_reserve),
        urgent_any_time=c.get(m, "urgent_any_time", conv.as_bool, False),
        max_per_minute=max_per_minute,
        retry_intervals=retry_intervals or Send.retry_intervals,
        give_up_after=c.get(m, "give_up_after", conv.positive_duration, Send.give_up_after),
        on_unknown_outcome=cast(
            Literal["retry", "hold"],
            c.get(m, "on_unknown_outcome", conv.choice("retry", "hold"), "retry"),
        ),
        account_pause=account_pause or Send.account_pause,
        count_sent_folder=count_sent_folder,
        signature=signature,
        local_recipients_to=c.get(m, "local_recipients_to", conv.address, None),
    )


def _max_per_minute(c: Checker, m: Map, origins: Origins) -> int | None:
    """The rate ceiling: the file's (a number, or `none` to lift a preset's),
    else the preset's, else none."""
    node = m.get("max_per_minute")
    if node is None:
        preset = origins.default("send.max_per_minute", None)
        return preset if isinstance(preset, int) else None
    if is_null(node) or (
        isinstance(node, ScalarNode) and str(node.value).strip().lower() in ("none", "off")
    ):
        return None
    return c.get(m, "max_per_minute", conv.positive_int, None)


def _warn_fast(
    c: Checker, delay: float, limit: int, reserve: int, hours: float, schedule: Schedule
) -> None:
    """Warn when the pacing would spend the allowance before the sending window ends.

    Not an error: the hard cap still holds; but the practice would find its
    mail stuck in the afternoon, which is what the delay exists to prevent.
    """
    allowance = limit - reserve
    window_seconds = hours * 3600
    # Sends that fit in the window at this pacing. `plan()` rounds so that its
    # own delay never exceeds the allowance, so `delay: auto` never warns.
    fits = math.inf if delay <= 0 else math.floor(window_seconds / delay)
    if fits <= allowance:
        return
    where = f"the {hours:g} h sending window {schedule.window}" if schedule.window else "the day"
    c.warn(
        f"send: at {format_seconds(delay)} between sends, the {allowance} allowed sends "
        f"(daily_limit {limit} - reserve {reserve}) are used up after "
        f"{span(allowance * delay)} of {where}; then the hard cap stops sending until the "
        f"limit window resets. The safe steady rate is {plan(limit, hours, reserve).describe()} "
        "(delay: auto)"
    )
