"""count_sent_folder: mail sent from webmail is counted; mail exactmaild sent is not."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest

from exactmaild.receive.receiver import Receiver
from exactmaild.store.state import StateStore
from tests.fixtures.dovecot import Dovecot, StaticCredentials, build_config, make_message

pytestmark = pytest.mark.dovecot


@pytest.mark.parametrize("folder", ["Sent", "Sent Items"])
def test_count_sent_excludes_our_own(dovecot: Dovecot, tmp_path: Path, folder: str) -> None:
    now = time.time()
    window = (now - 6 * 3600, now + 1)  # the current limit window
    state = StateStore(tmp_path / "state")
    ours = []
    for n in range(4):
        mid = f"<sent-{n}@practice.example>"
        when = dt.datetime.fromtimestamp(now - 60 * (n + 1), dt.UTC)
        dovecot.add_message(make_message(n, message_id=mid, date=when), folder=folder)
        if n < 2:  # exactmaild sent these two itself
            attempt = state.reserve(f"q{n}", mid, 1, now - 60 * (n + 1))
            state.finish(attempt, "sent", now - 60 * (n + 1))
            ours.append(mid)
    # Before the window (and on the server's SEARCH SINCE day, maybe): not counted.
    before = dt.datetime.fromtimestamp(window[0] - 3600, dt.UTC)
    dovecot.add_message(make_message(9, date=before), folder=folder)
    dovecot.add_messages(20, 1)  # INBOX mail is no sent mail

    cfg = build_config(tmp_path, dovecot.incoming("imap", "tls"), count_sent_folder=folder)
    receiver = Receiver(cfg, state, StaticCredentials(), timeout=10)
    result = receiver.check(now, window=window)
    assert result.error is None
    assert result.delivered == 1
    assert result.sent_elsewhere == 2

    # Without a window (e.g. a POP3-style call) nothing is counted.
    assert receiver.check(now).sent_elsewhere is None


def test_count_sent_missing_folder_is_an_error(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.add_messages(1, 1)
    cfg = build_config(tmp_path, dovecot.incoming("imap", "tls"), count_sent_folder="Sent Items")
    state = StateStore(cfg.state_dir)
    result = Receiver(cfg, state, StaticCredentials(), timeout=10).check(
        time.time(), window=(time.time() - 3600, time.time())
    )
    assert result.delivered == 1  # the inbox was still received
    assert result.sent_elsewhere is None
    assert result.error is not None and "Sent Items" in result.error
