"""TlsContexts keeps one context per CA file across connections and builds a
new one when the file changes on disk; a bad file raises and is not kept."""

from __future__ import annotations

import os
import shutil
import ssl
from pathlib import Path

import pytest

from exactmaild.auth.tls import TlsContexts
from tests.fixtures.smtp import make_cert


def test_kept_until_the_ca_file_changes(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    ca = tmp_path / "ca.pem"
    shutil.copy(make_cert(tmp_path / "a")[0], ca)
    contexts = TlsContexts()
    first = contexts.get(ca)
    assert contexts.get(ca) is first
    assert first.verify_mode == ssl.CERT_REQUIRED and first.check_hostname
    system = contexts.get(None)
    assert contexts.get(None) is system and system is not first
    shutil.copy(make_cert(tmp_path / "b")[0], tmp_path / "ca.new")
    os.replace(tmp_path / "ca.new", ca)
    assert contexts.get(ca) is not first


def test_a_bad_ca_file_raises_and_is_tried_again(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    contexts = TlsContexts()
    with pytest.raises(OSError):
        contexts.get(ca)  # missing
    ca.write_text("not a certificate\n")
    with pytest.raises(ssl.SSLError):
        contexts.get(ca)
    (tmp_path / "a").mkdir()
    shutil.copy(make_cert(tmp_path / "a")[0], ca)
    assert contexts.get(ca) is contexts.get(ca)
