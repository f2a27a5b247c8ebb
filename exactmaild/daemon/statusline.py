"""The daemon's one-line status: systemd's STATUS= (shown by `systemctl status`).

Built from the same `Snapshot` the metrics and `exactmaild status` read, so
the three never disagree; written again only when it changes.
"""

from __future__ import annotations

import math
from zoneinfo import ZoneInfo

from exactmaild.core.schedule import describe_next
from exactmaild.outbox.levels import Snapshot


def status_line(
    s: Snapshot, *, pause_reason: str, next_check: float, tz: ZoneInfo, now: float
) -> str:
    """E.g. "sent 12/500 in window, 488 left, 3 queued, next check today 12:00"."""
    parts = [
        f"sent {s.sent_in_window}/{s.daily_limit} in window",
        f"{s.remaining} left",
        f"{s.queue.get('queued', 0)} queued",
    ]
    if s.queue.get("deferred"):
        parts.append(f"{s.queue['deferred']} deferred")
    if s.paused:
        parts.append("PAUSED: " + pause_reason)
    if not s.storage_ok:
        parts.append("STORAGE PROBLEM")
    if math.isfinite(next_check):
        parts.append("next check " + describe_next(next_check, tz, now=now))
    return ", ".join(parts)
