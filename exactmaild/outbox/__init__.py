"""The outbox: every queued message's life, from `new/` to sent or failed.

- `Outbox` (outbox.py): the queue's lifecycle, and the one owner of a
  message's state: spool renames, state rows, the queue index, the ledger;
- `Claim` (claim.py): one send in flight, a small state machine;
- `Spool` (spool.py): the only code that renames or removes spool files;
- the queue index in memory (index.py) and the levels everyone reports
  (levels.py).
"""

from exactmaild.outbox.claim import Claim, OutOfOrder, Phase, Queued, Settlement
from exactmaild.outbox.index import Fifo, RetryIndex
from exactmaild.outbox.levels import Snapshot
from exactmaild.outbox.outbox import Outbox
from exactmaild.outbox.recovery import MAX_CRASH_CLAIMS
from exactmaild.outbox.spool import REASON_SUFFIX, Entry, Spool, new_queue_id, valid_name
from exactmaild.outbox.storage import is_storage_problem

__all__ = [
    "MAX_CRASH_CLAIMS",
    "REASON_SUFFIX",
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
    "new_queue_id",
    "valid_name",
]
