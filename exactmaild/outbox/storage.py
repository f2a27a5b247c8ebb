"""When the spool or the state store refuses a write: remember, probe, catch up.

A full or read-only disk must never lose a message nor send one twice. A
settlement storage refused (a `Claim`'s `Settlement`) is kept here with its
Claim and applied again once a probe shows that both the spool and the
store take writes the size of a send's; meanwhile the message waits in
`active/`, and the sender backs off.
"""

from __future__ import annotations

import contextlib
import errno
import sqlite3
from collections.abc import Callable

from exactmaild.core.log import Log
from exactmaild.outbox.claim import Claim, Settlement
from exactmaild.outbox.spool import Spool
from exactmaild.store.state import StateStore

_PASSING = (errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO)


def is_storage_problem(exc: BaseException) -> bool:
    """A write refused for a reason that passes (a full or read-only disk,
    permissions), as opposed to a bug."""
    if isinstance(exc, sqlite3.OperationalError):
        return True
    return isinstance(exc, OSError) and exc.errno in _PASSING


class StorageTrouble:
    """The current storage problem, if any, and the settlements it left undone."""

    def __init__(self, spool: Spool, store: StateStore, log: Log) -> None:
        self._spool = spool
        self._store = store
        self._log = log
        self.error: str | None = None
        self.stranded: list[tuple[Claim, Settlement]] = []

    def __bool__(self) -> bool:
        return bool(self.stranded) or self.error is not None

    def failed(self, exc: BaseException) -> None:
        text = f"cannot write the spool or the state store: {exc}"
        if self.error is None:
            self._log.error("storage_problem", error=text)
        self.error = text
        # For `status`: written at once when the state store still takes writes
        # (a full spool); when it is the store that fails, the metric, the log
        # and STATUS= still say it.
        with contextlib.suppress(OSError, sqlite3.Error):
            self._store.put(storage_error=text)

    def recover(self, write: Callable[[Claim, Settlement], None]) -> bool:
        """Probe, then apply what was left undone; True once all is well again."""
        try:
            self._spool.probe_writable()
            self._store.probe_writable()
            self._store.put(storage_error=None)
            while self.stranded:
                claim, s = self.stranded[0]
                # FileNotFoundError: the message moved on meanwhile (finished).
                with contextlib.suppress(FileNotFoundError):
                    write(claim, s)
                self.stranded.pop(0)
        except (OSError, sqlite3.Error) as exc:
            self.failed(exc)
            return False
        if self.error is not None:
            self._log.info("storage_recovered")
        self.error = None
        return True
