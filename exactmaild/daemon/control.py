"""The state directory's lock and the control socket: how one daemon claims an
account, and how the command line reaches the daemon that did.

* The lock (`exactmaild.lock` in `state_dir`, an exclusive `flock`) is held
  for the daemon's whole life: two daemons on one account would each count
  only their own sends and together break the daily limit. `daemon_running`
  asks the same lock, so `flush` and `status` never guess from a pid file.
* The control socket (`control.sock` beside it, a Unix datagram socket) takes
  short commands: `exactmaild flush` sends "flush", `queue send-now ID`
  "send-now ID", and a batch `queue cancel|hold|release|retry` "rescan" (the
  spool changed under the daemon: re-read it). Datagrams, so a command is one
  whole message or nothing, and the daemon's loop reads them without
  blocking, between its other work.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from exactmaild.config.model import Config
from exactmaild.core.errors import TemporaryFailure

LOCK_NAME = "exactmaild.lock"
CONTROL_NAME = "control.sock"
# Longer than any command; a datagram beyond it is cut and then not understood.
_MAX_COMMAND = 512
# The commands beside "flush" (a queue id is at most 200 bytes).
SEND_NOW = "send-now"
RESCAN = "rescan"


class AlreadyRunning(TemporaryFailure):
    """Another daemon holds the state directory (exit 75: systemd retries)."""


def control_path(cfg: Config) -> Path:
    return cfg.state_dir / CONTROL_NAME


def daemon_running(state_dir: Path) -> bool:
    """True if a daemon holds the state directory's lock."""
    try:
        fd = os.open(state_dir / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def send_control(cfg: Config, command: str) -> None:
    """Send a command (e.g. "flush") to the running daemon's control socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(command.encode(), str(control_path(cfg)))


class StateLock:
    """The exclusive lock on one state directory, held from `acquire` to `release`."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `AlreadyRunning` if another process holds it."""
        fd = os.open(self.state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(
                f"another exactmaild is already running on {self.state_dir} "
                "(two daemons on one account would break the daily limit)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        # Closing the descriptor drops the lock; the file stays (removing it
        # could let a second daemon lock a new file while a first holds the old).
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ControlSocket:
    """The daemon's end of the control socket: bound at start, read by the loop."""

    def __init__(self, cfg: Config) -> None:
        self.path = control_path(cfg)
        # A socket file left by a daemon that died: we hold the lock, so it is stale.
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._sock: socket.socket | None = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(str(self.path))
        self._sock.setblocking(False)
        # Group-writable, as the state directory is group-readable: members of the
        # daemon's group may run `exactmaild flush`.
        os.chmod(self.path, 0o660)

    def fileno(self) -> int:
        """For the loop's selector."""
        assert self._sock is not None
        return self._sock.fileno()

    def commands(self) -> Iterator[str]:
        """Every command waiting now, in order; never blocks."""
        while self._sock is not None:
            try:
                data = self._sock.recv(_MAX_COMMAND)
            except BlockingIOError:
                return
            yield data.decode("ascii", "replace").strip()

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            with contextlib.suppress(OSError):
                self.path.unlink()
