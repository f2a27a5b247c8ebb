"""The levels of the queue and the allowance, as one frozen `Snapshot`.

The sender takes it under its lock; the metrics exposition, the systemd
STATUS= line and `exactmaild status` all read the same figures from it, so
they never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Snapshot:
    """The levels monitoring reads, as of `now`."""

    sent_in_window: int
    sent_elsewhere_in_window: int
    daily_limit: int
    remaining: int
    window_reset_seconds: float
    queue: dict[str, int] = field(default_factory=dict)  # state -> count
    oldest_queued_age_seconds: float = 0.0
    last_send_timestamp: float | None = None
    last_receive_check_timestamp: float | None = None
    paused: bool = False
    storage_ok: bool = True
