"""`exactmaild authorize` for Google: the code flow with PKCE and a loopback
redirect, against the local OAuth2 provider (tests/fixtures/tokens.py) whose
token endpoint checks the code_verifier against the S256 challenge.

The "browser" is urllib: following the provider's redirect reaches the
listener on 127.0.0.1; not following it gives the address a browser on
another machine would show, which the admin pastes on stdin."""

from __future__ import annotations

import io
import os
import re
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from exactmaild.auth.authorize import AuthorizationFailed, authorize
from exactmaild.auth.loopback import Pkce, exchange_code
from exactmaild.config.load import load
from exactmaild.config.model import Account, Auth
from exactmaild.core.errors import EX_UNAVAILABLE
from tests.fixtures.tokens import CLIENT_ID, CLIENT_SECRET, TokenServer, start_token_server
from tests.helpers import REPO
from tests.test_oauth import write_private

USER = "reception@practice.example"
URL_RE = re.compile(r"(http://127\.0\.0\.1:\d+/authorize\?\S+)")


@pytest.fixture
def tokens() -> Iterator[TokenServer]:
    ts = start_token_server()
    yield ts
    ts.stop()


def account(tmp: Path, ts: TokenServer) -> Account:
    return Account(
        address=USER,
        auth=Auth(
            method="oauth2",
            provider="google",
            username=USER,
            token_url=ts.token_url,
            authorization_url=ts.authorization_url,
            client_id=CLIENT_ID,
            client_secret_file=write_private(tmp / "client_secret", CLIENT_SECRET),
            refresh_token_file=tmp / "refresh_token",
            scope="https://mail.google.com/",
        ),
    )


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def sent_to(url: str) -> str:
    """Where the provider sends the browser (the address a remote browser shows)."""
    opener = urllib.request.build_opener(NoRedirect)
    with pytest.raises(urllib.error.HTTPError) as answer:
        opener.open(url, timeout=10)
    assert answer.value.code == 302
    return str(answer.value.headers["Location"])


def follow(url: str) -> str:
    """A browser on this machine: follows the redirect to the listener."""
    with urllib.request.urlopen(url, timeout=10) as page:
        return str(page.read().decode())


class Run:
    """`authorize()` in a thread, its output readable while it waits; stdin a pipe."""

    def __init__(self, acct: Account, **kwargs: object) -> None:
        self.out = io.StringIO()
        r, w = os.pipe()
        self.inp = os.fdopen(r, "r")
        self.paste_end = os.fdopen(w, "w")
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(acct, kwargs), daemon=True)
        self.thread.start()

    def _run(self, acct: Account, kwargs: dict[str, object]) -> None:
        try:
            authorize(acct, out=self.out, inp=self.inp, **kwargs)  # type: ignore[arg-type]
        except BaseException as exc:
            self.error = exc

    def url(self) -> str:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = URL_RE.search(self.out.getvalue())
            if m:
                return m.group(1)
            time.sleep(0.01)
        raise AssertionError(self.out.getvalue())

    def paste(self, line: str) -> None:
        self.paste_end.write(line + "\n")
        self.paste_end.flush()

    def join(self) -> None:
        self.thread.join(20)
        assert not self.thread.is_alive(), self.out.getvalue()
        self.paste_end.close()


def test_google_preset_has_the_authorization_endpoint(tmp_path: Path) -> None:
    config = tmp_path / "exactmaild.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "account": {
                    "address": USER,
                    "auth": {
                        "method": "oauth2",
                        "provider": "google",
                        "client_id": CLIENT_ID,
                        "refresh_token_file": str(tmp_path / "rt"),
                    },
                },
                "incoming": "none",
                "spool": {"dir": str(tmp_path / "spool")},
                "state_dir": str(tmp_path / "state"),
            }
        )
    )
    auth = load(config).account.auth
    assert auth.authorization_url == "https://accounts.google.com/o/oauth2/v2/auth"
    assert auth.token_url == "https://oauth2.googleapis.com/token"


def test_cli_browser_redirect_stores_the_token(tmp_path: Path, tokens: TokenServer) -> None:
    write_private(tmp_path / "client_secret", CLIENT_SECRET)
    config = tmp_path / "exactmaild.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "account": {
                    "address": USER,
                    "auth": {
                        "method": "oauth2",
                        "provider": "google",
                        "token_url": tokens.token_url,
                        "authorization_url": tokens.authorization_url,
                        "client_id": CLIENT_ID,
                        "client_secret_file": str(tmp_path / "client_secret"),
                        "refresh_token_file": str(tmp_path / "refresh_token"),
                    },
                },
                "incoming": "none",
                "spool": {"dir": str(tmp_path / "spool")},
                "state_dir": str(tmp_path / "state"),
                "metrics": {"listen": "off"},
            }
        )
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "exactmaild", "authorize", "-c", str(config)],
        stdin=subprocess.PIPE,  # held open: the answer comes through the browser
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        m = URL_RE.search(line)
        if m:
            break
    else:
        raise AssertionError("".join(lines) + proc.communicate()[1])
    page = follow(m.group(1))
    assert "exactmaild received the answer" in page
    proc.wait(30)
    assert proc.stderr is not None and proc.stdin is not None
    proc.stdin.close()
    # read() and not communicate(): the loop above left lines in stdout's buffer
    out, err = "".join(lines) + proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, out + err
    assert "ssh -L" in out and "Authorised" in out
    stored = (tmp_path / "refresh_token").read_text().strip()
    assert stored in tokens.provider.current_refresh_tokens
    assert stat.S_IMODE((tmp_path / "refresh_token").stat().st_mode) == 0o600
    for secret in [*tokens.provider.issued, CLIENT_SECRET]:
        assert secret not in out and secret not in err
    (query,) = tokens.provider.authorize_queries
    assert query["code_challenge_method"] == "S256"
    assert query["access_type"] == "offline" and query["login_hint"] == USER
    assert query["redirect_uri"].startswith("http://127.0.0.1:")
    assert query["scope"] == "https://mail.google.com/"  # the preset's
    (grant,) = [r for r in tokens.provider.requests if r.get("grant_type") == "authorization_code"]
    assert len(grant["code_verifier"]) >= 43  # RFC 7636 4.1


