"""Receiving: mailbox checks on the schedule, delivered into a Maildir.

- `CheckScheduler` (scheduler.py): when the next check is due, one check
  at a time in its own thread, and what its result changes;
- `Receiver` (receiver.py): one check, returning a `CheckResult`: new
  messages fetched, delivered into the Maildir, then their position
  recorded (never twice across crashes), and the Sent folder counted;
- `mailbox/`: the IMAP and POP3 adapters, the only users of imaplib and
  poplib; `attachments.py`: keep, strip or extract attachments.

Imported on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exactmaild.core.lazy import lazy_attributes

if TYPE_CHECKING:
    from exactmaild.receive.receiver import CheckResult, Receiver
    from exactmaild.receive.scheduler import CheckScheduler

_WHERE = {
    "CheckScheduler": "scheduler",
    "CheckResult": "receiver",
    "Receiver": "receiver",
}
__all__ = [
    "CheckResult",
    "CheckScheduler",
    "Receiver",
]

__getattr__ = lazy_attributes(__name__, _WHERE)
