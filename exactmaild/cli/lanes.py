"""How the priority lanes read in `status` and `status --json`.

The forecast (`core.forecast`) gives, per lane with mail waiting, how many
messages and when the last of them goes; `status` shows it on one line under
the queue while urgent or bulk mail waits ("2 urgent by today 10:05, 300
bulk by tomorrow 10:35"), so the
practice sees that the appointment changes go before the recall batch.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from exactmaild.core.forecast import Forecast
from exactmaild.core.lanes import LANES, Lane
from exactmaild.core.schedule import describe_next


def lanes_json(f: Forecast, tz: ZoneInfo) -> dict[str, dict[str, Any]]:
    """Every lane: messages waiting and when its last one goes (ISO 8601, or null)."""
    out: dict[str, dict[str, Any]] = {ln: {"waiting": 0, "done_at": None} for ln in LANES}
    for lane, n, done in f.lanes:
        at = None if done is None else dt.datetime.fromtimestamp(done, tz)
        out[lane] = {"waiting": n, "done_at": at and at.isoformat(timespec="seconds")}
    return out


def lanes_text(lanes: tuple[tuple[Lane, int, float | None], ...], tz: ZoneInfo, now: float) -> str:
    """The lanes line of `status`; "" while all that waits is normal mail
    (the queue line says it all then)."""
    if all(lane == "normal" for lane, _, _ in lanes):
        return ""
    parts = []
    for lane, n, done in lanes:
        by = "never" if done is None else describe_next(done, tz, now=now)
        parts.append(f"{n} {lane} by {by}" if by != "now" else f"{n} {lane} now")
    return ", ".join(parts)
