"""The Debian package: built from this checkout, unpacked into a scratch root, run.

Slow (about 5-10 s: pip resolves and installs every dependency). The
installed venv's scripts have `#!/opt/exactmaild/bin/python`, which does not
exist on the build host, so the unpacked copy is run as
`<root>/opt/exactmaild/bin/python -m exactmaild` (Python locates the venv
from pyvenv.cfg beside the interpreter path it was started as). When the
kernel lets us, the real entry-point script is also run inside a private
mount namespace where the unpacked tree is bind-mounted on /opt/exactmaild.
"""

from __future__ import annotations

import marshal
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from exactmaild import __version__

REPO = Path(__file__).resolve().parent.parent
VENV = "opt/exactmaild"

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
}


def clean_env() -> dict[str, str]:
    """The host's environment minus anything that would steer another Python."""
    return {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONHOME", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    }


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("deb")
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(REPO / "packaging/build-deb.sh"), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    elapsed = time.monotonic() - started
    print(f"package built in {elapsed:.1f} s")
    assert elapsed < 120, "the package build should take well under a minute"
    (package,) = out.glob("exactmaild_*.deb")
    assert Path(result.stdout.strip().splitlines()[-1]) == package
    return package


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
    assert f"{__version__}-1_" in deb.name

    def field(name: str) -> str:
        return subprocess.run(
            ["dpkg-deb", "--field", str(deb), name], capture_output=True, text=True, check=True
        ).stdout.strip()

    assert field("Package") == "exactmaild"
    assert field("Version") == f"{__version__}-1"
    assert "python3 (>= 3.11~)" in field("Depends")
    conffiles = subprocess.run(
        ["dpkg-deb", "--info", str(deb), "conffiles"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert conffiles == ["/etc/exactmaild/exactmaild.yaml"]


def test_symlinks_and_relocation(unpacked: Path) -> None:
    assert os.readlink(unpacked / "usr/bin/exactmaild") == "/opt/exactmaild/bin/exactmaild"
    assert (
        os.readlink(unpacked / "usr/bin/exactmaild-sendmail")
        == "/opt/exactmaild/bin/exactmaild-sendmail"
    )
    for script in ("exactmaild", "exactmaild-sendmail"):
        first = (unpacked / VENV / "bin" / script).read_text().splitlines()[0]
        assert first == "#!/opt/exactmaild/bin/python"
    cfg = (unpacked / VENV / "pyvenv.cfg").read_text()
    assert "include-system-site-packages = false" in cfg
    assert "exactmaild-deb." not in cfg  # the build's staging directory
    # Bytecode is shipped, compiled with the installed paths in it (so
    # tracebacks name real files).
    pycs = list(
        (unpacked / VENV / "lib").glob("python3*/site-packages/exactmaild/__pycache__/*.pyc")
    )
    assert pycs
    code = marshal.loads(pycs[0].read_bytes()[16:])
    assert code.co_filename.startswith("/opt/exactmaild/lib/python3"), code.co_filename


def test_runs_from_the_scratch_root(unpacked: Path) -> None:
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


def test_entry_point_script_at_its_real_path(unpacked: Path) -> None:
    """/opt/exactmaild/bin/exactmaild (where /usr/bin/exactmaild points), shebang and all."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare not installed: entry-point script not run at /opt/exactmaild")
    # A tmpfs over /opt (the host's /opt stays untouched), the unpacked venv
    # bind-mounted where its shebangs point, then the script itself.
    script = (
        "set -e; mount -t tmpfs none /opt; mkdir /opt/exactmaild; "
        f"mount --bind {unpacked / VENV} /opt/exactmaild; "
        "exec /opt/exactmaild/bin/exactmaild --version"
    )
    result = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd="/",
        timeout=60,
    )
    if result.returncode != 0 and ("unshare failed" in result.stderr or "mount:" in result.stderr):
        pytest.skip(f"no private mount namespace here: {result.stderr.strip()}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"exactmaild {__version__}"
