"""TLS client contexts for both adapters (SMTP, IMAP/POP3), built once and kept.

Verification is always on (certificate and host name); a configured CA file
adds trust on top of the system's store and never replaces it: a private CA
must not remove trust in the public ones a provider uses.

Building a context loads the system CA store, about 17 ms of CPU, and a paced
sender reconnects for nearly every message, a mailbox check every few
minutes; so `TlsContexts` keeps one per CA file, rebuilt when that file
changes on disk (a renewed private CA applies from the next connection). Its
owner makes a new `TlsContexts` for each configuration, so a reload also
reads the system store afresh. No state outside the instance.
"""

from __future__ import annotations

import os
import ssl
import threading
from pathlib import Path


def build(ca_file: Path | str | None) -> ssl.SSLContext:
    """A new context. Raises OSError or ssl.SSLError if `ca_file` cannot be loaded."""
    ctx = ssl.create_default_context()  # loads the system store (and only once)
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class TlsContexts:
    """Contexts by CA file, each kept while that file is unchanged on disk."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_file: dict[str, tuple[tuple[int, ...] | None, ssl.SSLContext]] = {}

    def get(self, ca_file: Path | str | None) -> ssl.SSLContext:
        """The context for `ca_file` (None: the system store alone). A file that
        fails to load raises (as `build`) and is not kept: the next call tries
        again."""
        name = "" if ca_file is None else str(ca_file)
        stamp: tuple[int, ...] | None = ()  # the system store alone: nothing to watch
        if ca_file is not None:
            try:
                st = os.stat(ca_file)
                stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            except OSError:
                stamp = None  # missing or unreadable: build() says what is wrong
        with self._lock:
            kept = self._by_file.get(name)
        if kept is not None and stamp is not None and kept[0] == stamp:
            return kept[1]
        # Built outside the lock: two threads racing build twice, harmlessly.
        ctx = build(ca_file)
        with self._lock:
            self._by_file[name] = (stamp, ctx)
        return ctx
