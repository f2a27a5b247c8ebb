"""kill -9 in the middle of a 200-message fetch: nothing lost, at most one duplicate."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exactmaild.receive.receiver import CheckResult, Receiver
from exactmaild.store.state import StateStore
from tests.fixtures.dovecot import Dovecot, StaticCredentials, build_config, maildir_subjects

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]

# The child runs one real check, as the daemon would, on the same state directory.
CHILD = """
import json, sys, time
from pathlib import Path
from exactmaild.config.model import Incoming
from exactmaild.receive.receiver import Receiver
from exactmaild.store.state import StateStore
from tests.fixtures.dovecot import StaticCredentials, build_config

args = json.loads(sys.argv[1])
inc = Incoming(host=args["host"], port=args["port"], security=args["security"],
               tls_ca_file=Path(args["ca"]), protocol=args["protocol"],
               leave_on_server=args["leave"])
cfg = build_config(Path(args["base"]), inc)
receiver = Receiver(cfg, StateStore(cfg.state_dir), StaticCredentials(), timeout=30)
print(receiver.check(time.time()))
"""

TOTAL = 200


@pytest.mark.parametrize(("protocol", "leave"), [("imap", True), ("pop3", False)])
def test_kill_9_mid_fetch(dovecot: Dovecot, tmp_path: Path, protocol: str, leave: bool) -> None:
    dovecot.add_messages(1, TOTAL)
    inc = dovecot.incoming(protocol, "tls", leave_on_server=leave)  # type: ignore[arg-type]
    cfg = build_config(tmp_path, inc)
    assert cfg.receive is not None
    new = cfg.receive.maildir / "new"
    args = {
        "host": inc.host,
        "port": inc.port,
        "security": inc.security,
        "ca": str(inc.tls_ca_file),
        "protocol": protocol,
        "leave": leave,
        "base": str(tmp_path),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (new.is_dir() and len(os.listdir(new)) >= 50):
            assert child.poll() is None, "the check ended before it could be killed"
            assert time.monotonic() < deadline, "no progress in 30 s"
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    landed = len(os.listdir(new))
    assert 50 <= landed < TOTAL, landed

    # Restart: a new store and receiver on the same state.
    result = Receiver(cfg, StateStore(cfg.state_dir), StaticCredentials(), timeout=30).check(
        time.time()
    )
    assert result.error is None
    assert result.delivered in (TOTAL - landed, TOTAL - landed + 1)

    counts = collections.Counter(maildir_subjects(cfg.receive.maildir))
    assert set(counts) == {f"message {n}" for n in range(1, TOTAL + 1)}  # nothing lost
    assert sum(c - 1 for c in counts.values()) <= 1  # at most one duplicate
    if not leave:
        assert dovecot.server_messages() == []
    # A further check finds nothing new.
    again = Receiver(cfg, StateStore(cfg.state_dir), StaticCredentials(), timeout=30)
    assert again.check(time.time()) == CheckResult(delivered=0)
