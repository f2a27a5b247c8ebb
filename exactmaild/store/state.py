"""The state store: the one object through which exactmaild writes its
durable state, combined from the parts of the store package.

`StateStore` is one SQLite database (see `db`) and every operation on it:
send attempts and the limit (`sends`), per-message retry state
(`messages`), the sent history (`history`), small facts for `status` and
the metrics (`facts`), and the receive positions (`positions`). Each part is a class over the same
`Database`; this module puts them together and keeps the names other
modules import from here.
"""

from __future__ import annotations

from exactmaild.store.db import DB_NAME
from exactmaild.store.facts import Facts
from exactmaild.store.history import Delivery, Finished, HistoryRecords
from exactmaild.store.messages import MessageInfo, MessageRecords
from exactmaild.store.positions import ReceivePositions
from exactmaild.store.sends import COUNTED, CRASHED, Attempt, SendRecords

__all__ = [
    "COUNTED",
    "CRASHED",
    "DB_NAME",
    "Attempt",
    "Delivery",
    "Finished",
    "MessageInfo",
    "StateStore",
]


class StateStore(SendRecords, MessageRecords, HistoryRecords, Facts, ReceivePositions):
    """Durable state. Thread-safe: the sender and the receiver share one store.

    `StateStore(state_dir)` opens (and, unless `create=False`, creates) the
    database under `state_dir`; every part shares its two connections.
    """
