"""The SMTP transport: the only package that imports smtplib.

- `session`: the connection (connect, STARTTLS, login, keep, probe, close),
  `SmtpConnection`, the sender's `Transport` (and `send.probe`'s, for
  `test-connection`);
- `login`: SMTP AUTH, one mechanism per login;
- `transaction`: one message's MAIL/RCPT/DATA, body and verdict, pipelined
  where the server allows (RFC 2920), split where the recipients do not fit.
"""

from exactmaild.send.smtp.session import SmtpConnection
from exactmaild.send.smtp.transaction import Transaction

__all__ = ["SmtpConnection", "Transaction"]
