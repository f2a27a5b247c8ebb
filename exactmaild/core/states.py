"""The states of a spooled message: a leaf module, like Supervisor's states.py.

Each state is a directory of the spool, and a message is in exactly one of
them at any time (every change of state is a rename). Everything that lists,
counts or names the states takes them from here.
"""

from __future__ import annotations

from typing import Final, Literal

State = Literal["new", "active", "deferred", "later", "hold", "failed", "cancelled"]

NEW: Final = "new"  # queued: producers rename their messages in here
ACTIVE: Final = "active"  # claimed for sending: can no longer be cancelled
DEFERRED: Final = "deferred"  # waiting for a retry after a temporary failure
LATER: Final = "later"  # scheduled: waiting for its Deferred-Delivery time
HOLD: Final = "hold"  # parked for a person (an unknown outcome, on_unknown_outcome: hold)
FAILED: Final = "failed"  # failed for good, with NAME.reason beside it
CANCELLED: Final = "cancelled"  # cancelled with `exactmaild queue cancel`

STATES: tuple[State, ...] = (NEW, ACTIVE, DEFERRED, LATER, HOLD, FAILED, CANCELLED)
# The producers' directory: not a state, a message is only being written there.
TMP: Final = "tmp"

# The names status, `queue list` and the metrics use ("queued", not "new").
PUBLIC_NAME: dict[State, str] = {
    NEW: "queued",
    ACTIVE: "active",
    DEFERRED: "deferred",
    LATER: "scheduled",
    HOLD: "hold",
    FAILED: "failed",
    CANCELLED: "cancelled",
}
# The states the queue's levels are reported in (a cancelled message is gone).
REPORTED: tuple[State, ...] = (NEW, ACTIVE, DEFERRED, LATER, HOLD, FAILED)
# Where a message may be cancelled from, and where `queue retry` takes it from.
CANCELLABLE: tuple[State, ...] = (NEW, DEFERRED, LATER, HOLD)
RETRYABLE: tuple[State, ...] = (FAILED, DEFERRED, HOLD, CANCELLED)
# Where a send is claimed from.
WAITING: tuple[State, ...] = (NEW, DEFERRED)
