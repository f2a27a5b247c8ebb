"""A check's result is handled as soon as the check's thread wakes the loop,
not at the loop's next 10 s nap: the thread is still alive when it wakes the
loop, and the loop must not wait for it to end."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from exactmaild.auth.oauth import TokenCache
from exactmaild.config.model import Account, Auth
from exactmaild.core.log import get_log
from exactmaild.daemon.metrics import Metrics
from exactmaild.receive.scheduler import CheckScheduler
from exactmaild.store.state import StateStore
from tests.fixtures.dovecot import USER, Dovecot, build_config
from tests.test_oauth import write_private

pytestmark = pytest.mark.dovecot


def test_the_wake_up_finds_the_result_while_the_thread_still_runs(
    dovecot: Dovecot, tmp_path: Path
) -> None:
    dovecot.add_messages(1, 2)
    password = write_private(tmp_path / "password", dovecot.password)
    cfg = build_config(tmp_path, dovecot.incoming("imap", "tls"))
    cfg = replace(
        cfg,
        account=Account(
            address=cfg.account.address, auth=Auth(username=USER, password_file=password)
        ),
    )
    state = StateStore(cfg.state_dir)
    metrics = Metrics()
    woken = threading.Event()
    leave = threading.Event()

    def wake() -> None:
        # The loop is woken from inside the check's thread, which is then
        # still alive: hold it there until the test has ticked.
        woken.set()
        leave.wait(10)

    checks = CheckScheduler(
        cfg,
        state,
        metrics=metrics,
        log=get_log("test"),
        tokens=TokenCache(),
        wake=wake,
        set_external=lambda start, units: None,
    )
    try:
        t0 = time.time()
        checks.start(t0)
        checks.tick(t0)
        assert woken.wait(30), "the check never woke the loop"
        checks.tick(t0 + 1)  # the loop's turn right after the wake-up
        received = metrics.registry.get_sample_value("exactmaild_received_total")
        assert received == 2, "the result waited for the thread to end"
        assert state.get("last_check") == str(t0)
    finally:
        leave.set()
        checks.stop()
        state.close()
