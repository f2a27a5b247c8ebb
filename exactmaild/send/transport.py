"""What the sender needs of a way to send: a transaction split at its final dot.

`Transport.begin()` sends everything the server cannot act on yet (MAIL,
RCPT, DATA); `Transaction.end()` sends the body and the final dot, from
which the server may take the message; `Transaction.reply()` reads the
verdict as a `SendResult` or raises per the error tree. The split is where
the sender makes its reservation durable. Where the server pipelines
(`Transaction.pipelined`), `Transaction.follow()` begins the next message's
transaction in the same write as this one's final dot, before its verdict:
one more transaction in flight, one round trip a message. A recipient list
longer than a transaction may hold comes back in `SendResult.later`, and
`Transaction.again()` sends the same message to them on the same connection
(`exactmaild.send.split`).
`exactmaild.send.smtp` is the one implementation; tests pass scripted ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

# Per recipient: the SMTP reply code and text.
Replies = dict[str, tuple[int, str]]


@dataclass(frozen=True)
class SendResult:
    """The server took the message for `accepted`; some recipients may have
    been refused for good, or deferred (a 4xx to their RCPT). `later`: not in
    this transaction (past outgoing.max_recipients, or the server's 452 4.5.3),
    to go in the next one at once."""

    accepted: tuple[str, ...]
    refused: Replies = field(default_factory=dict)
    deferred: Replies = field(default_factory=dict)
    reply: str = ""
    later: tuple[str, ...] = ()


class Transaction(Protocol):
    @property
    def pipelined(self) -> bool: ...
    def end(self) -> None: ...
    def follow(self, sender: str, recipients: tuple[str, ...], data: bytes) -> Transaction: ...
    def reply(self) -> SendResult: ...
    def again(self, recipients: tuple[str, ...]) -> Transaction: ...
    def abandon(self) -> None: ...


class Transport(Protocol):
    @property
    def connected(self) -> bool: ...
    def begin(self, sender: str, recipients: tuple[str, ...], data: bytes) -> Transaction: ...
    def close(self) -> None: ...
    def abort(self) -> None: ...
