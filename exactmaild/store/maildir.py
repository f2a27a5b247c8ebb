"""Delivery into a Maildir: the one way a message reaches `receive.maildir`.

Owns the Maildir delivery protocol (https://cr.yp.to/proto/maildir.html):
write the message under `tmp/` with a name no other delivery can produce,
fsync it, rename it into `new/`, and fsync `new/` so the rename itself
survives a power cut. A reader (a mail client, the practice software) never
sees a partial file, and when `deliver` returns the message is on disk: only
then may the caller record it as delivered. Also used for the delivery
status notices the sender writes.
"""

from __future__ import annotations

import itertools
import os
import secrets
import socket
import time
from pathlib import Path

from exactmaild.store.durable import fsync_dir, write_new

_counter = itertools.count(1)

_SUBDIRS = ("tmp", "new", "cur")


def ensure(maildir: Path) -> None:
    """Create the Maildir (tmp/, new/, cur/) if it is missing, private to the daemon's user."""
    for sub in _SUBDIRS:
        (maildir / sub).mkdir(parents=True, exist_ok=True, mode=0o700)


def unique_name(size: int) -> str:
    """time.M<usec>P<pid>Q<n>R<random>.<host>,S=<size>: unique across processes and restarts."""
    now = time.time()
    sec = int(now)
    usec = int((now - sec) * 1_000_000)
    # "/" and ":" may not appear in the host part (the spec's escapes).
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"
    return f"{sec}.M{usec}P{os.getpid()}Q{next(_counter)}R{secrets.token_hex(8)}.{host},S={size}"


def deliver(maildir: Path, data: bytes) -> Path:
    """Deliver `data` as one new message; returns its path under new/ once it is durable."""
    ensure(maildir)
    name = unique_name(len(data))
    tmp = maildir / "tmp" / name
    final = maildir / "new" / name
    # O_EXCL: a name collision (which the name makes practically impossible)
    # fails loudly instead of overwriting another delivery.
    write_new(tmp, data, 0o600)
    try:
        os.rename(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(maildir / "new")
    return final
