"""How the sending thread waits: a timer, new files in the spool, or a wake-up.

One selector over two file descriptors: a pipe the main loop writes to
(flush, reload, stop) and an inotify watch on the spool's `new/` (a producer
renamed a message in), so a new message is picked up within milliseconds
and an idle sender costs nothing between events.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import time
from collections.abc import Iterator
from pathlib import Path

from inotify_simple import INotify, flags

# A name of None: the kernel's event queue overflowed; rescan the directory.
Arrival = str | None


class Waiter:
    def __init__(self, new_dir: Path) -> None:
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._sel.register(self._wake_r, selectors.EVENT_READ)
        self._inotify = INotify()
        self._inotify.add_watch(str(new_dir), flags.MOVED_TO | flags.CLOSE_WRITE)
        self._sel.register(self._inotify.fileno(), selectors.EVENT_READ)
        self._held: list[Arrival] = []  # taken in during a wait that ignores them

    def wake(self) -> None:
        """End the current (or the next) wait: safe from any thread."""
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_w, b"x")

    def wait(self, timeout: float, *, spool_events: bool = True) -> None:
        """Up to `timeout` seconds (an hour at most). A wake-up ends it; so does a
        spool event unless `spool_events` is False (then the events are only
        taken in: `arrivals()` still has them)."""
        if timeout <= 0:
            return
        deadline = time.monotonic() + min(timeout, 3600.0)
        while True:
            left = deadline - time.monotonic()
            ready = self._sel.select(max(0.0, left))
            for key, _ in ready:
                if key.fd == self._wake_r:
                    with contextlib.suppress(BlockingIOError):
                        os.read(self._wake_r, 4096)
                    return
            if not ready or spool_events or left <= 0:
                return
            # Only spool events, and they may not end this wait: take them in
            # (or select() returns at once again) and wait on for the rest.
            self._held.extend(self._read())

    def arrivals(self) -> Iterator[Arrival]:
        """The names renamed into new/ since the last call, without blocking."""
        held, self._held = self._held, []
        yield from held
        yield from self._read()

    def _read(self) -> Iterator[Arrival]:
        for event in self._inotify.read(timeout=0):
            if event.mask & flags.Q_OVERFLOW:
                yield None
            elif event.name:
                yield event.name
