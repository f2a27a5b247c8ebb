"""receive.group: the Maildir shared with the practice software's group
(setgid directories 2750, messages 0640, whoever delivers them); validated
on load, checked by check-config; private (0700/0600) without it."""

from __future__ import annotations

import grp
import os
import stat
from pathlib import Path

import pytest

from exactmaild.config.load import parse
from exactmaild.core.errors import ConfigError
from exactmaild.store import maildir
from tests.helpers import exactmaild

GROUP = "mail"  # a group every Debian host has


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_private_maildir_by_default(tmp_path: Path) -> None:
    path = maildir.deliver(tmp_path / "inbox", b"Subject: x\n\nbody\n")
    assert _mode(tmp_path / "inbox" / "new") == 0o700
    assert _mode(path) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to a group needs root")
def test_a_maildir_shared_with_a_group(tmp_path: Path) -> None:
    gid = grp.getgrnam(GROUP).gr_gid
    inbox = tmp_path / "inbox"
    (inbox / "new").mkdir(parents=True, mode=0o700)  # an existing private Maildir is converted
    path = maildir.deliver(inbox, b"Subject: x\n\nbody\n", group=GROUP)
    for sub in ("", "tmp", "new", "cur"):
        assert _mode(inbox / sub) == 0o2750 and (inbox / sub).stat().st_gid == gid
    assert _mode(path) == 0o640 and path.stat().st_gid == gid
    # A failure notice delivered without naming the group is readable by it too.
    notice = maildir.deliver(inbox, b"Subject: notice\n\nbody\n")
    assert _mode(notice) == 0o640 and notice.stat().st_gid == gid


BASE = """\
account: {{address: r@practice.example, auth: {{method: none}}}}
incoming: {{host: 127.0.0.1, port: 9, security: none}}
outgoing: {{host: 127.0.0.1, port: 9, security: none}}
receive: {{maildir: {tmp}/inbox, group: {group}}}
spool: {{dir: {tmp}/spool}}
state_dir: {tmp}/state
metrics: {{listen: "off"}}
"""


def test_receive_group_is_validated(tmp_path: Path) -> None:
    cfg = parse(BASE.format(tmp=tmp_path, group=GROUP), tmp_path / "c.yaml")
    assert cfg.receive is not None and cfg.receive.group == GROUP
    with pytest.raises(ConfigError, match=r"c\.yaml:4: receive\.group: .*is not a group name"):
        parse(BASE.format(tmp=tmp_path, group="'no such/group'"), tmp_path / "c.yaml")


def test_check_config_refuses_a_group_the_host_lacks(tmp_path: Path) -> None:
    path = tmp_path / "exactmaild.yaml"
    path.write_text(BASE.format(tmp=tmp_path, group="nosuchgroup"))
    r = exactmaild("check-config", "-c", str(path))
    assert r.returncode == 78, r.stderr
    assert f"{path}:4: receive.group: no group 'nosuchgroup' on this host" in r.stderr.decode()
