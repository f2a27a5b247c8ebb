"""How the sender thread waits between steps: a file arriving in the spool
ends a normal wait at once (that is how new mail is picked up), but not the
back-off after a storage failure, where the sender's own retries move files
and would otherwise turn the pause into a busy loop; a wake-up (stop, flush,
reload) ends either."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from exactmaild.auth.credentials import credentials_for
from exactmaild.config import load as configload
from exactmaild.config.model import Config
from exactmaild.daemon import logs
from exactmaild.daemon.metrics import Metrics
from exactmaild.outbox.spool import Spool
from exactmaild.send.sender import Sender
from exactmaild.send.smtp import SmtpConnection
from exactmaild.store.state import StateStore
from tests.fixtures.smtp import SmtpServer
from tests.helpers import message, write_config


@pytest.fixture
def sender(tmp_path: Path, smtp_server: SmtpServer) -> Sender:
    cfg = configload.load(write_config(tmp_path, smtp_server))
    logs.configure(cfg.log)

    def transport(c: Config) -> SmtpConnection:
        return SmtpConnection(c.outgoing, credentials_for(c.account))

    store, spool = StateStore(cfg.state_dir), Spool(cfg.spool.dir)
    return Sender(cfg, store, spool, Metrics(), logs.get(), transport_factory=transport)


def _later(delay: float, action: object) -> threading.Timer:
    t = threading.Timer(delay, action)  # type: ignore[arg-type]
    t.start()
    return t


def test_a_new_file_ends_a_normal_wait(sender: Sender) -> None:
    _later(0.2, lambda: sender.spool.submit(message(1)))
    t0 = time.monotonic()
    sender._wait(10.0)
    assert time.monotonic() - t0 < 5.0


def test_spool_events_do_not_end_a_storage_back_off(sender: Sender) -> None:
    timers = [_later(0.1 * k, lambda k=k: sender.spool.submit(message(k))) for k in range(1, 6)]
    t0 = time.monotonic()
    sender._wait(1.5, spool_events=False)
    waited = time.monotonic() - t0
    for t in timers:
        t.join()
    assert waited >= 1.4, waited
    # The events were taken in meanwhile: the new files are in the queue index.
    sender._drain_inotify()
    assert sender.outbox.queued == 5


def test_a_wake_up_ends_a_storage_back_off(sender: Sender) -> None:
    _later(0.2, sender.wake)
    t0 = time.monotonic()
    sender._wait(10.0, spool_events=False)
    assert time.monotonic() - t0 < 5.0
