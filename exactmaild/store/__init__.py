"""The durable state of exactmaild: everything that must survive a crash.

- `StateStore`: the SQLite database of send attempts, retry state, facts and
  receive positions (`state`, built from `db`, `sends`, `messages`, `facts`
  and `positions`), with the records it returns, `Attempt` and
  `MessageInfo`, and `DB_NAME`, its file under the state directory;
- `write_new` and `fsync_dir` (`durable`): creating a file and making a
  rename survive a power cut, which the spool and the Maildir build on;
- `maildir`: delivering one message into a Maildir (`maildir.deliver`), for
  the mailbox checks and the delivery status notices alike;
- `running`: the copy of the configuration the daemon runs, which the
  commands fall back to when the file on disk is refused.

The state store is imported on first use, not with the package: the spool
(and so `exactmaild sendmail`, run once per message by PHP's `mail()`) needs
only the durable writes, not SQLite.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exactmaild.core.lazy import lazy_attributes
from exactmaild.store.durable import fsync_dir, write_new

if TYPE_CHECKING:
    from exactmaild.store import maildir
    from exactmaild.store.facts import SentElsewhere
    from exactmaild.store.state import DB_NAME, Attempt, MessageInfo, StateStore

__all__ = [
    "DB_NAME",
    "Attempt",
    "MessageInfo",
    "SentElsewhere",
    "StateStore",
    "fsync_dir",
    "maildir",
    "write_new",
]

# Where each name not imported above lives (PEP 562 lazy attributes).
__getattr__ = lazy_attributes(
    __name__,
    {
        "DB_NAME": "state",
        "Attempt": "state",
        "MessageInfo": "state",
        "SentElsewhere": "facts",
        "StateStore": "state",
        "maildir": "maildir",
    },
)
