"""The systemd units, sysusers.d and tmpfiles.d files, checked by systemd's own tools.

`systemd-analyze verify` works offline (no running systemd needed) but checks
that every Exec*= binary exists. /usr/bin/exactmaild exists only once the
package is installed, so the units are verified as copies whose
/usr/bin/exactmaild is replaced by a stub script in tmp_path; every other
line is the shipped text. Any stderr counts as failure: verify only *warns*
about unknown keys and bad values.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
BINARY = "/usr/bin/exactmaild"

# Exposure score of `systemd-analyze security --offline=true`, systemd 252
# (Debian 12): 1.1 "OK" for both units (0 = locked down, 10 = unprotected).
# What remains is inherent: network access (mail servers, metrics), AF_UNIX
# (journal, sd_notify), the host root directory and the rtc read ACL that
# ProtectClock= adds. Fail if a change loosens the hardening.
MAX_EXPOSURE = 1.5

needs_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze not installed (package systemd): units not verified",
)


def stubbed(unit: Path, tmp_path: Path) -> Path:
    stub = tmp_path / "bin" / "exactmaild"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = unit.read_text()
    assert BINARY in text
    copy = tmp_path / unit.name
    copy.write_text(text.replace(BINARY, str(stub)))
    return copy


def directives(unit: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in unit.read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


@needs_analyze
@pytest.mark.parametrize(
    "target",
    ["exactmaild.service", "exactmaild@.service", "exactmaild@.service:exactmaild@branch.service"],
)
def test_verify_is_clean(target: str, tmp_path: Path) -> None:
    name, _, instance = target.partition(":")
    copy = stubbed(UNITS / name, tmp_path)
    arg = f"{copy}:{instance}" if instance else str(copy)
    result = subprocess.run(
        ["systemd-analyze", "verify", arg], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@needs_analyze
def test_verify_catches_mistakes(tmp_path: Path) -> None:
    """The check above is not vacuous: a typo'd key shows up on stderr."""
    copy = stubbed(UNITS / "exactmaild.service", tmp_path)
    copy.write_text(copy.read_text().replace("ProtectClock=", "ProtectClok="))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert "ProtectClok" in result.stderr


@needs_analyze
@pytest.mark.parametrize("name", ["exactmaild.service", "exactmaild@.service"])
def test_security_exposure(name: str, tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNITS / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    print(f"{name}: exposure {match.group(1)} {match.group(2)}")  # visible with -s
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_main_unit_contract() -> None:
    d = directives(UNITS / "exactmaild.service")
    assert d["Type"] == ["notify"]
    assert d["ExecStart"] == ["/usr/bin/exactmaild run"]
    assert d["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert d["WatchdogSec"] == ["60"]
    assert d["Restart"] == ["on-failure"]
    assert d["RestartPreventExitStatus"] == ["78"]  # EX_CONFIG: restarting won't help
    for key in ("StateDirectory", "RuntimeDirectory", "ConfigurationDirectory"):
        assert d[key] == ["exactmaild"]
    assert d["User"] == d["Group"] == ["exactmaild"]
    assert d["ReadWritePaths"] == ["/var/spool/exactmaild"]
    assert d["ProtectSystem"] == ["strict"]
    assert d["CapabilityBoundingSet"] == [""]
    assert d["MemoryDenyWriteExecute"] == ["yes"]
    assert d["UMask"] == ["0027"]
    assert d["RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6"]


def test_template_is_the_main_unit_per_instance() -> None:
    main = directives(UNITS / "exactmaild.service")
    tmpl = directives(UNITS / "exactmaild@.service")
    assert tmpl["ExecStart"] == ["/usr/bin/exactmaild -c /etc/exactmaild/%i.yaml run"]
    assert tmpl["StateDirectory"] == ["exactmaild/%i"]
    assert tmpl["RuntimeDirectory"] == ["exactmaild/%i"]
    assert tmpl["ReadWritePaths"] == ["/var/spool/exactmaild/%i"]
    assert tmpl["ExecStartPre"] == [
        "+/usr/bin/install -d -m 0710 -o exactmaild -g exactmaild-submit /var/spool/exactmaild/%i",
        "+/usr/bin/install -d -m 3733 -o exactmaild -g exactmaild"
        " /var/spool/exactmaild/%i/tmp /var/spool/exactmaild/%i/new",
    ]
    per_instance = {
        "Description",
        "ExecStart",
        "ExecStartPre",
        "StateDirectory",
        "RuntimeDirectory",
        "ReadWritePaths",
    }
    # Everything else (hardening above all) must not drift between the two.
    assert {k: v for k, v in tmpl.items() if k not in per_instance} == {
        k: v for k, v in main.items() if k not in per_instance
    }


def test_notify_reload_dropin() -> None:
    d = directives(UNITS / "notify-reload.conf")
    assert d["Type"] == ["notify-reload"]
    assert d["ExecReload"] == [""]  # cleared, or SIGHUP would be sent twice


@pytest.mark.skipif(
    shutil.which("systemd-sysusers") is None or shutil.which("systemd-tmpfiles") is None,
    reason="systemd-sysusers/systemd-tmpfiles not installed: sysusers/tmpfiles not applied",
)
def test_sysusers_and_tmpfiles_apply_to_a_scratch_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for kind in ("sysusers.d", "tmpfiles.d"):
        (root / "usr/lib" / kind).mkdir(parents=True)
        shutil.copy(UNITS / kind / "exactmaild.conf", root / "usr/lib" / kind)
    (root / "etc").mkdir()
    for tool in (["systemd-sysusers"], ["systemd-tmpfiles", "--create"]):
        result = subprocess.run(
            [*tool, f"--root={root}"], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert "ignoring" not in result.stderr.lower(), result.stderr
    users = {
        line.split(":")[0]: line.split(":")
        for line in (root / "etc/passwd").read_text().splitlines()
    }
    assert set(users) == {"exactmaild"}
    assert users["exactmaild"][5] == "/var/lib/exactmaild"
    assert users["exactmaild"][6].strip().endswith("nologin")
    groups = {
        line.split(":")[0]: int(line.split(":")[2])
        for line in (root / "etc/group").read_text().splitlines()
    }
    assert set(groups) == {"exactmaild", "exactmaild-submit"}
    # The submission model (tmpfiles.d/exactmaild.conf): producers pass through
    # the spool to the sticky, unreadable, setgid tmp/ and new/, and see nothing else.
    expected = {
        "var/spool/exactmaild": (0o710, "exactmaild-submit"),
        "var/spool/exactmaild/tmp": (0o3733, "exactmaild"),
        "var/spool/exactmaild/new": (0o3733, "exactmaild"),
        "var/spool/exactmaild/active": (0o750, "exactmaild"),
        "var/spool/exactmaild/failed": (0o750, "exactmaild"),
        "var/lib/exactmaild": (0o750, "exactmaild"),
    }
    for sub, (mode, group) in expected.items():
        st = (root / sub).stat()
        assert oct(st.st_mode & 0o7777) == oct(mode), sub
        assert st.st_gid == groups[group], sub
