"""`queue show`, `queue send-now`, and the batch operations `queue
cancel|hold|release|retry`, as postsuper has them.

A batch names messages by id, or selects them with `--all`, narrowed by
`--state`, `--to` (any recipient) and `--subject` (a part of it, any case).
Each message is moved by one rename (`Spool`), so a message the daemon claims
at the same moment is either moved or sent, never both. A running daemon is
told to re-read the spool ("rescan" on the control socket): what left `new/`
or `deferred/` must leave its queue index too. A cancelled message gets its
history record here, since the daemon never sees it go.

`send-now` needs the running daemon: it puts the message first in the
daemon's queue, where pacing, the window and the daily cap still decide when
it goes.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from exactmaild.cli.history import local, reading_store, render_record
from exactmaild.cli.report import say
from exactmaild.core.errors import EX_OK, EX_UNAVAILABLE, NotAvailable, UsageError
from exactmaild.core.states import (
    ACTIVE,
    CANCELLABLE,
    CANCELLED,
    DEFERRED,
    HOLD,
    LATER,
    NEW,
    PUBLIC_NAME,
    RETRYABLE,
    State,
)
from exactmaild.outbox.record import header_section, recipients_of, subject_of

if TYPE_CHECKING:
    from exactmaild.config.model import Config
    from exactmaild.outbox.spool import Spool
    from exactmaild.store.history import Delivery

# Where each operation takes a message from.
SOURCES: dict[str, tuple[State, ...]] = {
    "cancel": CANCELLABLE,
    "hold": (NEW, DEFERRED, LATER),
    "release": (HOLD,),
    "retry": RETRYABLE,
}
DONE = {"cancel": "cancelled", "hold": "held", "release": "released", "retry": "queued again"}
_HEAD = 64 * 1024


def _owner(path: Path) -> str:
    import pwd

    uid = path.lstat().st_uid
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _head(spool: Spool, state: State, qid: str) -> bytes:
    try:
        return header_section(spool.read(state, qid, _HEAD))
    except OSError:
        return b""


def _tell_daemon(cfg: Config, command: str) -> bool:
    """Send a control command to the running daemon; False if none runs."""
    from exactmaild.daemon.control import daemon_running, send_control

    if not daemon_running(cfg.state_dir):
        return False
    send_control(cfg, command)
    return True


# -- queue show ---------------------------------------------------------------------


def show(cfg: Config, spool: Spool, qid: str) -> int:
    """A message in the spool (its state, tries, last error, next retry,
    recipients), or, once it has left, its history record."""
    tz = ZoneInfo(cfg.timezone)
    entry = spool.find(qid)
    with reading_store(cfg) as st:
        rec = None
        info = st.message(qid) if st is not None else None
        pending: tuple[Delivery, ...] = ()
        if st is not None:
            # A database from before the history has no such table yet.
            with contextlib.suppress(sqlite3.OperationalError):
                rec = st.finished(qid)
                pending = st.pending_deliveries(qid)
    if entry is None:
        if rec is None:
            raise NotAvailable(
                f"no message {qid} in the spool {cfg.spool.dir}, nor in the history "
                f"(kept {cfg.history_days} days): `exactmaild queue list` shows the queue, "
                "`exactmaild history` what left it"
            )
        print("\n".join(render_record(rec, tz)))
        return EX_OK
    from exactmaild.send import message

    print(f"id: {qid}\nstate: {PUBLIC_NAME[entry.state]}\nsize: {entry.size} bytes")
    # Who submitted it: the kernel's record, the file's owner (producers
    # create their own files in the spool, and no one can give a file away).
    print(f"submitted by: {_owner(entry.path)}")
    head = b""
    if entry.path.is_file() and not entry.path.is_symlink():
        head = _head(spool, entry.state, qid)
        for k, v in message.summary_headers(head).items():
            print(f"{k.lower()}: {v}")
    print(f"queued: {local(entry.mtime, tz)}")
    tries = info.tries if info else 0
    print(f"tries: {tries}")
    if info and info.last_error:
        print(f"last error: {info.last_error}")
    if entry.state == DEFERRED and info and info.next_try:
        print(f"next retry: {local(info.next_try, tz)}")
    if entry.state == LATER:
        from exactmaild.outbox.later import time_of

        at = time_of(spool, LATER, qid)
        print(f"scheduled for: {'now' if at is None else local(at, tz)}")
    reason = spool.reason(qid)
    if reason:
        print(f"reason: {reason.strip()}")
    got = {d.address: d for d in pending}
    rcpts = recipients_of(head)
    if rcpts:
        print("recipients:")
        for addr in rcpts:
            d = got.get(addr)
            what = f"{d.status}: {d.reply}" if d else "waiting"
            print(f"  {addr}  {what}")
    if rec is not None:
        print("last finished:")
        print("\n".join("  " + line for line in render_record(rec, tz)))
    return EX_OK


# -- queue send-now -------------------------------------------------------------------


def send_now(cfg: Config, spool: Spool, qid: str) -> int:
    entry = spool.find(qid)
    if entry is None:
        raise NotAvailable(
            f"no message {qid} in the spool {cfg.spool.dir}: "
            "`exactmaild queue list` shows the queue"
        )
    if entry.state == ACTIVE:
        print(f"{qid}: being sent right now")
        return EX_OK
    if entry.state == LATER:
        raise UsageError(
            f"{qid} is scheduled (its Deferred-Delivery header) and goes at its time; "
            "to send it now, `exactmaild queue cancel` it and submit it again without "
            "the header (or with `submit --at` an earlier time)"
        )
    from exactmaild.daemon.control import daemon_running

    if not daemon_running(cfg.state_dir):
        raise NotAvailable(
            f"send-now asks the running daemon to send {qid} next, and no daemon holds "
            f"{cfg.state_dir}; start it (`systemctl start exactmaild`, or `exactmaild run "
            "--daemon` without systemd)"
        )
    was = ""
    if entry.state not in (NEW, DEFERRED):
        spool.retry(qid)  # from hold/, failed/ or cancelled/ back into new/
        was = f" (was {PUBLIC_NAME[entry.state]}, queued again)"
    _tell_daemon(cfg, f"send-now {qid}")
    print(
        f"{qid}: sends next{was}, as soon as the delay since the last send, "
        "the sending hours and the daily limit allow"
    )
    return EX_OK


# -- queue cancel|hold|release|retry --------------------------------------------------


def _states(op: str, state: str | None) -> tuple[State, ...]:
    sources = SOURCES[op]
    if state is None:
        return sources
    by_name = {PUBLIC_NAME[s]: s for s in sources}
    if state not in by_name:
        raise UsageError(
            f"queue {op} takes messages that are {', '.join(by_name)}; "
            f"--state {state} is not one of them"
        )
    return (by_name[state],)


def _select(
    spool: Spool, states: tuple[State, ...], to: str | None, subject: str | None
) -> Iterator[str]:
    want_to = to.strip().lower() if to else None
    want_subject = subject.lower() if subject else None
    for e in spool.entries(states):
        if want_to is None and want_subject is None:
            yield e.queue_id
            continue
        head = _head(spool, e.state, e.queue_id)
        if want_to is not None and want_to not in (r.lower() for r in recipients_of(head)):
            continue
        if want_subject is not None and want_subject not in subject_of(head).lower():
            continue
        yield e.queue_id


def _apply(spool: Spool, op: str, qid: str) -> State:
    if op == "cancel":
        return spool.cancel(qid)
    if op == "hold":
        return spool.hold(qid)
    if op == "release":
        return spool.release(qid)
    return spool.retry(qid)


def _not_done(spool: Spool, op: str, qid: str) -> str:
    entry = spool.find(qid)
    if entry is None:
        return f"{qid}: no such message in the spool"
    if entry.state == ACTIVE:
        return f"{qid}: being sent right now, it can no longer be stopped"
    takes = ", ".join(PUBLIC_NAME[s] for s in SOURCES[op])
    return f"{qid}: it is {PUBLIC_NAME[entry.state]}; queue {op} takes messages that are {takes}"


def batch(cfg: Config, spool: Spool, args: argparse.Namespace) -> int:
    op: str = args.queue_command
    if args.ids and args.all:
        raise UsageError(f"queue {op}: name messages by id, or select them with --all, not both")
    if not args.ids and not args.all:
        raise UsageError(
            f"queue {op}: name the messages (ID ...), or select them with "
            "--all [--state S] [--to ADDR] [--subject TEXT]"
        )
    if not args.all and (args.state or args.to or args.subject):
        raise UsageError(f"queue {op}: --state, --to and --subject narrow --all")
    names = list(args.ids) or list(_select(spool, _states(op, args.state), args.to, args.subject))
    done: list[str] = []
    problems: list[str] = []
    for qid in names:
        try:
            was = _apply(spool, op, qid)
        except FileNotFoundError:
            problems.append(_not_done(spool, op, qid))
            continue
        done.append(qid)
        print(f"{qid}: {DONE[op]} (was {PUBLIC_NAME[was]})")
    if op == "cancel" and done:
        _record_cancelled(cfg, spool, done)
    if done:
        with contextlib.suppress(OSError):
            _tell_daemon(cfg, "rescan")
    if args.all:
        print(f"{len(done)} message{'' if len(done) == 1 else 's'} {DONE[op]}")
    for p in problems:
        say(p)
    return EX_UNAVAILABLE if problems else EX_OK


def _record_cancelled(cfg: Config, spool: Spool, names: list[str]) -> None:
    """The history records of cancelled messages (the daemon never sees them go)."""
    from exactmaild.outbox.record import for_unsent, merge, user_name
    from exactmaild.store.state import DB_NAME, StateStore

    if not (cfg.state_dir / DB_NAME).exists():
        return
    by = getpass.getuser()
    reason = f"cancelled by {by} with `exactmaild queue cancel`"
    now = time.time()
    try:
        st = StateStore(cfg.state_dir, create=False)
        try:
            for qid in names:
                raw = spool.read(CANCELLED, qid, _HEAD)
                uid, queued_at = spool.owner(CANCELLED, qid)
                info = st.message(qid)
                rec = for_unsent(
                    qid,
                    raw,
                    "cancelled",
                    reason,
                    user_name(uid),
                    queued_at,
                    info.tries if info else 0,
                    now,
                )
                pending = st.pending_deliveries(qid)
                if pending:
                    rcpts = merge(header_section(raw), pending, ("not sent", reason), now)
                    rec = replace(rec, recipients=rcpts)
                st.record_finished(rec)
        finally:
            st.close()
    except (OSError, sqlite3.Error) as exc:
        say(f"the cancellation stands, but it is not in the history: {exc}")


__all__ = ["batch", "send_now", "show"]
