"""The systemd notify protocol (sd_notify(3)), as the daemon loop uses it.

`Notifier` sends the service manager the state datagrams of Type=notify (and
Type=notify-reload): READY=1, RELOADING=1 with MONOTONIC_USEC, STOPPING=1,
STATUS=, WATCHDOG=1, and tells the loop how often to ping the watchdog.

Why not the `sdnotify` package (no longer a dependency): it connects
once in its constructor and then swallows every exception with a bare
``except:`` (even KeyboardInterrupt), so a wrong NOTIFY_SOCKET or a full
socket buffer is invisible and a service that never becomes READY is
killed at TimeoutStartSec= with nothing in the log. It also encodes as
Latin-1 (a STATUS= line with "…" or a non-Latin practice name is silently
dropped) and knows nothing of the watchdog variables or MONOTONIC_USEC.
The protocol itself is one ``sendto`` of a UTF-8 datagram on an AF_UNIX
SOCK_DGRAM socket, which is written here directly with `socket`.

Failure policy: a notification that cannot be sent is not worth crashing a
mail daemon for, so no method raises. Each method returns True when the
datagram went out and False otherwise; the first failure (and every later
failure with a *different* errno) is reported through the optional ``log``
callback, so a broken socket produces one log line, not one every 30 s of
watchdog pings. `errno_state` holds the errno of the last failure, None
after a success. Without NOTIFY_SOCKET every call is a no-op that returns
False and logs nothing.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence

__all__ = ["Notifier", "monotonic_usec_now"]

LogCallback = Callable[[str], None]


def monotonic_usec_now() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock systemd expects in MONOTONIC_USEC=."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def _one_line(text: str) -> str:
    """Collapse a text to one line: a newline inside STATUS= would end the field."""
    return " ".join(text.split())


class Notifier:
    """Sends sd_notify datagrams to $NOTIFY_SOCKET; a no-op when it is unset.

    ``env`` is read once, at construction (systemd sets it before exec; a
    test passes its own mapping). ``log`` receives one human-readable line
    per new kind of sending failure.
    """

    def __init__(
        self,
        env: Mapping[str, str] = os.environ,
        *,
        log: LogCallback | None = None,
    ) -> None:
        self._log = log
        self._socket_name = env.get("NOTIFY_SOCKET", "")
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self._sock: socket.socket | None = None
        self.errno_state: int | None = None
        """errno of the last failed send, None when the last send succeeded."""

    @property
    def enabled(self) -> bool:
        """True when NOTIFY_SOCKET is set, i.e. a service manager listens."""
        return bool(self._socket_name)

    # -- the messages --------------------------------------------------------

    def ready(self, status: str | None = None) -> bool:
        """READY=1: start-up (or a reload) is complete; optionally with STATUS=."""
        fields = [("READY", "1")]
        if status is not None:
            fields.append(("STATUS", _one_line(status)))
        return self.send(fields)

    def reloading(self, monotonic_usec: int | None = None) -> bool:
        """RELOADING=1 and MONOTONIC_USEC= in one datagram.

        systemd >= 253 (Type=notify-reload) uses the timestamp to tell this
        reload from an earlier one, so both fields must arrive together.
        Follow with `ready()` once the new configuration is in force (or the
        old one has been kept).
        """
        usec = monotonic_usec_now() if monotonic_usec is None else monotonic_usec
        return self.send([("RELOADING", "1"), ("MONOTONIC_USEC", str(usec))])

    def stopping(self) -> bool:
        """STOPPING=1: shutdown has begun (sent on SIGTERM)."""
        return self.send([("STOPPING", "1")])

    def status(self, line: str) -> bool:
        """STATUS=: the one-line summary `systemctl status` shows."""
        return self.send([("STATUS", _one_line(line))])

    def watchdog(self) -> bool:
        """WATCHDOG=1: the main loop is alive (send every `watchdog_interval()`)."""
        return self.send([("WATCHDOG", "1")])

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC=: ask for more time during a slow start or stop."""
        return self.send([("EXTEND_TIMEOUT_USEC", str(max(0, int(seconds * 1_000_000))))])

    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings: half of WATCHDOG_USEC, or None.

        None when WATCHDOG_USEC is unset, not a positive integer, or
        WATCHDOG_PID names another process (the variables were inherited by a
        child, which must not ping for its parent), as sd_watchdog_enabled(3).
        Half the timeout is the interval systemd's documentation recommends.
        """
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None
            except ValueError:
                return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        return usec / 2 / 1_000_000

    # -- the transport -------------------------------------------------------

    def send(self, fields: Sequence[tuple[str, str]]) -> bool:
        """Send ``KEY=value`` lines as one datagram; True when it went out.

        The low-level door for fields without a method of their own. Values
        must not contain newlines (use `status()` for free text).
        """
        if not self.enabled:
            return False
        payload = "\n".join(f"{key}={value}" for key, value in fields).encode("utf-8")
        try:
            sock = self._socket()
            sock.sendto(payload, self._address())
        except OSError as exc:
            self._failed(exc)
            return False
        self.errno_state = None
        return True

    def close(self) -> None:
        """Close the socket (a later send opens a new one)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _address(self) -> str:
        name = self._socket_name
        if name.startswith("@"):
            # Linux abstract namespace: the name starts with a NUL byte, not '@'.
            return "\0" + name[1:]
        if name.startswith("/"):
            return name
        # systemd >= 253 may hand out vsock:CID:PORT (VMs); relative paths are
        # invalid. Report it like any other send failure.
        raise OSError(
            95,  # EOPNOTSUPP
            f"unsupported NOTIFY_SOCKET address {name!r} (want /path or @abstract)",
        )

    def _socket(self) -> socket.socket:
        # One unconnected socket for the life of the daemon; sendto() names
        # the address each time, so a manager that re-creates its socket
        # (daemon-reexec) is still reached. CLOEXEC: children must not hold it.
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        return self._sock

    def _failed(self, exc: OSError) -> None:
        errno = exc.errno if exc.errno is not None else -1
        first = self.errno_state != errno
        self.errno_state = errno
        if first and self._log is not None:
            self._log(
                f"cannot notify the service manager at NOTIFY_SOCKET={self._socket_name}: "
                f"{exc.strerror or exc}"
            )
