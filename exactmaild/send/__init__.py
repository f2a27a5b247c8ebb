"""Sending: the thread that drains the outbox over SMTP, paced and capped.

The API is declared here and imported on first use (PEP 562): the command
line's `submit` and `exactmaild-sendmail` need `send.message` on every
call, and must not pay for smtplib, ssl and inotify to get it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exactmaild.core.lazy import lazy_attributes

if TYPE_CHECKING:
    from exactmaild.send.message import prepare
    from exactmaild.send.prepared import Prepared
    from exactmaild.send.sender import Sender
    from exactmaild.send.smtp import SmtpConnection
    from exactmaild.send.transport import SendResult, Transaction, Transport

_WHERE = {
    "Prepared": "prepared",
    "prepare": "message",
    "Sender": "sender",
    "SmtpConnection": "smtp",
    "SendResult": "transport",
    "Transaction": "transport",
    "Transport": "transport",
}
__all__ = [
    "Prepared",
    "SendResult",
    "Sender",
    "SmtpConnection",
    "Transaction",
    "Transport",
    "prepare",
]

__getattr__ = lazy_attributes(__name__, _WHERE)
