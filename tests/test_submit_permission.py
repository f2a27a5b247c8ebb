"""A user the spool refuses is told which group to join (the group that owns
the spool's new/ directory, read from it), with exit 77, not "run as root"."""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from exactmaild.outbox.spool import Spool
from tests.helpers import REPO, message

GROUP = "mail"  # any group the user `nobody` is not in


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root and setpriv"
)
def test_submit_refused_by_the_spool_names_the_group_to_join() -> None:
    # Not under pytest's tmp_path: its parents are root's alone (0700).
    tmp_path = Path(tempfile.mkdtemp(prefix="exactmaild-perm-"))
    try:
        _refused(tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _as_nobody(*argv: str) -> list[str]:
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]


def _refused(tmp_path: Path) -> None:
    # The checkout and its venv must be readable by `nobody` (a clone under a
    # root-only directory, as some CI runners make, is not): the package test
    # (test_package_install.py) checks the same advice against the installed
    # layout either way.
    probe = subprocess.run(
        _as_nobody(sys.executable, "-c", "import exactmaild, yaml"),
        cwd="/",
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=30,
    )
    if probe.returncode != 0:
        pytest.skip(f"user nobody cannot run this checkout ({REPO}): {probe.stderr[-200:]!r}")
    gid = grp.getgrnam(GROUP).gr_gid
    tmp_path.chmod(0o755)
    cfg = tmp_path / "exactmaild.yaml"
    cfg.write_text(
        "account: {address: r@practice.example, auth: {method: none}}\n"
        "incoming: none\noutgoing: {host: 127.0.0.1, port: 9, security: none}\n"
        f"spool: {{dir: {tmp_path}/spool}}\nstate_dir: {tmp_path}/state\n"
    )
    cfg.chmod(0o644)
    spool = tmp_path / "spool"
    Spool(spool)
    spool.chmod(0o755)
    for name in ("new", "tmp"):
        os.chown(spool / name, 0, gid)
        (spool / name).chmod(0o2770)
    r = subprocess.run(
        _as_nobody(sys.executable, "-m", "exactmaild", "submit", "-c", str(cfg)),
        input=message(1),
        capture_output=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=30,
    )
    err = r.stderr.decode()
    assert r.returncode == 77, err
    assert f"user nobody is not in group {GROUP}, which owns {spool / 'new'}" in err
    assert f"usermod -aG {GROUP} nobody" in err
    assert "run as the exactmaild user or root" not in err
