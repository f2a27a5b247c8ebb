"""The CheckScheduler on its own against a real Dovecot, the loop played by the test:
the time is whatever the test tells it, so the schedule is exact."""

from __future__ import annotations

import math
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from exactmaild.auth.oauth import TokenCache
from exactmaild.config.model import Account, Auth
from exactmaild.core.log import get_log
from exactmaild.daemon.metrics import Metrics
from exactmaild.receive.scheduler import CheckScheduler
from exactmaild.store.facts import SentElsewhere
from exactmaild.store.state import StateStore
from tests.fixtures.dovecot import USER, Dovecot, build_config, free_port
from tests.test_oauth import write_private

pytestmark = pytest.mark.dovecot

EVERY = 300.0  # the default schedule: every 5 minutes, all day, every day


def test_checks_when_due_counts_results_and_keeps_facts(dovecot: Dovecot, tmp_path: Path) -> None:
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
    external: list[tuple[float, int]] = []
    state.set_sent_elsewhere(SentElsewhere(1000.0, 4))  # what a previous run found in Sent
    checks = CheckScheduler(
        cfg,
        state,
        metrics=metrics,
        log=get_log("test"),
        tokens=TokenCache(),
        wake=woken.set,
        set_external=lambda start, units: external.append((start, units)),
    )

    def sample(name: str, result: str | None = None) -> float | None:
        labels = {"result": result} if result else None
        return metrics.registry.get_sample_value(name, labels)

    def finish(now: float) -> None:
        assert woken.wait(30), "the check never woke the loop"
        woken.clear()
        checks.tick(now)

    try:
        checks.resume()
        assert external == [(1000.0, 4)]
        t0 = 1_800_000_000.0
        checks.start(t0)
        assert checks.due == t0  # the first check at once
        checks.tick(t0)
        # The next one is due (and written for `status`) as the check starts, not when it ends.
        assert checks.due == t0 + EVERY
        assert state.get("next_check") == str(t0 + EVERY)
        finish(t0 + 2)
        assert sample("exactmaild_received_total") == 2
        assert sample("exactmaild_receive_checks_total", "ok") == 1
        assert state.get("last_check") == str(t0)
        assert checks.due == t0 + EVERY

        checks.tick(t0 + EVERY - 1)  # not due yet: nothing starts, nobody wakes
        assert not woken.wait(0.5)
        checks.flush()  # `exactmaild flush`: at the next tick, whatever the schedule
        checks.tick(t0 + 10)
        assert checks.due == t0 + 10 + EVERY
        finish(t0 + 11)
        assert sample("exactmaild_receive_checks_total", "ok") == 2
        assert sample("exactmaild_received_total") == 2

        # A reload to a server that refuses connections: the schedule goes on from
        # the last check, the failure is counted and kept for `status`.
        dead = replace(cfg.incoming, port=free_port()) if cfg.incoming else None
        checks.apply(replace(cfg, incoming=dead), t0 + 20)
        assert checks.due == t0 + 10 + EVERY
        checks.tick(t0 + 10 + EVERY)
        finish(t0 + 11 + EVERY)
        assert sample("exactmaild_receive_checks_total", "error") == 1
        error = state.get("receive_error")
        assert error is not None and "connect" in error
        assert state.get("receive_error_at") == str(t0 + 11 + EVERY)
        assert state.get("last_check") == str(t0 + 10)  # the last one that worked

        # incoming: none after a reload: never due again
        checks.apply(replace(cfg, incoming=None), t0 + 12 + EVERY)
        assert math.isinf(checks.due) and checks.due_text() is None
        assert state.get("next_check") is None
    finally:
        checks.stop()
        state.close()
