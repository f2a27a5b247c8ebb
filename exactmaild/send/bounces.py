"""Telling the practice that mail failed: a notice into its own inbox.

When a message fails for good, the practice gets an RFC 3464 delivery status
notice (built by `exactmaild.send.dsn`) delivered into `receive.maildir`,
as any bounce would arrive. It never goes over SMTP, so it costs nothing
against the sending limit. None is made for a message that is itself a
notice or auto-submitted, nor without an incoming side (then the log and the
reason file say it).
"""

from __future__ import annotations

import re
import socket

from exactmaild.config.model import Config
from exactmaild.core.log import Log
from exactmaild.outbox import Claim, Outbox
from exactmaild.send import dsn
from exactmaild.send import message as msgmod
from exactmaild.send.replies import AllRefused
from exactmaild.send.transport import Replies
from exactmaild.store import maildir


def failures_of(replies: Replies) -> list[dsn.Failure]:
    return [dsn.Failure(r, c, t) for r, (c, t) in replies.items()]


def failure_from_text(recipient: str, text: str) -> dsn.Failure:
    """A Failure from one of our error texts, picking the SMTP code out of it."""
    m = re.search(r"\b([245]\d\d)[ -](.*)", text)
    if m:
        return dsn.Failure(recipient, int(m.group(1)), m.group(2))
    return dsn.Failure(recipient, 0, text)


def failures_for(recipients: tuple[str, ...], exc: Exception) -> list[dsn.Failure]:
    """Every recipient of a message refused as a whole (or each, when all were refused)."""
    if isinstance(exc, AllRefused) and exc.refused:
        return failures_of(exc.refused)
    return [failure_from_text(r, str(exc)) for r in recipients]


def failures_in(raw: bytes, done: tuple[str, ...], error: str) -> list[dsn.Failure]:
    """The recipients of a failed message that never got it, each with `error`."""
    try:
        rcpts = [r for r in msgmod.recipients(msgmod.parse(raw)) if r not in done]
    except Exception:  # a message we could send has readable headers; be safe
        rcpts = []
    return [failure_from_text(r, error) for r in rcpts]


def deliver_notice(
    cfg: Config,
    raw: bytes,
    failures: list[dsn.Failure],
    delivered_to: tuple[str, ...],
    log: Log,
    now: float,
) -> None:
    """Deliver an RFC 3464 notice into receive.maildir: never sent, never counted."""
    if not failures:
        return
    if dsn.is_notice(raw):
        log.info("notice_skipped", reason="the failed message is itself a notice")
        return
    if cfg.receive is None:
        log.info(
            "notice_skipped",
            reason="no receive.maildir (incoming: none): the failure is in the log "
            "and the reason file only",
        )
        return
    try:
        data = dsn.build(
            raw,
            failures,
            to=cfg.account.address,
            reporting_host=socket.getfqdn(),
            now=now,
            delivered_to=delivered_to,
        )
        path = maildir.deliver(cfg.receive.maildir, data)
    except (OSError, ValueError) as exc:
        log.error("notice_failed", error=str(exc))
        return
    log.info("notice_delivered", path=str(path), recipients=len(failures))


def notify_failed(
    cfg: Config,
    outbox: Outbox,
    claim: Claim,
    failures: list[dsn.Failure] | None,
    log: Log,
    now: float,
    *,
    error: str = "",
    done: tuple[str, ...] | None = None,
) -> None:
    """A notice of a claimed message that just failed for good: `failures`
    per recipient, or every recipient that does not have it yet, with `error`."""
    try:
        raw = outbox.read_failed(claim.name, cfg.spool.max_message_size)
    except OSError as exc:
        log.warning("notice_skipped", reason=f"cannot read the failed message: {exc}")
        return
    if done is None:
        done = claim.info.done_rcpts if claim.info else ()
    if failures is None:
        failures = failures_in(raw, done, error)
    deliver_notice(cfg, raw, failures, done, log, now)
