"""The Debian package: built from this checkout, unpacked into a scratch root, run.

Slow (about 10-20 s: two builds, to show they are the same bytes). The
installed venv's scripts have `#!/usr/lib/exactmaild/bin/python`, which does
not exist on the build host, so the unpacked copy is run as
`<root>/usr/lib/exactmaild/bin/python -m exactmaild` (Python locates the venv
from pyvenv.cfg beside the interpreter path it was started as). The real
entry points, installed, are run by tests/test_package_install.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from exactmaild import __version__

REPO = Path(__file__).resolve().parent.parent
VENV = "usr/lib/exactmaild"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("dpkg-deb") is None or shutil.which("dpkg") is None,
        reason="dpkg-deb/dpkg not installed: the Debian package is not built",
    ),
]

EXPECTED = {
    "./usr/bin/exactmaild",
    "./usr/bin/exactmaild-sendmail",
    f"./{VENV}/bin/python",
    f"./{VENV}/bin/exactmaild",
    f"./{VENV}/bin/exactmaild-sendmail",
    f"./{VENV}/pyvenv.cfg",
    "./lib/systemd/system/exactmaild.service",
    "./lib/systemd/system/exactmaild@.service",
    "./usr/lib/sysusers.d/exactmaild.conf",
    "./usr/lib/tmpfiles.d/exactmaild.conf",
    "./etc/exactmaild/exactmaild.yaml",
    "./usr/share/exactmaild/exactmaild-rules.yml",
    "./usr/share/exactmaild/scrape-example.yml",
    "./usr/share/exactmaild/exactmaild-dashboard.json",
    "./usr/share/exactmaild/notify-reload.conf",
    "./usr/share/doc/exactmaild/copyright",
    "./usr/share/doc/exactmaild/changelog.Debian.gz",
    "./usr/share/man/man1/exactmaild.1.gz",
    "./usr/share/man/man1/exactmaild-sendmail.1.gz",
    "./usr/share/lintian/overrides/exactmaild",
}


def changelog_version() -> str:
    return subprocess.run(
        ["dpkg-parsechangelog", "-l", str(REPO / "packaging/debian/changelog"), "-S", "Version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def clean_env() -> dict[str, str]:
    """The host's environment minus anything that would steer another Python."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    }


@pytest.fixture(scope="module")
def unpacked(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=60)
    return root


def test_contents_and_control(deb: Path) -> None:
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    paths = {line.split()[5] for line in listing.splitlines()}
    assert paths >= EXPECTED, EXPECTED - paths
    # Never the MTA's name: that belongs to postfix/exim/nullmailer.
    assert "./usr/sbin/sendmail" not in paths
    assert all(line.split()[1] == "root/root" for line in listing.splitlines())
    version = changelog_version()
    assert version.startswith(f"{__version__}-")
    assert f"_{version}_" in deb.name
    # No bytecode (postinst compiles it), no unstripped or embedded native code.
    assert not [p for p in paths if "__pycache__" in p or p.endswith(".pyc")]
    assert not [p for p in paths if p.endswith(".so") or ".so." in p]

    def field(name: str) -> str:
        return subprocess.run(
            ["dpkg-deb", "--field", str(deb), name], capture_output=True, text=True, check=True
        ).stdout.strip()

    assert field("Package") == "exactmaild"
    assert field("Version") == version
    assert field("Architecture") == "all"
    depends = field("Depends")
    for needed in ("python3 (>= 3.11~)", "adduser", "debconf", "init-system-helpers", "tzdata"):
        assert needed in depends, depends
    assert "localhost" not in field("Maintainer")
    conffiles = subprocess.run(
        ["dpkg-deb", "--info", str(deb), "conffiles"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert conffiles == ["/etc/exactmaild/exactmaild.yaml"]


def test_symlinks_and_relocation(unpacked: Path) -> None:
    # Relative, within /usr.
    assert os.readlink(unpacked / "usr/bin/exactmaild") == "../lib/exactmaild/bin/exactmaild"
    assert (
        os.readlink(unpacked / "usr/bin/exactmaild-sendmail")
        == "../lib/exactmaild/bin/exactmaild-sendmail"
    )
    assert os.readlink(unpacked / VENV / "bin/python3") == "../../../bin/python3"
    for script in ("exactmaild", "exactmaild-sendmail"):
        first = (unpacked / VENV / "bin" / script).read_text().splitlines()[0]
        assert first == "#!/usr/lib/exactmaild/bin/python"
    cfg = (unpacked / VENV / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg
    assert "exactmaild-deb." not in cfg  # the build's staging directory
    # Library modules that are not executable carry no interpreter line.
    site = next((unpacked / VENV / "lib").glob("python3*/site-packages"))
    for py in site.rglob("*.py"):
        if not os.access(py, os.X_OK):
            assert not py.read_bytes().startswith(b"#!"), py


def test_the_build_is_reproducible(deb: Path, tmp_path: Path) -> None:
    """The same checkout, built again, gives the same bytes."""
    result = subprocess.run(
        ["bash", str(REPO / "packaging/build-deb.sh"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    (again,) = tmp_path.glob("exactmaild_*.deb")
    assert again.read_bytes() == deb.read_bytes()


def test_copyright_names_what_is_bundled(unpacked: Path) -> None:
    """Every bundled distribution has its stanza, and nothing unshipped is named."""
    text = (unpacked / "usr/share/doc/exactmaild/copyright").read_text()
    site = next((unpacked / VENV / "lib").glob("python3*/site-packages"))
    shipped = {
        d.name.split("-")[0].lower().replace("_", "-")
        for d in site.glob("*.dist-info")
        if not d.name.startswith("exactmaild-")
    }
    named = {
        line.split()[1].lower().replace("_", "-")
        for line in text.splitlines()
        if line.startswith("Comment: ") and len(line.split()) > 2 and line.split()[2][0].isdigit()
    }
    assert named == shipped


def test_runs_from_the_scratch_root(unpacked: Path) -> None:
    # bin/python3 is ../../../bin/python3: in the scratch root, that is this
    # host's Debian interpreter (the one the package depends on).
    if not Path("/usr/bin/python3").exists():
        pytest.skip("no /usr/bin/python3 on this host")
    (unpacked / "usr/bin/python3").symlink_to("/usr/bin/python3")
    python = unpacked / VENV / "bin/python"
    probe = (
        "import sys, exactmaild, yaml, structlog, prometheus_client, daemon, "
        "inotify_simple\n"
        "assert sys.prefix == sys.argv[1], (sys.prefix, sys.argv[1])\n"
        "assert exactmaild.__file__.startswith(sys.argv[1]), exactmaild.__file__\n"
        "print(exactmaild.__version__)\n"
    )
    result = subprocess.run(
        [str(python), "-c", probe, str(unpacked / VENV)],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd="/",  # not the checkout: its exactmaild/ must not be imported
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == __version__

    version = subprocess.run(
        [str(python), "-m", "exactmaild", "--version"],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd="/",
        timeout=60,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"exactmaild {__version__}"
