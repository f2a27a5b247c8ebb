"""exactmaild.daemon.systemd against a real AF_UNIX datagram socket playing systemd."""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exactmaild.daemon.systemd import Notifier, monotonic_usec_now


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket at a filesystem path, like systemd's /run/systemd/notify."""
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def nothing_waiting(sock: socket.socket) -> bool:
    sock.settimeout(0.05)
    try:
        sock.recv(4096)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(2)
    return False


def test_disabled_without_notify_socket_is_a_silent_no_op() -> None:
    logged: list[str] = []
    n = Notifier({}, log=logged.append)
    assert not n.enabled
    assert n.ready() is False
    assert n.reloading() is False
    assert n.stopping() is False
    assert n.status("x") is False
    assert n.watchdog() is False
    assert logged == []
    assert n.errno_state is None


def test_exact_datagrams(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled

    assert n.ready() is True
    assert received(sock) == b"READY=1"

    assert n.status("sent 12/500\nqueue 3\r\n") is True
    assert received(sock) == b"STATUS=sent 12/500 queue 3"

    assert n.ready(status="ready: 0/500 sent") is True
    assert received(sock) == b"READY=1\nSTATUS=ready: 0/500 sent"

    assert n.stopping() is True
    assert received(sock) == b"STOPPING=1"

    assert n.watchdog() is True
    assert received(sock) == b"WATCHDOG=1"

    assert n.extend_timeout(2.5) is True
    assert received(sock) == b"EXTEND_TIMEOUT_USEC=2500000"

    assert n.status("Zahnarztpraxis Müller – 3 queued") is True
    assert received(sock) == "STATUS=Zahnarztpraxis Müller – 3 queued".encode()
    assert nothing_waiting(sock)
    n.close()


def test_reloading_is_one_datagram_with_monotonic_usec(manager: tuple[socket.socket, str]) -> None:
    sock, path = manager
    n = Notifier({"NOTIFY_SOCKET": path})

    assert n.reloading(123456789) is True
    assert received(sock) == b"RELOADING=1\nMONOTONIC_USEC=123456789"

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading() is True
    after = monotonic_usec_now()
    lines = received(sock).decode().split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after
    assert len(lines) == 2


def test_abstract_namespace_socket() -> None:
    name = f"exactmaild-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready() is True
        assert sock.recv(4096) == b"READY=1"
    finally:
        sock.close()


def test_send_failure_logged_once_per_errno_and_never_raised(tmp_path: Path) -> None:
    logged: list[str] = []
    path = str(tmp_path / "nobody-listens")
    n = Notifier({"NOTIFY_SOCKET": path}, log=logged.append)
    assert n.watchdog() is False
    assert n.watchdog() is False
    assert n.status("x") is False
    assert n.errno_state == errno.ENOENT
    assert len(logged) == 1
    assert path in logged[0]

    # The manager appears: sends work again and the state clears ...
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    try:
        assert n.watchdog() is True
        assert sock.recv(4096) == b"WATCHDOG=1"
        assert n.errno_state is None
    finally:
        sock.close()
    os.unlink(path)
    # ... and a new outage is reported again, once.
    assert n.watchdog() is False
    assert n.watchdog() is False
    assert len(logged) == 2


def test_unsupported_address_reported_not_raised() -> None:
    logged: list[str] = []
    n = Notifier({"NOTIFY_SOCKET": "vsock:2:1234"}, log=logged.append)
    assert n.enabled
    assert n.ready() is False
    assert len(logged) == 1
    assert "vsock:2:1234" in logged[0]


def test_without_log_callback_failures_only_return_false(tmp_path: Path) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent")})
    assert n.ready() is False
    assert n.errno_state == errno.ENOENT


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "60000000"}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "junk"}, None),
        ({"WATCHDOG_USEC": "500000"}, 0.25),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert Notifier(env).watchdog_interval() == expected


def test_reads_os_environ_by_default(
    manager: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, path = manager
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier()
    assert n.watchdog_interval() == 1.0
    assert n.ready() is True
    assert received(sock) == b"READY=1"
