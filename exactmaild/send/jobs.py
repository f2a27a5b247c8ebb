"""A queued message made ready to send: prepared, and weighed against the limit.

Preparation (`send.message.prepare`) adds what the practice's mail needs
(From, Message-ID, Date, the signature; Bcc stripped) and skips recipients
that already have it; the weight is what the send counts against the daily
limit (`send.limit_counts`: 1 per message, or 1 per recipient).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exactmaild.config.model import Config
from exactmaild.outbox import Queued
from exactmaild.send import message as msgmod


@dataclass(frozen=True)
class Job:
    queued: Queued
    prepared: msgmod.Prepared
    units: int


def read_signature(cfg: Config) -> str | None:
    return None if cfg.send.signature is None else Path(cfg.send.signature).read_text("utf-8")


def job_for(q: Queued, cfg: Config, signature: str | None) -> Job:
    """Raises BadMessage for a message that can never be sent."""
    prepared = msgmod.prepare(
        q.raw,
        sender=cfg.account.address,
        display_name=cfg.account.display_name,
        signature=signature,
        max_size=cfg.spool.max_message_size,
        skip_recipients=q.info.done_rcpts if q.info else (),
    )
    units = 1 if cfg.send.limit_counts == "messages" else len(prepared.recipients)
    return Job(q, prepared, max(1, units))
