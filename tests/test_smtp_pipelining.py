"""PIPELINING (RFC 2920): the same outcomes as the one-command-at-a-time dialogue.

Each case scripts the fault server, sends one message through SmtpConnection
with and without PIPELINING advertised, and compares what came of it: the
result or the error class and text, and what the server took.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from exactmaild.auth.credentials import NoCredentials
from exactmaild.config.model import Account, Server
from exactmaild.send.smtp import SmtpConnection
from tests.fixtures.faults import DROP, FaultServer, Script

MSG = b"To: a@example.org\r\nSubject: hi\r\n\r\nHello\r\n.dot line\r\nend"
RCPTS = ("a@example.org", "b@example.org", "c@example.org")


def _script(
    *,
    mail: list[str] | None = None,
    rcpt: dict[str, list[str]] | None = None,
    data: list[str] | None = None,
    body: list[str] | None = None,
) -> Callable[[Script], None]:
    def apply(s: Script) -> None:
        s.mail[:] = mail or []
        s.rcpt.update({k: list(v) for k, v in (rcpt or {}).items()})
        s.data[:] = data or []
        s.body_default[:] = body or []

    return apply


CASES = {
    "ok": _script(),
    "mail_4xx": _script(mail=["451 4.3.0 try later"]),
    "mail_5xx": _script(mail=["550 5.7.1 sender rejected"]),
    "mail_quota": _script(mail=["550 5.4.5 daily sending quota exceeded"]),
    "mail_421": _script(mail=["421 4.3.2 shutting down"]),
    "mail_drop": _script(mail=[DROP]),
    "one_rcpt_refused": _script(rcpt={"b@example.org": ["550 5.1.1 no such user"]}),
    "one_rcpt_deferred": _script(rcpt={"c@example.org": ["450 4.2.1 mailbox busy"]}),
    "rcpt_rate_limited": _script(rcpt={"b@example.org": ["451 4.7.0 rate limit exceeded"]}),
    "rcpt_421": _script(rcpt={"a@example.org": ["421 4.3.2 closing"]}),
    "rcpt_drop": _script(rcpt={"b@example.org": [DROP]}),
    "all_refused": _script(rcpt={r: ["550 5.1.1 no such user"] for r in RCPTS}),
    "all_deferred": _script(rcpt={r: ["450 4.2.1 busy"] for r in RCPTS}),
    "refused_and_deferred": _script(
        rcpt={
            "a@example.org": ["550 5.1.1 no"],
            "b@example.org": ["450 4.2.1 busy"],
            "c@example.org": ["550 5.1.1 no"],
        }
    ),
    "data_4xx": _script(data=["451 4.3.0 not now"]),
    "data_5xx": _script(data=["554 5.5.1 no valid recipients"]),
    "data_drop": _script(data=[DROP]),
    "body_4xx": _script(body=["452 4.3.1 insufficient storage"]),
    "body_5xx": _script(body=["554 5.7.1 looks like spam"]),
    "body_drop": _script(body=[DROP]),
}


def _outcome(pipelining: bool, case: str) -> tuple[object, ...]:
    srv = FaultServer(pipelining=pipelining)
    try:
        CASES[case](srv.script)
        t = SmtpConnection(
            Server(srv.host, srv.port, "none"),
            NoCredentials(Account("reception@practice.example")),
            timeout=5.0,
        )
        # Sequential sends issue MAIL through putcmd(); pipelined ones write the
        # whole group at once and never do.
        t.connect()
        conn = t._conn
        assert conn is not None
        one_by_one: list[str] = []
        real = conn.putcmd

        def spy(cmd: str, args: str = "") -> None:
            one_by_one.append(cmd)
            real(cmd, args)

        conn.putcmd = spy  # type: ignore[method-assign]
        try:
            got: object = t.send("reception@practice.example", RCPTS, MSG)
        except Exception as exc:
            got = (type(exc).__name__, str(exc), getattr(exc, "refused", None))
        assert any(c.startswith("mail from") for c in one_by_one) == (not pipelining)
        # The connection is still usable (or reopened) for the next message.
        CASES["ok"](srv.script)
        srv.script.rcpt.clear()
        srv.script.mail.clear()
        srv.script.data.clear()
        srv.script.body_default.clear()
        after = t.send("reception@practice.example", ("z@example.org",), b"Subject: 2\r\n\r\nx")
        t.close()
        delivered = [(m.rcpt_tos, m.data) for m in srv.messages]
        return got, after.accepted, delivered
    finally:
        srv.close()


@pytest.mark.parametrize("case", sorted(CASES))
def test_pipelined_send_has_the_same_outcome(case: str) -> None:
    assert _outcome(True, case) == _outcome(False, case)


def test_pipelined_body_is_dot_stuffed_with_crlf() -> None:
    _, _, delivered = _outcome(True, "ok")
    assert delivered[0] == (
        list(RCPTS),
        b"To: a@example.org\r\nSubject: hi\r\n\r\nHello\r\n.dot line\r\nend\r\n",
    )
