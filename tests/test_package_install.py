"""The Debian package, installed for real: lintian, the layout, two producers
that must not trust each other, remove and purge.

A throwaway Debian 12 root is made with mmdebstrap from Debian's own packages
(minbase plus python3, adduser, tzdata: no systemd, so postinst's fallback
that makes the directories without systemd-tmpfiles is the path taken here;
tests/test_systemd_units.py applies the tmpfiles.d file itself). The package
goes in with `dpkg --root`, which runs its maintainer scripts chrooted there.
Two producers are made with useradd inside that root and members of
exactmaild-submit; the daemon runs there as the user exactmaild and sends to
an aiosmtpd on loopback (a chroot shares the network).

Needs root (chroot, useradd, dpkg --root), mmdebstrap and lintian (both
installed by dev/system-packages) and the Debian mirror. About a minute,
most of it mmdebstrap.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.fixtures.smtp import SmtpServer, start_smtp
from tests.helpers import wait_until

REPO = Path(__file__).resolve().parent.parent
SPOOL = "/var/spool/exactmaild"
STATE = "/var/lib/exactmaild"
CONFIG = "/etc/exactmaild/test.yaml"
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/"}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: chroot, useradd and dpkg --root"),
    pytest.mark.skipif(
        shutil.which("mmdebstrap") is None or shutil.which("lintian") is None,
        reason="mmdebstrap or lintian not installed (dev/system-packages installs both as root)",
    ),
]


@dataclass
class Root:
    path: Path

    def run(
        self,
        *cmd: str,
        user: str | None = None,
        input: bytes | None = None,
        check: bool = True,
        timeout: float = 120,
    ) -> subprocess.CompletedProcess[bytes]:
        result = subprocess.run(
            [*self.chroot(user), *cmd],
            input=input,
            capture_output=True,
            env=ENV,
            timeout=timeout,
        )
        if check:
            assert result.returncode == 0, (cmd, user, result.stdout, result.stderr)
        return result

    def chroot(self, user: str | None) -> list[str]:
        if user is None:
            return ["chroot", str(self.path)]
        # Numeric ids from the root's own databases, with the user's
        # supplementary groups, so nothing is looked up on the host.
        pw = {f[0]: f for f in (line.split(":") for line in self.read("/etc/passwd").splitlines())}[
            user
        ]
        groups = [
            f[2]
            for f in (line.split(":") for line in self.read("/etc/group").splitlines())
            if user in f[3].strip().split(",") or f[2] == pw[3]
        ]
        return [
            "chroot",
            f"--userspec={pw[2]}:{pw[3]}",
            f"--groups={','.join(groups)}",
            str(self.path),
        ]

    def read(self, path: str) -> str:
        return (self.path / path.lstrip("/")).read_text()

    def dpkg(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["dpkg", f"--root={self.path}", *args],
            capture_output=True,
            text=True,
            env={**ENV, "DEBIAN_FRONTEND": "noninteractive", **(env or {})},
            timeout=300,
        )

    def p(self, path: str) -> Path:
        return self.path / path.lstrip("/")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Root]:
    path = tmp_path_factory.mktemp("debian-root") / "root"
    started = time.monotonic()
    result = subprocess.run(
        [
            "mmdebstrap",
            "--quiet",
            "--mode=root",
            "--variant=minbase",
            "--include=python3,adduser,tzdata,init-system-helpers",
            "bookworm",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, (
        f"mmdebstrap failed (is the Debian mirror reachable?): {result.stderr}"
    )
    print(f"throwaway root made in {time.monotonic() - started:.1f} s")
    yield Root(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def installed(root: Root, deb: Path) -> Root:
    result = root.dpkg("-i", str(deb))
    assert result.returncode == 0, result.stdout + result.stderr
    return root


@pytest.fixture(scope="module")
def producers(installed: Root) -> tuple[str, str]:
    """Two real unprivileged users, both allowed to submit, made as an admin would;
    and an outsider, who is not."""
    for name in ("producer-a", "producer-b", "outsider"):
        installed.run("useradd", "--create-home", "--shell", "/bin/sh", name)
    for name in ("producer-a", "producer-b"):
        installed.run("usermod", "-aG", "exactmaild-submit", name)
    return "producer-a", "producer-b"


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    controller, server = start_smtp("none")
    yield server
    controller.stop()


def test_lintian_reports_no_errors_and_explains_every_warning(deb: Path) -> None:
    result = subprocess.run(
        ["lintian", "--no-cfg", "--fail-on", "none", str(deb)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    tags = [line for line in result.stdout.splitlines() if line[:2] in ("E:", "W:")]
    # Overridden tags (each with its comment in packaging/debian/lintian-overrides)
    # are not shown; anything left is an error or an unexplained warning.
    assert tags == [], "\n".join(tags)


def test_layout_after_install(installed: Root) -> None:
    def owner(path: str) -> tuple[int, str, str]:
        st = installed.p(path).stat()
        users = {
            f[2]: f[0] for f in (x.split(":") for x in installed.read("/etc/passwd").splitlines())
        }
        groups = {
            f[2]: f[0] for f in (x.split(":") for x in installed.read("/etc/group").splitlines())
        }
        return st.st_mode & 0o7777, users[str(st.st_uid)], groups[str(st.st_gid)]

    assert owner(SPOOL) == (0o710, "exactmaild", "exactmaild-submit")
    for sub in ("tmp", "new"):
        assert owner(f"{SPOOL}/{sub}") == (0o3733, "exactmaild", "exactmaild"), sub
    for sub in ("active", "deferred", "hold", "failed", "cancelled"):
        assert owner(f"{SPOOL}/{sub}") == (0o750, "exactmaild", "exactmaild"), sub
    assert owner(STATE) == (0o750, "exactmaild", "exactmaild")
    # Compiled at configure, not shipped (dpkg does not know these files).
    assert list(installed.p("/usr/lib/exactmaild").rglob("exactmaild/__pycache__/*.pyc"))
    listed = installed.run("dpkg-query", "-L", "exactmaild").stdout.decode()
    assert "__pycache__" not in listed
    version = installed.run("/usr/bin/exactmaild", "--version")
    assert version.stdout.decode().startswith("exactmaild ")


def _config(root: Root, smtp: SmtpServer) -> None:
    cfg = {
        "timezone": "UTC",
        "account": {"address": "reception@practice.example", "auth": {"method": "none"}},
        "incoming": "none",
        "outgoing": {"host": smtp.host, "port": smtp.port, "security": "none"},
        "send": {"delay": "0s", "daily_limit": 500, "immediately": True},
        "metrics": {"listen": "off"},
        "log": {"format": "json", "level": "debug"},
    }
    path = root.p(CONFIG)
    path.write_text(yaml.safe_dump(cfg))
    path.chmod(0o644)


def _write_raw(root: Root, user: str, name: str, rename: bool, umask: int = 0o027) -> str:
    """The spool protocol by hand, as an application does: tmp/NAME, then new/NAME."""
    body = f"To: patient@example.org\nSubject: from {user} {name}\n\nprivate\n"
    script = (
        "import os, sys\n"
        f"os.umask({umask:#o})\n"
        f"p = '{SPOOL}/tmp/{name}'\n"
        "with open(p, 'w') as f: f.write(sys.stdin.read())\n"
        f"if {rename}: os.rename(p, '{SPOOL}/new/{name}')\n"
    )
    root.run("python3", "-c", script, user=user, input=body.encode())
    return f"{SPOOL}/{'new' if rename else 'tmp'}/{name}"


def _trespass(root: Root, user: str, *paths: str) -> dict[str, str]:
    shutil.copy(REPO / "tests/fixtures/trespass.py", root.p("/tmp/trespass.py"))
    result = root.run("python3", "/tmp/trespass.py", SPOOL, STATE, *paths, user=user)
    return dict(json.loads(result.stdout))


def test_two_producers_cannot_touch_each_other(
    installed: Root, producers: tuple[str, str], smtp: SmtpServer
) -> None:
    a, b = producers
    _config(installed, smtp)
    # A's mail in every place a producer can reach: half-written in tmp/,
    # queued by hand in new/, and queued by `exactmaild submit`.
    half = _write_raw(installed, a, "a-half-written", rename=False)
    queued = _write_raw(installed, a, "a-queued-by-hand", rename=True)
    # A producer's mistake: written 0600 (umask 077), so the daemon may not
    # read it. It must fail with the fix, never stop the queue.
    _write_raw(installed, a, "a-unreadable", rename=True, umask=0o077)
    submitted = installed.run(
        "/usr/bin/exactmaild",
        "-c",
        CONFIG,
        "submit",
        user=a,
        input=b"To: patient@example.org\nSubject: from a via submit\n\nprivate\n",
    )
    qid = submitted.stdout.decode().strip()
    assert qid
    by_submit = f"{SPOOL}/new/{qid}"
    assert installed.p(by_submit).is_file()

    before = _trespass(installed, b, half, queued, by_submit)
    allowed = {k: v for k, v in before.items() if v == "ALLOWED"}
    assert not allowed, f"producer b could: {allowed}"
    # Everything A wrote is still there, untouched.
    for path in (half, queued, by_submit):
        assert b"private" in installed.p(path).read_bytes()
        assert b"X-Tampered" not in installed.p(path).read_bytes()
    # B can still do what a producer is for.
    installed.run(
        "env",
        f"EXACTMAILD_CONFIG={CONFIG}",
        "/usr/bin/exactmaild-sendmail",
        "-t",
        "-i",
        user=b,
        input=b"To: patient@example.org\nSubject: from b via sendmail\n\nhello\n",
    )

    # cron's way: a bare local name on the command line, no To: header.
    installed.run(
        "env",
        f"EXACTMAILD_CONFIG={CONFIG}",
        "/usr/bin/exactmaild-sendmail",
        "-i",
        "root",
        user=b,
        input=b"Subject: from b as cron\n\nall fine\n",
    )
    # Who submitted each message is on record: its file's owner.
    shown = installed.run("/usr/bin/exactmaild", "-c", CONFIG, "queue", "show", qid)
    assert f"submitted by: {a} (uid " in shown.stdout.decode()

    # Not allowed is exit 77 from every front, naming the group to join; and
    # a producer is never told "not running" about a daemon it cannot see.
    for cmd in (["submit"], ["sendmail", "-t", "-i"]):
        refused = installed.run(
            "/usr/bin/exactmaild",
            "-c",
            CONFIG,
            *cmd,
            user="outsider",
            input=b"To: patient@example.org\n\nx\n",
            check=False,
        )
        assert refused.returncode == 77, refused.stderr
        assert b"usermod -aG exactmaild-submit outsider" in refused.stderr
    refused = installed.run(
        "env",
        f"EXACTMAILD_CONFIG={CONFIG}",
        "/usr/bin/exactmaild-sendmail",
        "-t",
        user="outsider",
        input=b"To: patient@example.org\n\nx\n",
        check=False,
    )
    assert refused.returncode == 77, refused.stderr
    for cmd in (["flush"], ["queue", "list"], ["status"]):
        refused = installed.run("/usr/bin/exactmaild", "-c", CONFIG, *cmd, user=b, check=False)
        assert refused.returncode == 77, (cmd, refused.stdout, refused.stderr)
        assert b"not running" not in refused.stderr
        assert b"permission denied for user producer-b" in refused.stderr

    # The daemon, as the user exactmaild, reads every producer's message
    # (through the setgid group) and sends it.
    log = installed.p("/tmp/daemon.log").open("wb")
    daemon = subprocess.Popen(
        [*installed.chroot("exactmaild"), "/usr/bin/exactmaild", "-c", CONFIG, "run"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=ENV,
    )
    try:
        got = smtp.sink.wait_for(4, timeout=30)
        subjects = sorted(
            line
            for m in got
            for line in m.data.decode().splitlines()
            if line.startswith("Subject:")
        )
        assert subjects == [
            "Subject: from a via submit",
            "Subject: from b as cron",
            "Subject: from b via sendmail",
            "Subject: from producer-a a-queued-by-hand",
        ], installed.read("/tmp/daemon.log")
        (cron,) = [m for m in got if b"from b as cron" in m.data]
        assert cron.rcpt_tos == ["reception@practice.example"]
        assert b"X-Original-To: root" in cron.data
        assert installed.p(f"{STATE}/control.sock").exists()
        reason = installed.p(f"{SPOOL}/failed/a-unreadable.reason")
        assert wait_until(reason.exists), installed.read("/tmp/daemon.log")
        assert "mode 0640" in reason.read_text()

        after = _trespass(installed, b)
        allowed = {k: v for k, v in after.items() if v == "ALLOWED"}
        assert not allowed, f"producer b could: {allowed}"
        assert after["control socket"] == "EACCES"
        assert after["read state"] == "EACCES"
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        finally:
            log.close()
    assert daemon.returncode == 0, installed.read("/tmp/daemon.log")
    # Half-written mail stays where it is: only its producer can finish it.
    assert installed.p(half).is_file()


def test_remove_keeps_data_and_purge_asks_before_deleting_mail(installed: Root, deb: Path) -> None:
    # An admin enabled the service (the symlink `systemctl enable` makes):
    # purge must take it away too.
    wants = installed.p("/etc/systemd/system/multi-user.target.wants/exactmaild.service")
    wants.parent.mkdir(parents=True, exist_ok=True)
    wants.symlink_to("/lib/systemd/system/exactmaild.service")

    (installed.p(STATE) / "state-to-keep").write_text("x")
    removed = installed.dpkg("-r", "exactmaild")
    assert removed.returncode == 0, removed.stderr
    assert installed.p("/etc/exactmaild/exactmaild.yaml").is_file()
    assert installed.p(SPOOL + "/new").is_dir()
    assert installed.p(STATE + "/state-to-keep").is_file()
    assert not installed.p("/usr/lib/exactmaild").exists()

    # Queued mail (as if the daemon had been stopped with a backlog): purge
    # with the default answer keeps it, and says so.
    (installed.p(SPOOL + "/new") / "still-queued").write_bytes(b"To: x@example.org\n\nx\n")
    purged = installed.dpkg("--purge", "exactmaild")
    assert purged.returncode == 0, purged.stderr
    assert (installed.p(SPOOL + "/new") / "still-queued").is_file()
    assert "still hold mail" in purged.stderr
    assert not installed.p("/etc/exactmaild").exists()
    assert not wants.is_symlink()
    # The accounts stay, as Postfix's do.
    assert "exactmaild:" in installed.read("/etc/passwd")
    assert "exactmaild-submit:" in installed.read("/etc/group")

    # Reinstalled (the kept spool is taken over), then purged by an admin who
    # answered "delete" beforehand.
    again = installed.dpkg("-i", str(deb))
    assert again.returncode == 0, again.stderr
    installed.run(
        "debconf-set-selections", input=b"exactmaild exactmaild/purge-mail boolean true\n"
    )
    purged = installed.dpkg("--purge", "exactmaild")
    assert purged.returncode == 0, purged.stderr
    assert not installed.p(SPOOL).exists()
    assert not installed.p(STATE).exists()

    # Nothing queued: purge deletes without asking.
    again = installed.dpkg("-i", str(deb))
    assert again.returncode == 0, again.stderr
    purged = installed.dpkg("--purge", "exactmaild")
    assert purged.returncode == 0, purged.stderr
    assert not installed.p(SPOOL).exists()
