"""Every bad spool input lands in failed/ with a reason (or is ignored, for
non-files), nothing of it is sent, and a good message queued after it is
delivered. Real daemon process, real SMTP server."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from tests.fixtures.smtp import SmtpServer
from tests.helpers import Daemon, message, wait_until, write_config

SECRET = b"root:$6$secret-hash-that-must-never-leave:19000:0:99999:7:::"


def drop(spool: Path, name: str, data: bytes) -> None:
    (spool / "tmp" / name).write_bytes(data)
    os.rename(spool / "tmp" / name, spool / "new" / name)


def test_bad_inputs_fail_with_reasons_and_good_mail_goes(
    tmp_path: Path, smtp_server: SmtpServer
) -> None:
    cfg = write_config(
        tmp_path, smtp_server, spool={"dir": str(tmp_path / "spool"), "max_message_size": "2KB"}
    )
    port = int(yaml.safe_load(cfg.read_text())["metrics"]["listen"].rsplit(":", 1)[1])
    spool = tmp_path / "spool"
    for d in ("tmp", "new"):
        (spool / d).mkdir(parents=True)
    secret = tmp_path / "shadow"
    secret.write_bytes(SECRET)

    failing = {
        "empty": (b"", "empty"),
        "junk": (b"\x89PNG\r\n\x1a\n binary junk here", "not an RFC 5322 message"),
        "no-rcpt": (b"Subject: hello\nFrom: a@example.org\n\nbody\n", "no recipient"),
        "oversize": (message(1) + b"x" * 3000, "larger than spool.max_message_size"),
        "nul": (b"To: a@example.org\nSubject: nul\n\nbo\0dy\n", "NUL"),
        "eightbit": ("To: a@example.org\nSubject: Zahnärzt\n\nbody\n".encode(), "8-bit"),
        "bad-address": (b"To: not an address\nSubject: x\n\nbody\n", "no valid recipient"),
    }
    for name, (data, _) in failing.items():
        drop(spool, name, data)
    # Non-files: never followed, never sent, never moved by following them.
    os.symlink(secret, spool / "new" / "link-to-secret")
    (spool / "new" / "a-directory").mkdir()
    (spool / "new" / ".hidden").write_bytes(message(99))
    drop(spool, "zz-good", message(7, Bcc="hidden@example.org"))

    d = Daemon(cfg)
    d.wait_ready(port)
    try:
        got = smtp_server.sink.wait_for(1)
        assert len(got) == 1, d.log()
        assert wait_until(lambda: len(list((spool / "failed").glob("*.reason"))) == len(failing))
    finally:
        assert d.stop() == 0
    sent = smtp_server.sink.messages
    assert len(sent) == 1
    assert sorted(sent[0].rcpt_tos) == ["hidden@example.org", "patient7@example.org"]
    assert b"Bcc" not in sent[0].data and b"hidden@example.org" not in sent[0].data
    assert SECRET not in sent[0].data

    for name, (_, why) in failing.items():
        assert (spool / "failed" / name).exists(), name
        reason = (spool / "failed" / (name + ".reason")).read_text()
        assert why in reason, (name, reason)
    # The symlink is still a symlink in new/ (ignored, never opened), the secret untouched.
    assert (spool / "new" / "link-to-secret").is_symlink()
    assert secret.read_bytes() == SECRET
    assert (spool / "new" / "a-directory").is_dir()
    assert (spool / "new" / ".hidden").exists()
    assert "ignored_non_file" in d.log()
