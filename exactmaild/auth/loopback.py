"""The OAuth2 authorization-code flow with PKCE and a loopback redirect, for `exactmaild authorize`.

Google's device flow takes only a few scopes (never `https://mail.google.com/`);
its guidance for installed apps is this flow (RFC 8252): exactmaild listens on
`http://127.0.0.1:PORT/`, prints the authorization URL, and the browser is
sent back to that address with a code once the user has signed in and agreed.

A server usually has no browser, so there are two ways back:

- the admin opens the URL on any machine, signs in, and pastes the address the
  browser was sent to (it fails to load there: nothing listens on that
  machine's 127.0.0.1) on the terminal: exactmaild reads it from stdin;
- or forwards the port first (`ssh -L PORT:127.0.0.1:PORT server`, with
  `exactmaild authorize --port PORT`), and the browser reaches exactmaild itself.

Both are accepted at the same time; the first answer wins. The answer must
carry the `state` sent (RFC 6749 section 10.12: a stale tab or a forged
redirect is refused), and the code is exchanged with the PKCE `code_verifier`
(RFC 7636, S256), so a code seen by anyone else is useless without it.
Nothing secret is printed: the code, the verifier and the tokens stay in memory.
"""

from __future__ import annotations

import base64
import hashlib
import queue
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import TextIO

from exactmaild.auth.tokens import (
    TOKEN_TIMEOUT,
    AuthorizationFailed,
    TokenReply,
    endpoint_host,
    post_form,
)
from exactmaild.config.model import Account
from exactmaild.core.errors import TemporaryFailure

AUTHORIZATION_CODE = "authorization_code"
# How long to wait for the user to sign in (Google's codes live 10 minutes once issued).
WAIT_SECONDS = 900.0
_ANSWER_PAGE = (
    "<!doctype html><title>exactmaild</title><p>exactmaild received the answer. "
    "The terminal where <code>exactmaild authorize</code> runs says whether it worked; "
    "this tab can be closed.</p>"
)


@dataclass(frozen=True)
class Pkce:
    """RFC 7636: the verifier stays here; its S256 challenge goes in the URL."""

    verifier: str
    challenge: str
    state: str

    @classmethod
    def new(cls) -> Pkce:
        # 64 random bytes: an 86-character verifier (RFC 7636 allows 43 to 128).
        verifier = secrets.token_urlsafe(64)
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        challenge = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
        return cls(verifier, challenge, secrets.token_urlsafe(24))


def authorization_request(account: Account, redirect_uri: str, pkce: Pkce) -> str:
    """The URL the user opens: code flow, S256, offline access, the mailbox as a hint."""
    auth = account.auth
    assert auth.authorization_url
    fields = {
        "response_type": "code",
        "client_id": auth.client_id or "",
        "redirect_uri": redirect_uri,
        "scope": auth.scope or "",
        "state": pkce.state,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        # Google issues a refresh token only with access_type=offline, and again
        # (after an earlier consent) only with prompt=consent.
        "access_type": "offline",
        "prompt": "consent",
        "login_hint": auth.username or account.address,
    }
    sep = "&" if "?" in auth.authorization_url else "?"
    return auth.authorization_url + sep + urllib.parse.urlencode(fields)


class Listener:
    """`http://127.0.0.1:PORT/` in a thread: every redirect's query goes to `answers`."""

    def __init__(self, port: int, answers: queue.Queue[tuple[str, str]]) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass  # the query holds the code: never logged

            def do_GET(self) -> None:
                parts = urllib.parse.urlsplit(self.path)
                if parts.path != "/" or not parts.query:
                    # A browser also asks for /favicon.ico: not an answer.
                    self.send_error(404)
                    return
                answers.put(("browser", parts.query))
                body = _ANSWER_PAGE.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        try:
            self.server = HTTPServer(("127.0.0.1", port), Handler)
        except OSError as exc:
            raise TemporaryFailure(
                f"cannot listen on 127.0.0.1 port {port} for the redirect: "
                f"{exc.strerror or exc}; choose another with `--port`"
            ) from None
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="authorize-redirect",
            daemon=True,
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def _read_pasted(inp: TextIO, answers: queue.Queue[tuple[str, str]]) -> None:
    # A daemon thread: a blocked readline() must not keep the process alive.
    for line in inp:
        answers.put(("pasted", line.strip()))
    answers.put(("eof", ""))


def parse_answer(text: str) -> Mapping[str, str] | None:
    """The query of a redirect address (whole URL, or just `?code=...&state=...`);
    None when the text is no such address."""
    text = text.strip()
    if not text:
        return None
    query = urllib.parse.urlsplit(text).query if "://" in text else text.lstrip("?")
    fields = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
    if "code" not in fields and "error" not in fields:
        return None
    return fields


