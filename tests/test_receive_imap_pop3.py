"""Receive against a real Dovecot: first check, restart, new mail; POP3 deletion; big mailbox."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from exactmaild.receive.mailbox.imap import IMAPMailbox
from exactmaild.receive.mailbox.pop3 import POP3Mailbox
from exactmaild.receive.receiver import CheckResult, Receiver
from exactmaild.store.state import StateStore
from tests.fixtures.dovecot import (
    Dovecot,
    StaticCredentials,
    build_config,
    maildir_subjects,
    make_message,
)

pytestmark = pytest.mark.dovecot


def subjects(numbers: range) -> list[str]:
    return sorted(f"message {n}" for n in numbers)


@pytest.mark.parametrize(
    ("protocol", "security"),
    [("imap", "tls"), ("imap", "starttls"), ("pop3", "tls"), ("pop3", "starttls")],
)
def test_first_check_restart_then_only_new(
    dovecot: Dovecot, tmp_path: Path, protocol: str, security: str
) -> None:
    dovecot.add_messages(1, 3)
    cfg = build_config(tmp_path, dovecot.incoming(protocol, security))  # type: ignore[arg-type]
    assert cfg.receive is not None
    inbox = cfg.receive.maildir

    state = StateStore(cfg.state_dir)
    first = Receiver(cfg, state, StaticCredentials(), timeout=10).check(time.time())
    assert first == CheckResult(delivered=3)
    assert maildir_subjects(inbox) == subjects(range(1, 4))
    state.close()

    # "Restart": a new store and receiver on the same state directory.
    state = StateStore(cfg.state_dir)
    receiver = Receiver(cfg, state, StaticCredentials(), timeout=10)
    again = receiver.check(time.time())
    assert again == CheckResult(delivered=0)
    assert receiver.last_fetches == 0
    assert maildir_subjects(inbox) == subjects(range(1, 4))

    dovecot.add_messages(4, 2)
    third = receiver.check(time.time())
    assert third == CheckResult(delivered=2)
    assert receiver.last_fetches == 2
    assert maildir_subjects(inbox) == subjects(range(1, 6))
    # leave_on_server (the default): everything is still on the server...
    assert len(dovecot.server_messages()) == 5
    # ...and still unread for the practice's mail clients (BODY.PEEK, EXAMINE).
    assert not [
        p for p in dovecot.server_messages() if ":2," in p.name and "S" in p.name.split(":2,")[1]
    ]
    state.close()


def test_delivered_bytes_are_the_servers(dovecot: Dovecot, tmp_path: Path) -> None:
    original = make_message(1, body="x" * 5000 + "\r\n.leading dot line\r\n")
    dovecot.add_message(original)
    cfg = build_config(tmp_path, dovecot.incoming("pop3", "tls"))
    assert cfg.receive is not None
    state = StateStore(cfg.state_dir)
    assert Receiver(cfg, state, StaticCredentials(), timeout=10).check(time.time()).delivered == 1
    [path] = (cfg.receive.maildir / "new").iterdir()
    assert path.read_bytes() == original
    assert path.name.endswith(f",S={len(original)}")
    assert not any((cfg.receive.maildir / "tmp").iterdir())


def test_pop3_delete_after_delivery_empties_server(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.add_messages(1, 3)
    cfg = build_config(tmp_path, dovecot.incoming("pop3", "tls", leave_on_server=False))
    assert cfg.receive is not None
    state = StateStore(cfg.state_dir)
    receiver = Receiver(cfg, state, StaticCredentials(), timeout=10)
    assert receiver.check(time.time()) == CheckResult(delivered=3)
    assert dovecot.server_messages() == []
    dovecot.add_messages(4, 2)
    assert receiver.check(time.time()) == CheckResult(delivered=2)
    assert dovecot.server_messages() == []
    assert maildir_subjects(cfg.receive.maildir) == subjects(range(1, 6))


def test_pop3_lost_quit_neither_duplicates_nor_keeps(dovecot: Dovecot, tmp_path: Path) -> None:
    """DELE only counts at QUIT: a session that dies before QUIT leaves the messages on
    the server; the next check must delete them without delivering them again."""
    dovecot.add_messages(1, 3)
    cfg = build_config(tmp_path, dovecot.incoming("pop3", "tls", leave_on_server=False))
    assert cfg.incoming is not None and cfg.receive is not None
    state = StateStore(cfg.state_dir)
    box = POP3Mailbox(cfg.incoming, StaticCredentials(), state, timeout=10)
    box.connect()
    got: list[bytes] = []
    assert box.fetch_new(got.append, time.time()) == 3
    pop = box._pop
    assert pop is not None
    pop.sock.shutdown(socket.SHUT_RDWR)  # the connection drops: no QUIT
    pop.sock.close()
    box._pop = None
    deadline = time.monotonic() + 5
    while len(dovecot.server_messages()) != 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(dovecot.server_messages()) == 3  # the server rolled the DELEs back

    receiver = Receiver(cfg, state, StaticCredentials(), timeout=10)
    assert receiver.check(time.time()) == CheckResult(delivered=0)
    assert receiver.last_fetches == 0
    assert dovecot.server_messages() == []


def test_big_mailbox_fetches_only_new(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.add_old_messages(10_000)
    cfg = build_config(tmp_path, dovecot.incoming("imap", "tls"))
    assert cfg.incoming is not None and cfg.receive is not None
    state = StateStore(cfg.state_dir)
    # The 10,000 were delivered long ago: the position says so.
    box = IMAPMailbox(cfg.incoming, StaticCredentials(), state, timeout=30)
    box.connect()
    info = box.select("INBOX")
    box.close()
    assert info.exists == 10_000 and info.uidnext is not None
    state.set_imap_position(box.key, info.uidvalidity, info.uidnext - 1)

    dovecot.add_messages(1, 3)
    receiver = Receiver(cfg, state, StaticCredentials(), timeout=30)
    started = time.monotonic()
    result = receiver.check(time.time())
    elapsed = time.monotonic() - started
    assert result == CheckResult(delivered=3)
    assert receiver.last_fetches == 3
    assert maildir_subjects(cfg.receive.maildir) == subjects(range(1, 4))
    assert elapsed < 10, elapsed
    # The server agrees: the session that did the check fetched 3 bodies.
    deadline = time.monotonic() + 5
    while "body_count=" not in dovecot.log_text().split("Login: user=<reception>")[-1]:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    last_session = dovecot.log_text().split("Login: user=<reception>")[-1]
    assert "body_count=3 " in last_session


def test_uidvalidity_change_delivers_only_unseen(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.add_messages(1, 2)
    dovecot.add_message(make_message(3, message_id=None))  # fingerprinted by its header hash
    cfg = build_config(tmp_path, dovecot.incoming("imap", "tls"))
    assert cfg.receive is not None
    state = StateStore(cfg.state_dir)
    receiver = Receiver(cfg, state, StaticCredentials(), timeout=10)
    assert receiver.check(time.time()) == CheckResult(delivered=3)
    key = f"imap:{dovecot.user}@{dovecot.host}/INBOX"
    before = state.imap_position(key)
    assert before is not None

    dovecot.forget_uids()  # the server rebuilds the folder: new UIDVALIDITY, new UIDs
    dovecot.add_messages(4, 2)
    result = receiver.check(time.time())
    after = state.imap_position(key)
    assert after is not None and after[0] != before[0]
    assert result == CheckResult(delivered=2)
    assert receiver.last_fetches == 2
    assert maildir_subjects(cfg.receive.maildir) == subjects(range(1, 6))

    # And from the new position on, normal tracking again.
    dovecot.add_messages(6, 1)
    assert receiver.check(time.time()) == CheckResult(delivered=1)
    assert receiver.last_fetches == 1
    assert maildir_subjects(cfg.receive.maildir) == subjects(range(1, 7))


def test_reset_position_fetches_everything_again(dovecot: Dovecot, tmp_path: Path) -> None:
    from exactmaild.receive.receiver import reset_position

    dovecot.add_messages(1, 2)
    cfg = build_config(tmp_path, dovecot.incoming("imap", "tls"))
    assert cfg.receive is not None
    state = StateStore(cfg.state_dir)
    receiver = Receiver(cfg, state, StaticCredentials(), timeout=10)
    assert receiver.check(time.time()).delivered == 2
    assert receiver.check(time.time()).delivered == 0
    reset_position(state)
    assert receiver.check(time.time()).delivered == 2
    assert maildir_subjects(cfg.receive.maildir) == sorted(subjects(range(1, 3)) * 2)
