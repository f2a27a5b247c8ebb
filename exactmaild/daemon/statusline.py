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
    """E.g. "sent 12/500 in window, 488 left, 3 queued, all sent by today 10:36,
    next check today 12:00"; what blocks sending ("window closed, opens
    tomorrow 08:00") and when the queue will have gone come from the forecast."""
    parts = [
        f"sent {s.sent_in_window}/{s.daily_limit} in window",
        f"{s.remaining} left",
        f"{s.queue.get('queued', 0)} queued",
    ]
    if s.queue.get("deferred"):
        parts.append(f"{s.queue['deferred']} deferred")
    if s.queue.get("scheduled"):
        parts.append(f"{s.queue['scheduled']} scheduled")
    if s.paused:
        parts.append("PAUSED: " + pause_reason)
    if not s.storage_ok:
        parts.append("STORAGE PROBLEM")
    if s.blocked_by in ("window", "limit") and s.resumes_at is not None:
        what = "window closed, opens" if s.blocked_by == "window" else "limit reached, resets"
        parts.append(f"{what} {describe_next(s.resumes_at, tz, now=now)}")
    if s.queue_done_at is not None:
        parts.append("all sent by " + describe_next(s.queue_done_at, tz, now=now))
    if math.isfinite(next_check):
        parts.append("next check " + describe_next(next_check, tz, now=now))
    return ", ".join(parts)
