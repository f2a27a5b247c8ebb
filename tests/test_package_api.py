"""The packages' declared APIs, and what importing them costs.

`exactmaild-sendmail` starts on every PHP mail() call, and every part of the
daemon imports the configuration types: neither may pull in the YAML loader
(or the daemon) just by being imported. A command queueing a message may
not import what only the daemon needs, and a daemon not what its
configuration does not use (OAuth2, attachments, python-daemon) nor the
metrics exposition before the first scrape: on a host running one daemon
per practice, each import is paid by every process (docs/fleet.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from types import ModuleType

import pytest

import exactmaild.cli
import exactmaild.config
from tests.helpers import REPO


def imported_by(statement: str, *, everything: bool = False, stdin: bytes = b"") -> set[str]:
    """The exactmaild and yaml modules (`everything`: all modules) a fresh interpreter
    has loaded after `statement`, which may end with SystemExit."""
    keep = "True" if everything else "m.split('.')[0] in ('exactmaild', 'yaml')"
    code = (
        "import sys, json, atexit\n"
        "atexit.register(lambda: sys.__stderr__.write('\\nMODULES ' + json.dumps(sorted("
        f"m for m in sys.modules if {keep}))))\n{statement}\n"
    )
    err = subprocess.run(
        [sys.executable, "-c", code], input=stdin, capture_output=True, cwd=REPO
    ).stderr.decode()
    assert "\nMODULES " in err, err
    return set(json.loads(err.rpartition("\nMODULES ")[2]))


# What only the daemon needs, or only some configurations: none of it may be
# imported to queue one message.
DAEMON_ONLY = {
    "structlog", "sqlite3", "ssl", "smtplib", "imaplib", "poplib", "asyncio",
    "prometheus_client", "daemon", "inotify_simple", "rich", "urllib.request",
    "http.client", "exactmaild.daemon", "exactmaild.store.state",
    "exactmaild.outbox.outbox", "exactmaild.outbox.claim", "exactmaild.auth",
    "exactmaild.receive", "exactmaild.send.sender", "exactmaild.send.smtp",
}  # fmt: skip


def heavy(loaded: set[str], forbidden: set[str]) -> set[str]:
    return {m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)}


def test_config_types_come_without_the_yaml_loader() -> None:
    for statement in ("import exactmaild.config.model", "from exactmaild.config import Config"):
        loaded = imported_by(statement)
        assert "exactmaild.config.model" in loaded
        assert not {"yaml", "exactmaild.config.load", "exactmaild.config.yamlnodes"} & loaded


def test_command_line_start_up_loads_no_configuration_daemon_or_spool() -> None:
    loaded = imported_by("from exactmaild.cli import main, sendmail_main")
    assert "exactmaild.cli.sendmail" in loaded
    heavy = {m for m in loaded if m == "yaml" or m.startswith("exactmaild.config")}
    heavy |= {
        m for m in loaded if m.split(".")[1:2] in (["daemon"], ["outbox"], ["send"], ["store"])
    }
    assert heavy == set()


@pytest.mark.parametrize("package", [exactmaild.config, exactmaild.cli])
def test_every_name_in_all_is_importable(package: ModuleType) -> None:
    names = package.__all__
    assert names
    namespace: dict[str, object] = {}
    exec(f"from {package.__name__} import *", namespace)
    assert set(names) <= set(namespace)


def test_config_load_is_the_loader_module() -> None:
    from exactmaild.config import load

    assert load.__name__ == "exactmaild.config.load"
    assert callable(load.load) and callable(load.parse) and callable(load.parse_duration)


def test_console_scripts_resolve() -> None:
    import tomllib

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {
        "exactmaild": "exactmaild.cli:main",
        "exactmaild-sendmail": "exactmaild.cli:sendmail_main",
    }
    for target in scripts.values():
        module, _, name = target.partition(":")
        assert callable(getattr(sys.modules[module], name))


def _queue_config(tmp_path: Path) -> Path:
    for d in ("tmp", "new"):
        (tmp_path / "spool" / d).mkdir(parents=True)
    path = tmp_path / "exactmaild.yaml"
    path.write_text(
        "account: {address: reception@practice.example, auth: {method: none}}\n"
        "incoming: none\n"
        "outgoing: {host: 127.0.0.1, port: 2525, security: none}\n"
        f"spool: {{dir: {tmp_path / 'spool'}}}\nstate_dir: {tmp_path / 'state'}\n"
    )
    return path


def test_queueing_a_message_imports_nothing_only_the_daemon_needs(tmp_path: Path) -> None:
    cfg = _queue_config(tmp_path)
    msg = b"To: patient@example.org\nSubject: Appointment\n\nSee you Tuesday.\n"
    sendmail = imported_by(
        f"sys.argv = ['exactmaild-sendmail', '-c', {str(cfg)!r}, '-t']\n"
        "from exactmaild.cli import sendmail_main\nsys.exit(sendmail_main())",
        everything=True,
        stdin=msg,
    )
    submit = imported_by(
        f"sys.argv = ['exactmaild', '-c', {str(cfg)!r}, 'submit']\n"
        "from exactmaild.cli import main\nsys.exit(main())",
        everything=True,
        stdin=msg,
    )
    assert len(os.listdir(tmp_path / "spool" / "new")) == 2  # both really queued
    assert heavy(sendmail, DAEMON_ONLY) == set()
    assert heavy(submit, DAEMON_ONLY) == set()
    # The sendmail front parses its flags by hand: no argparse, no other command.
    assert heavy(sendmail, {"argparse", "exactmaild.cli.main", "exactmaild.cli.control"}) == set()


def test_a_daemon_imports_only_what_its_configuration_uses() -> None:
    loaded = imported_by("import exactmaild.daemon.service", everything=True)
    assert "structlog" in loaded and "exactmaild.send.sender" in loaded
    unused = {
        "prometheus_client",  # until the first scrape
        "wsgiref",
        "daemon",  # python-daemon: only `run --daemon`
        "rich",  # structlog's pretty tracebacks, never used
        "urllib.request",  # the OAuth2 token endpoint
        "exactmaild.auth.tokens",
        "exactmaild.auth.authorize",
        "exactmaild.receive.attachments",  # only strip/extract
        "exactmaild.receive.mailbox.pop3",  # only POP3 accounts
        "exactmaild.daemon.exposition",
    }
    assert heavy(loaded, unused) == set()


def test_metrics_import_the_exposition_at_the_first_scrape(tmp_path: Path) -> None:
    from tests.fixtures.smtp import free_port

    port = free_port()
    code = (
        "import sys, urllib.request\n"
        "from exactmaild.daemon.metrics import Metrics\n"
        f"m = Metrics()\nstop = m.serve('127.0.0.1', {port})\nm.sent.inc()\n"
        "print('before', 'prometheus_client' in sys.modules, flush=True)\n"
        "sys.stdin.readline()\n"
        "print('after', 'prometheus_client' in sys.modules, flush=True)\nstop()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline().split() == [b"before", b"False"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert "exactmaild_sent_total 1.0" in text
        assert 'exactmaild_send_failures_total{kind="account"} 0.0' in text
        proc.stdin.write(b"\n")
        proc.stdin.flush()
        assert proc.stdout.readline().split() == [b"after", b"True"]
    finally:
        proc.stdin.close()
        assert proc.wait(10) == 0
