"""The command line: the parser, and one function per command.

`main` is the `exactmaild` script, `sendmail_main` the `exactmaild-sendmail`
script; both map every ExactmailError to its exit code.
"""

from exactmaild.cli.main import main, sendmail_main

__all__ = ["main", "sendmail_main"]