def wait_for_code(
    pkce: Pkce,
    answers: queue.Queue[tuple[str, str]],
    *,
    out: TextIO,
    wait: float = WAIT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> str:
    """The code of the first answer (browser or pasted), after checking its state."""
    deadline = clock() + wait
    while True:
        left = deadline - clock()
        if left <= 0:
            raise AuthorizationFailed(
                f"no answer within {wait / 60:g} minutes: run `exactmaild authorize` again "
                "and sign in sooner"
            )
        try:
            source, text = answers.get(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if source == "eof":
            continue  # stdin closed: the browser may still come back
        fields = parse_answer(text)
        if fields is None:
            print(
                "That is not the address the browser was sent to: paste the whole "
                "address from the browser's address bar (it starts with http://127.0.0.1).",
                file=out,
                flush=True,
            )
            continue
        if not secrets.compare_digest(fields.get("state", ""), pkce.state):
            raise AuthorizationFailed(
                "the answer's state does not match this run (an older tab, another run "
                "of `exactmaild authorize`, or not from the provider): nothing was stored; "
                "run `exactmaild authorize` again and use only the address it prints"
            )
        error = fields.get("error", "")
        if error:
            raise _declined(error, fields.get("error_description", ""))
        return fields["code"]


def exchange_code(
    account: Account,
    code: str,
    redirect_uri: str,
    pkce: Pkce,
    secret: str,
    *,
    timeout: float = TOKEN_TIMEOUT,
) -> TokenReply:
    """Step 3: the code and the verifier for tokens at the token endpoint."""
    auth = account.auth
    assert auth.token_url
    fields = {
        "grant_type": AUTHORIZATION_CODE,
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": auth.client_id or "",
        "code_verifier": pkce.verifier,
    }
    if secret:
        # Google's desktop clients have a "secret" that is not one (RFC 8252
        # section 8.5), but its token endpoint still asks for it.
        fields["client_secret"] = secret
    reply = post_form(auth.token_url, fields, timeout=timeout)
    if reply.error == "invalid_grant":
        why = reply.description(secret, code) or "expired, used already, or a wrong verifier"
        raise AuthorizationFailed(
            f"{endpoint_host(auth.token_url)} refused the code (invalid_grant: {why}): "
            "nothing was stored; run `exactmaild authorize` again"
        )
    return reply


def _declined(error: str, description: str) -> AuthorizationFailed:
    detail = f"{error}: {' '.join(description.split())[:200]}" if description else error
    if error == "access_denied":
        return AuthorizationFailed(
            f"the sign-in was declined ({detail}): nothing was stored; run `exactmaild "
            "authorize` again and accept the requested permissions"
        )
    return AuthorizationFailed(
        f"the provider answered with an error ({detail}): nothing was stored; check "
        "account.auth.client_id and scope, then run `exactmaild authorize` again"
    )


def run_loopback(
    account: Account,
    secret: str,
    *,
    out: TextIO,
    inp: TextIO | None,
    port: int = 0,
    timeout: float = TOKEN_TIMEOUT,
    wait: float = WAIT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> TokenReply:
    """The whole exchange: listen, print the URL, wait for the answer, exchange the code.

    Returns the token endpoint's reply (the caller judges it as it judges the
    device flow's); raises AuthorizationFailed for a refusal of any kind."""
    auth = account.auth
    answers: queue.Queue[tuple[str, str]] = queue.Queue()
    listener = Listener(port, answers)
    try:
        redirect_uri = f"http://127.0.0.1:{listener.port}/"
        pkce = Pkce.new()
        url = authorization_request(account, redirect_uri, pkce)
        who = auth.username or account.address
        print(f"To let exactmaild use the mailbox {who}:", file=out)
        print("  1. open this address in a browser (on any computer):", file=out)
        print(f"     {url}", file=out)
        print(f"  2. sign in as {who} and accept the permissions.", file=out)
        print(
            f"  3. the browser is then sent to {redirect_uri}?...: exactmaild listens there.\n"
            "     On another computer that page fails to load: copy the whole address from\n"
            "     the browser's address bar and paste it here, then press Enter.\n"
            f"     (Or forward the port first: ssh -L {listener.port}:127.0.0.1:{listener.port} "
            "THIS-SERVER)",
            file=out,
        )
        print(f"Waiting up to {wait / 60:g} minutes...", file=out, flush=True)
        if inp is not None:
            threading.Thread(
                target=_read_pasted, args=(inp, answers), name="authorize-paste", daemon=True
            ).start()
        code = wait_for_code(pkce, answers, out=out, wait=wait, clock=clock)
        return exchange_code(account, code, redirect_uri, pkce, secret, timeout=timeout)
    finally:
        listener.close()
