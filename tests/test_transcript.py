"""The session in docs/operations.md ("A session, checked") is run against the
real commands and a real SMTP server, so the documentation cannot drift from
what the code prints.

The runner is doctest's idea for a shell session: the block after
`<!-- transcript -->` is lines `$ COMMAND` each followed by its expected
output (stdout and stderr as a terminal shows them), then `[exit N]` if it
failed. Placeholders stand for what changes from run to run; `...` alone on
a line stands for any number of lines. The configuration is the YAML block
after `<!-- transcript-config -->`, with its directory and SMTP port
replaced by this run's.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.smtp import start_smtp
from tests.helpers import REPO

DOC = REPO / "docs" / "operations.md"
DEMO = "/srv/practice"  # the directory the transcript shows
DEMO_PORT = "port: 2525"

PLACEHOLDERS = {
    "<PID>": r"\d+",
    "<QID>": r"\d{8}T\d{6}\.\d+\.\d+\.[0-9a-f]+",
    "<USER>": r"\S+",
    "<WHEN>": r"[^\n]+?",
    "<CMD>": r"`[^`\n]+`",
}


def block_after(text: str, marker: str) -> str:
    """The fenced block that follows the HTML comment `marker`."""
    match = re.search(rf"<!-- {re.escape(marker)} -->\n```[a-z]*\n(.*?)\n```", text, re.S)
    assert match, f"no block after <!-- {marker} --> in {DOC}"
    return match.group(1)


def steps(block: str) -> list[tuple[str, list[str]]]:
    """The commands, each with its expected output lines."""
    result: list[tuple[str, list[str]]] = []
    for line in block.split("\n"):
        if line.startswith("$ "):
            result.append((line[2:], []))
        else:
            assert result, f"output before the first command: {line!r}"
            result[-1][1].append(line)
    return result


def pattern(expected: list[str]) -> re.Pattern[str]:
    parts = []
    for line in expected:
        if line == "...":
            parts.append(r"(?:[^\n]*\n)*?")
            continue
        text = re.escape(line)
        for name, rx in PLACEHOLDERS.items():
            text = text.replace(re.escape(name), rx)
        parts.append(text + r"\n")
    return re.compile("".join(parts))


# The account and password the session logs in with (its printf and its YAML).
LOGIN = ("reception@practice.example", "the-password")


def test_the_session_in_operations_md(tmp_path: Path) -> None:
    controller, smtp_server = start_smtp("none", auth=True, login=LOGIN)
    try:
        _run_session(tmp_path, smtp_server.port)
    finally:
        controller.stop()


def _run_session(tmp_path: Path, smtp_port: int) -> None:
    doc = DOC.read_text()
    work = tmp_path / "practice"
    work.mkdir()
    port = f"port: {smtp_port}"
    config = block_after(doc, "transcript-config").replace(DEMO, str(work))
    (work / "exactmaild.yaml").write_text(config.replace(DEMO_PORT, port) + "\n")
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "EXACTMAILD_CONFIG": str(work / "exactmaild.yaml"),
        "PYTHONUNBUFFERED": "1",  # stdout and stderr in the order a terminal shows them
        "NO_COLOR": "1",
    }
    try:
        for command, expected in steps(block_after(doc, "transcript")):
            r = subprocess.run(
                ["bash", "-c", f"umask 022; {command}"],
                cwd=work,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=60,
            )
            shown = r.stdout.replace(str(work), DEMO).replace(port, DEMO_PORT)
            if r.returncode:
                shown += f"[exit {r.returncode}]\n"
            if not pattern(expected).fullmatch(shown):
                pytest.fail(
                    f"$ {command}\n--- the doc says:\n"
                    + "\n".join(expected)
                    + f"\n--- the command printed:\n{shown}"
                )
    finally:
        pidfile = work / "state" / "exactmaild.pid"
        if pidfile.exists():
            subprocess.run(["bash", "-c", f"kill $(cat {pidfile}) 2>/dev/null"], check=False)
