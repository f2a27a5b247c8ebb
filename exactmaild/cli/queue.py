"""The commands on the spool: `submit`, and `queue list|show|send-now` (the
batch operations `queue cancel|hold|release|retry` are exactmaild.cli.queue_ops).

`queue_message` is the one way a message enters the spool from the command
line; `submit` and the sendmail front (exactmaild.cli.sendmail) both use it.
The spool, message and state modules are imported inside the functions so
that starting the program stays cheap for the commands that do not need them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exactmaild.cli.paths import load_config, load_running, may_not_queue
from exactmaild.core.errors import (
    EX_OK,
    BadMessage,
    NoPermission,
    TemporaryFailure,
)

if TYPE_CHECKING:
    # Annotations only: exactmaild-sendmail imports this module and parses
    # its flags by hand.
    import argparse

    from exactmaild.config.model import Config
    from exactmaild.outbox.spool import Spool


def _read_input(path: str | None) -> bytes:
    if path and path != "-":
        return Path(path).read_bytes()
    return sys.stdin.buffer.read()


def _is_local(addr: str) -> bool:
    """A bare local name (root, www-data), as cron and scripts address mail."""
    return bool(addr) and "@" not in addr


def local_recipients(cfg: Config, raw: bytes, extra: Sequence[str]) -> tuple[bytes, list[str]]:
    """Bare local names become send.local_recipients_to (default: the account),
    in To/Cc/Bcc and on the command line, as nullmailer's adminaddr does; the
    names they were written to are kept in an X-Original-To header."""
    import email.utils

    from exactmaild.send import message

    local_to = cfg.send.local_recipients_to or cfg.account.address
    originals: list[str] = []
    rcpts: list[str] = []
    for r in (r.strip() for r in extra):
        if _is_local(r):
            originals.append(r)
            r = local_to
        if r and r not in rcpts:
            rcpts.append(r)
    msg = message.parse(raw)
    changed = False
    for field in ("To", "Cc", "Bcc"):
        pairs = email.utils.getaddresses([str(v) for v in msg.get_all(field, [])])
        if not any(_is_local(a.strip()) for _, a in pairs):
            continue
        originals.extend(a.strip() for _, a in pairs if _is_local(a.strip()))
        del msg[field]
        msg[field] = ", ".join(
            email.utils.formataddr((n, local_to if _is_local(a.strip()) else a)) for n, a in pairs
        )
        changed = True
    if changed:
        raw = msg.as_bytes()
    if originals:
        names = ", ".join(dict.fromkeys(originals))
        raw = b"X-Original-To: " + names.encode("ascii", "replace") + b"\n" + raw
    return raw, rcpts


def queue_message(
    cfg: Config, raw: bytes, extra_rcpts: Sequence[str] = (), full_name: str | None = None
) -> str:
    """Validate and spool one message, returning its queue id.

    `extra_rcpts` (recipients named on a command line) are added as Bcc;
    `full_name` makes a From header when the message has none. Raises
    BadMessage (exit 65) for an unusable message, TemporaryFailure (75) when
    the spool is not set up yet.
    """
    from exactmaild.core.later import deferred_until
    from exactmaild.outbox.spool import Spool
    from exactmaild.send import message

    raw = raw.replace(b"\r\n", b"\n")
    message.check_raw(raw, cfg.spool.max_message_size)
    deferred_until(raw)  # a Deferred-Delivery date the daemon cannot read: exit 65 now
    raw, extra_rcpts = local_recipients(cfg, raw, extra_rcpts)
    msg = message.parse(raw)
    have = set(message.recipients(msg))
    missing = [r for r in extra_rcpts if r not in have]
    if missing:
        # Recipients named on the command line travel as Bcc: they get the
        # message, and the headers others see are unchanged.
        head, sep, body = raw.partition(b"\n\n")
        raw = head + b"\nBcc: " + ", ".join(missing).encode("ascii") + b"\n" + sep[1:] + body
        msg = message.parse(raw)
    if full_name and msg["from"] is None:
        raw = f"From: {full_name} <{cfg.account.address}>\n".encode() + raw
    if not message.recipients(message.parse(raw)):
        raise BadMessage("the message has no recipient: it needs a To, Cc or Bcc header")
    try:
        if not (cfg.spool.dir / "new").is_dir() or not (cfg.spool.dir / "tmp").is_dir():
            raise TemporaryFailure(
                f"the spool {cfg.spool.dir} is missing its tmp/ and new/ directories; "
                "start the daemon once (it creates them) or check spool.dir"
            )
        return Spool(cfg.spool.dir, create=False).submit(raw)
    except PermissionError as exc:
        # Exit 77, naming the group to join, not "run as root". Also when the
        # spool itself may not be entered (the packaged 0710 root).
        raise NoPermission(may_not_queue(cfg.spool.dir, exc), cfg.spool.dir) from exc


def cmd_submit(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.at is None:
        qid = queue_message(cfg, _read_input(args.file))
    else:
        # Mail for later: the time travels in the message, as a
        # Deferred-Delivery header (RFC 4021) the daemon reads and removes.
        from zoneinfo import ZoneInfo

        from exactmaild.core.later import parse_at, with_time

        tz = ZoneInfo(cfg.timezone)
        at = parse_at(args.at, tz)  # exit 64 before stdin is read
        raw = _read_input(args.file).replace(b"\r\n", b"\n")
        qid = queue_message(cfg, with_time(raw, at, tz))
    print(qid)
    return EX_OK


def cmd_queue(args: argparse.Namespace) -> int:
    from exactmaild.cli import queue_ops
    from exactmaild.outbox.spool import Spool

    cfg = load_running(args.config)  # a refused edit must not blind the queue
    spool = Spool(cfg.spool.dir, create=False)
    if args.queue_command == "list":
        return _list(cfg, spool, as_json=args.json)
    if args.queue_command == "show":
        return queue_ops.show(cfg, spool, args.id)
    if args.queue_command == "send-now":
        return queue_ops.send_now(cfg, spool, args.id)
    return queue_ops.batch(cfg, spool, args)


def _list(cfg: Config, spool: Spool, *, as_json: bool) -> int:
    """The queue in send order (lane by lane, urgent first, due retries and
    new mail as the sender takes them, then held and failed), each with its
    lane and each waiting one with its expected send time from the forecast
    `status` shows."""
    import datetime as dt
    import math
    import time
    from zoneinfo import ZoneInfo

    from exactmaild.cli.spoolforecast import forecast_from_disk, waiting_on_disk
    from exactmaild.core.limits import Ledger
    from exactmaild.core.states import PUBLIC_NAME, REPORTED
    from exactmaild.store.state import StateStore

    now = time.time()
    tz = ZoneInfo(cfg.timezone)
    ledger = Ledger(cfg.send.limit_window, tz, cfg.send.allowance)
    infos: dict[str, Any] = {}
    last_send = paused_until = None
    if (cfg.state_dir / "exactmaild.sqlite3").exists():
        st = StateStore(cfg.state_dir, create=False)
        try:
            infos = st.messages()
            for when, units in st.counted_sends(now - 2 * 86400):
                ledger.record(when, units)
            last_send = st.last_sent()
            until = st.get("pause_until")
            paused_until = float(until) if until and until != "None" else None
        finally:
            st.close()
    # One read of each waiting message: its lane and time serve the rows too.
    waiting = {w.name: w for w in waiting_on_disk(cfg, infos, now)}
    order = forecast_from_disk(
        cfg,
        now,
        ledger,
        infos,
        last_send=last_send,
        paused_until=paused_until,
        queue=list(waiting.values()),
    ).sends
    rank = {name: i for i, (name, _) in enumerate(order)}
    expected = dict(order)
    entries = sorted(
        spool.entries(REPORTED), key=lambda e: (rank.get(e.queue_id, len(rank)), e.mtime)
    )

    def iso(ts: float | None) -> str | None:
        if ts is None or not math.isfinite(ts):
            return None
        return dt.datetime.fromtimestamp(ts, tz).isoformat(timespec="seconds")

    rows: list[dict[str, Any]] = []
    for e in entries:
        info = infos.get(e.queue_id)
        w = waiting.get(e.queue_id)
        rows.append(
            {
                "id": e.queue_id,
                "state": PUBLIC_NAME[e.state],
                "lane": w.lane if w else spool.lane(e.queue_id, e.state),
                "size": e.size,
                "queued_at": iso(e.mtime),
                "tries": info.tries if info else 0,
                "next_try": iso(info.next_try) if info and info.next_try else None,
                "last_error": info.last_error if info else "",
                "sends_at": iso(expected.get(e.queue_id)),
                # Mail for later: the time in its Deferred-Delivery header.
                "scheduled_at": iso(w.scheduled_at) if w else None,
            }
        )
    if as_json:
        import json  # here: exactmaild-sendmail imports this module for queue_message

        print(json.dumps(rows, indent=1))
        return EX_OK
    if not rows:
        print("the queue is empty")
    for r in rows:
        extra = f"  tries {r['tries']}: {r['last_error'][:60]}" if r["tries"] else ""
        if r["scheduled_at"]:
            extra += f"  (scheduled for {r['scheduled_at']})"
        sends = ""
        if r["id"] in expected:
            t = expected[r["id"]]
            sends = (
                "  never: larger than the allowance"
                if math.isinf(t)
                else f"  sends {_at(t, tz, now)}"
            )
        print(f"{r['id']}  {r['state']:<9} {r['lane']:<6} {r['size']:>9} B{sends}{extra}")
    return EX_OK


def _at(ts: float, tz: Any, now: float) -> str:
    from exactmaild.core.schedule import describe_next

    return describe_next(ts, tz, now=now)
