"""A recipient list sent in several transactions: the server's limit, and the rest.

Servers take a limited number of recipients per transaction (Google: 100
over SMTP; Microsoft 365: 500). `outgoing.max_recipients` splits a longer
list before the server refuses it; a server that refuses anyway answers the
RCPTs past its limit with `452 4.5.3` (RFC 5321 4.5.3.1.10; RFC 3463 X.5.3
"too many recipients"). Either way the transaction goes to the recipients
accepted so far and the rest follow at once, in the next transaction(s) on
the same connection (`finish()`), all under the one reservation of the
message: `limit_counts: messages` counts it once, `recipients` each
recipient once.

Between two transactions the recipients that have it are recorded durably
(the Claim's `progress()`, the same record a partial send keeps): a crash
before the rest went out never sends it to them again.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable

from exactmaild.core.errors import AccountFailure, PermanentFailure, TemporaryFailure
from exactmaild.send.transport import Replies, SendResult, Transaction

# RFC 3463 3.6: X.5.3 "Too many recipients". RFC 5321 4.5.3.1.10 names 452
# the reply, and asks clients to take the 552 that RFC 821 listed as
# temporary too; servers without enhanced codes say it in words.
_TOO_MANY_CODE = re.compile(r"^\s*[45]\.5\.3\b")
_TOO_MANY_WORDS = re.compile(r"too many recipients", re.IGNORECASE)
_ENHANCED = re.compile(r"^\s*[245]\.\d{1,3}\.\d{1,3}\b")
_REPLY_CODE = re.compile(r"\b([45]\d\d)\b")


def over_recipient_limit(code: int, text: str) -> bool:
    """A reply to RCPT saying the transaction has all the recipients it can
    take (not that this recipient is refused): `452 4.5.3 Your message has
    too many recipients` (Gmail), `452 Too many recipients` (no enhanced code),
    or RFC 821's `552` for the same."""
    if code not in (452, 552):
        return False
    if _ENHANCED.match(text):
        return bool(_TOO_MANY_CODE.match(text))
    return bool(_TOO_MANY_WORDS.search(text))


Recipients = tuple[str, ...]


def chunk(recipients: Recipients, limit: int | None) -> tuple[Recipients, Recipients]:
    """The recipients of one transaction, and the rest (outgoing.max_recipients)."""
    if limit is None or len(recipients) <= limit:
        return recipients, ()
    return recipients[:limit], recipients[limit:]


Progress = Callable[[Recipients], None]


def finish(tx: Transaction, result: SendResult, progress: Progress) -> SendResult:
    """Send the message to `result.later` in further transactions on the same
    connection, until nobody is left; one SendResult for them all.

    Each transaction's outcome stays its recipients': one that fails after
    earlier ones were accepted leaves its recipients (and those after them)
    deferred or refused with its reply, and the message is settled as a
    partial send (retried for the deferred ones only)."""
    accepted = list(result.accepted)
    refused: Replies = dict(result.refused)
    deferred: Replies = dict(result.deferred)
    reply, later = result.reply, result.later
    while later:
        try:
            # Durable before the next final dot: a crash from here on never
            # sends it again to those who have it.
            progress(tuple(accepted) + tuple(refused))
            tx = tx.again(later)
            tx.end()
            part = tx.reply()
        except (OSError, sqlite3.Error) as exc:
            # The record cannot be written: the rest waits for a retry rather
            # than risk a second copy for these after a crash.
            deferred.update(dict.fromkeys(later, (451, f"not sent yet: storage problem ({exc})")))
            break
        except (AccountFailure, TemporaryFailure) as exc:  # UnknownOutcome too
            deferred.update(dict.fromkeys(later, _as_reply(exc, 451)))
            break
        except PermanentFailure as exc:
            each = getattr(exc, "refused", None)
            refused.update(
                each if isinstance(each, dict) else dict.fromkeys(later, _as_reply(exc, 554))
            )
            break
        accepted.extend(part.accepted)
        refused.update(part.refused)
        deferred.update(part.deferred)
        reply, later = part.reply or reply, part.later
    return SendResult(tuple(accepted), refused, deferred, reply)


def _as_reply(exc: Exception, default: int) -> tuple[int, str]:
    """An error as a recipient's reply: the server's code where the text has it."""
    text = str(exc)
    m = _REPLY_CODE.search(text)
    return (int(m.group(1)) if m else default), text
