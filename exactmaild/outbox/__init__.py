"""The outbox: every queued message's life, from `new/` to sent or failed.

- `Outbox` (outbox.py): the queue's lifecycle, and the one owner of a
  message's state: spool renames, state rows, the queue index, the ledger;
- `Claim` (claim.py): one send in flight, a small state machine;
- `Spool` (spool.py): the only code that renames or removes spool files;
- the queue index in memory (index.py) and the levels everyone reports
  (levels.py);
- the Message-ID and Date a message lacks, assigned once (stamp.py).

Imported on first use (PEP 562): `exactmaild-sendmail` and `submit` need
only the spool, not the Claim (structlog) nor the state store (SQLite).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exactmaild.core.lazy import lazy_attributes

if TYPE_CHECKING:
    from exactmaild.outbox.claim import Claim, OutOfOrder, Phase, Queued, Settlement
    from exactmaild.outbox.index import Fifo
    from exactmaild.outbox.levels import Snapshot
    from exactmaild.outbox.outbox import Outbox
    from exactmaild.outbox.recovery import MAX_CRASH_CLAIMS
    from exactmaild.outbox.retries import RetryIndex
    from exactmaild.outbox.spool import REASON_SUFFIX, Entry, Spool, new_queue_id, valid_name
    from exactmaild.outbox.stamp import Born, missing_headers
    from exactmaild.outbox.storage import is_storage_problem

_WHERE = {
    "Claim": "claim",
    "OutOfOrder": "claim",
    "Phase": "claim",
    "Queued": "claim",
    "Settlement": "claim",
    "Fifo": "index",
    "RetryIndex": "retries",
    "Snapshot": "levels",
    "MAX_CRASH_CLAIMS": "recovery",
    "Outbox": "outbox",
    "REASON_SUFFIX": "spool",
    "Entry": "spool",
    "Spool": "spool",
    "new_queue_id": "spool",
    "valid_name": "spool",
    "Born": "stamp",
    "missing_headers": "stamp",
    "is_storage_problem": "storage",
}
__all__ = [
    "MAX_CRASH_CLAIMS",
    "REASON_SUFFIX",
    "Born",
    "Claim",
    "Entry",
    "Fifo",
    "OutOfOrder",
    "Outbox",
    "Phase",
    "Queued",
    "RetryIndex",
    "Settlement",
    "Snapshot",
    "Spool",
    "is_storage_problem",
    "missing_headers",
    "new_queue_id",
    "valid_name",
]

__getattr__ = lazy_attributes(__name__, _WHERE)
