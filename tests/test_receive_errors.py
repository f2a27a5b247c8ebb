"""Server problems give a clear test-connection step and an error result, never an exception."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from exactmaild.receive import receiver
from exactmaild.receive.receiver import Receiver, Step
from exactmaild.store.state import StateStore
from tests.fixtures.dovecot import Dovecot, StaticCredentials, build_config, free_port

pytestmark = pytest.mark.dovecot


def names(steps: list[Step]) -> list[tuple[str, bool]]:
    return [(s.name, s.ok) for s in steps]


@pytest.mark.parametrize(("protocol", "security"), [("imap", "tls"), ("pop3", "starttls")])
def test_connection_all_steps_pass(
    dovecot: Dovecot, tmp_path: Path, protocol: str, security: str
) -> None:
    dovecot.add_messages(1, 2)
    cfg = build_config(tmp_path, dovecot.incoming(protocol, security))  # type: ignore[arg-type]
    steps = receiver.test_connection(cfg, StaticCredentials(), timeout=10)
    assert names(steps) == [
        ("DNS", True), ("connect", True), ("TLS", True), ("login", True), ("folder", True)
    ]  # fmt: skip
    assert "2 messages" in steps[-1].detail
    assert not (tmp_path / "inbox").exists()  # nothing fetched, nothing delivered


def test_wrong_password_test_connection(fresh_dovecot: Dovecot, tmp_path: Path) -> None:
    cfg = build_config(tmp_path, fresh_dovecot.incoming("imap", "tls"))
    creds = StaticCredentials(password="wrong")
    steps = receiver.test_connection(cfg, creds, timeout=10)
    assert names(steps) == [("DNS", True), ("connect", True), ("TLS", True), ("login", False)]
    assert "refused the login for reception" in steps[-1].detail
    assert "password file" in steps[-1].detail
    # the server's own words, not a Python bytes repr
    assert "[AUTHENTICATIONFAILED] Authentication failed." in steps[-1].detail
    assert "b'" not in steps[-1].detail
    assert creds.invalidated == 1  # an OAuth2 token would be refreshed next time


def test_wrong_password_check_returns_error(fresh_dovecot: Dovecot, tmp_path: Path) -> None:
    fresh_dovecot.add_messages(1, 1)
    cfg = build_config(tmp_path, fresh_dovecot.incoming("pop3", "tls"))
    state = StateStore(cfg.state_dir)
    result = Receiver(cfg, state, StaticCredentials(password="wrong"), timeout=10).check(
        time.time()
    )
    assert result.delivered == 0
    assert result.error is not None and result.error.startswith("login: ")
    assert not (tmp_path / "inbox" / "new").exists()


@pytest.mark.parametrize("protocol", ["imap", "pop3"])
def test_unreachable_port(dovecot: Dovecot, tmp_path: Path, protocol: str) -> None:
    cfg = build_config(
        tmp_path,
        dovecot.incoming(protocol, "tls", port=free_port()),  # type: ignore[arg-type]
    )
    steps = receiver.test_connection(cfg, StaticCredentials(), timeout=5)
    assert names(steps) == [("DNS", True), ("connect", False)]
    assert "incoming.port" in steps[-1].detail
    result = Receiver(cfg, StateStore(cfg.state_dir), StaticCredentials(), timeout=5).check(
        time.time()
    )
    assert result.delivered == 0
    assert result.error is not None and result.error.startswith("connect: ")


@pytest.mark.parametrize(
    ("protocol", "security"), [("imap", "tls"), ("imap", "starttls"), ("pop3", "tls")]
)
def test_untrusted_certificate(
    dovecot: Dovecot, tmp_path: Path, protocol: str, security: str
) -> None:
    dovecot.add_messages(1, 1)
    inc = dovecot.incoming(protocol, security, trust=False)  # type: ignore[arg-type]
    cfg = build_config(tmp_path, inc)
    steps = receiver.test_connection(cfg, StaticCredentials(), timeout=5)
    assert names(steps)[-1] == ("TLS", False)
    assert ("login", True) not in names(steps)  # the password never went out
    assert "not trusted" in steps[-1].detail and "tls_ca_file" in steps[-1].detail
    result = Receiver(cfg, StateStore(cfg.state_dir), StaticCredentials(), timeout=5).check(
        time.time()
    )
    assert result.delivered == 0
    assert result.error is not None and result.error.startswith("TLS: ")


def test_missing_folder_names_the_folders(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.add_messages(1, 1, folder="Sent")
    cfg = build_config(tmp_path, dovecot.incoming("imap", "tls", folder="Inbox Archive"))
    steps = receiver.test_connection(cfg, StaticCredentials(), timeout=5)
    assert names(steps)[-1] == ("folder", False)
    assert "'Inbox Archive'" in steps[-1].detail and "Sent" in steps[-1].detail


def test_unknown_host_is_a_dns_step(tmp_path: Path, dovecot: Dovecot) -> None:
    import dataclasses

    inc = dataclasses.replace(dovecot.incoming("imap", "tls"), host="no-such-host.invalid")
    cfg = build_config(tmp_path, inc)
    started = time.monotonic()
    steps = receiver.test_connection(cfg, StaticCredentials(), timeout=5)
    if time.monotonic() - started > 20:
        pytest.skip("this machine's resolver is too slow to answer for .invalid")
    assert names(steps) == [("DNS", False)]
    assert "no-such-host.invalid" in steps[0].detail
