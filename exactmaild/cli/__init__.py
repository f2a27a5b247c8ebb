"""The command line: the parser, and one function per command.

`main` is the `exactmaild` script, `sendmail_main` the `exactmaild-sendmail`
script; both map every error to its exit code through the tree in
exactmaild.core.errors (see exactmaild.cli.report).
"""

from exactmaild.cli.main import main
from exactmaild.cli.sendmail import sendmail_main

__all__ = ["main", "sendmail_main"]