def test_pasted_address_is_accepted(tmp_path: Path, tokens: TokenServer) -> None:
    run = Run(account(tmp_path, tokens))
    address = sent_to(run.url())
    run.paste("I am not an address")
    run.paste(address)
    run.join()
    assert run.error is None, run.out.getvalue()
    assert "not the address the browser was sent to" in run.out.getvalue()
    assert (tmp_path / "refresh_token").read_text().strip() in tokens.provider.refresh_tokens


def test_wrong_state_is_refused(tmp_path: Path, tokens: TokenServer) -> None:
    run = Run(account(tmp_path, tokens))
    address = sent_to(run.url())
    forged = re.sub(r"state=[^&]+", "state=forged", address)
    run.paste(forged)
    run.join()
    assert isinstance(run.error, AuthorizationFailed), run.error
    assert "state does not match" in str(run.error)
    assert run.error.exit_code == EX_UNAVAILABLE
    assert not (tmp_path / "refresh_token").exists()
    # the code was never offered to the token endpoint
    assert tokens.provider.grants("authorization_code") == 0


def test_access_denied_in_the_redirect(tmp_path: Path, tokens: TokenServer) -> None:
    tokens.provider.deny = True
    run = Run(account(tmp_path, tokens))
    follow(run.url())
    run.join()
    assert isinstance(run.error, AuthorizationFailed)
    assert "declined (access_denied)" in str(run.error) and "again" in str(run.error)
    assert not (tmp_path / "refresh_token").exists()


def test_the_server_checks_the_verifier(tmp_path: Path, tokens: TokenServer) -> None:
    acct = account(tmp_path, tokens)
    pkce = Pkce.new()
    redirect = "http://127.0.0.1:9/"
    url = (
        tokens.authorization_url
        + "?"
        + urllib.parse.urlencode(
            {
                "redirect_uri": redirect,
                "state": pkce.state,
                "code_challenge": pkce.challenge,
                "code_challenge_method": "S256",
            }
        )
    )
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(sent_to(url)).query))["code"]
    wrong = replace(pkce, verifier=Pkce.new().verifier)
    with pytest.raises(AuthorizationFailed, match="invalid_grant: Invalid code verifier"):
        exchange_code(acct, code, redirect, wrong, CLIENT_SECRET)
    assert not tokens.provider.current_refresh_tokens


def test_no_answer_in_time(tmp_path: Path, tokens: TokenServer) -> None:
    ticks = iter([0.0, 0.0, 1000.0])
    with pytest.raises(AuthorizationFailed, match="no answer within"):
        authorize(
            account(tmp_path, tokens),
            out=io.StringIO(),
            inp=io.StringIO(""),
            wait=10,
            clock=lambda: next(ticks),
        )


@pytest.mark.parametrize("error", ["authorization_declined", "bad_verification_code"])
def test_microsoft_device_flow_refusals_say_run_again(
    tmp_path: Path, tokens: TokenServer, error: str
) -> None:
    tokens.provider.deny = True
    tokens.provider.deny_error = error
    tokens.provider.pending_polls = 0
    acct = account(tmp_path, tokens)
    acct = replace(
        acct,
        auth=replace(
            acct.auth,
            provider="microsoft365",
            authorization_url=None,
            device_authorization_url=tokens.device_url,
        ),
    )
    with pytest.raises(
        AuthorizationFailed, match=f"\\({error}\\).*run `exactmaild authorize` again"
    ):
        authorize(acct, out=io.StringIO(), sleep=lambda _: None)
    assert not (tmp_path / "refresh_token").exists()


def test_configuration_errors_are_located_in_the_file(tmp_path: Path) -> None:
    config = tmp_path / "exactmaild.yaml"
    config.write_text(
        "account:\n"
        f"  address: {USER}\n"
        "  auth:\n"
        "    method: oauth2\n"
        "    provider: custom\n"
        "    token_url: http://127.0.0.1:9/token\n"
        f"    client_id: {CLIENT_ID}\n"
        f"    refresh_token_file: {tmp_path / 'refresh_token'}\n"
        "incoming: none\n"
        "outgoing: {host: 127.0.0.1, port: 2525, security: none}\n"
        f"spool: {{dir: {tmp_path / 'spool'}}}\n"
        f"state_dir: {tmp_path / 'state'}\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "exactmaild", "authorize", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 78, done.stderr
    assert done.stderr.startswith(f"{config}:5: account.auth.device_authorization_url: required"), (
        done.stderr
    )
