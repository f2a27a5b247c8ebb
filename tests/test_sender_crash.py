"""A bug that kills the sender thread never leaves the daemon up but silent:
the main loop exits non-zero so the service manager restarts it, and the
message that was in flight is still in the spool."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from exactmaild.config import load as configload
from exactmaild.config.model import Config
from exactmaild.daemon import logs
from exactmaild.daemon.service import Service
from exactmaild.outbox.spool import Spool
from tests.fixtures.smtp import SmtpServer
from tests.helpers import message, write_config


class Buggy:
    connected = False

    def begin(self, sender: str, recipients: tuple[str, ...], data: bytes) -> object:
        raise RuntimeError("a bug in the transport")

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_sender_death_exits_70_and_keeps_the_message(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    cfg = configload.load(write_config(tmp_path, smtp_server))
    logs.configure(cfg.log)
    spool = Spool(tmp_path / "spool")
    qid = spool.submit(message(1))

    def factory(_: Config) -> Buggy:
        return Buggy()

    service = Service(cfg, install_signals=False, transport_factory=factory)
    service.start()
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(service.run()))
    t.start()
    t.join(8)  # the sender wakes the main loop as it dies
    assert not t.is_alive()
    assert result == [70]
    # Claimed when the bug struck: in active/, which start-up recovery requeues.
    assert spool.names("active") + spool.names("new") == [qid]
