"""The modes of a spool the daemon makes itself (no package, a new spool.dir):
tmp/ and new/ sticky and unlistable, everything else private, whatever the
umask. The packaged layout (tmpfiles.d) is checked in test_systemd_units.py
and, installed, in test_package_install.py."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from exactmaild.outbox.spool import Spool


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_modes_of_a_spool_the_daemon_creates(tmp_path: Path) -> None:
    old = os.umask(0o077)  # the strictest an admin might set
    try:
        spool = Spool(tmp_path / "spool")
    finally:
        os.umask(old)
    assert mode(spool.root) == 0o750
    assert mode(spool.root / "tmp") == 0o1733
    assert mode(spool.root / "new") == 0o1733
    for state in ("active", "deferred", "hold", "failed", "cancelled"):
        assert mode(spool.root / state) == 0o750, state


def test_existing_modes_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "spool" / "new").mkdir(parents=True)
    os.chmod(tmp_path / "spool" / "new", 0o3733)
    Spool(tmp_path / "spool")
    assert mode(tmp_path / "spool" / "new") == 0o3733


def test_submit_writes_0640_whatever_the_umask(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    old = os.umask(0o077)
    try:
        qid = spool.submit(b"To: x@example.org\n\nx\n")
    finally:
        os.umask(old)
    assert mode(spool.root / "new" / qid) == 0o640
