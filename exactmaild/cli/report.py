"""How a command's failure reaches the user: one line on stderr, and the exit code from the tree.

Every command of `exactmaild` and the `exactmaild-sendmail` front run through
`run_reporting`: an error of the tree (exactmaild.core.errors) prints its
message and exits with its class's code; an OSError is first turned into the
tree's LocalIOFailure family, so a missing file, a permission problem and a
full disk each say which path and exit with their own code. Only a bug shows
a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from exactmaild.core.errors import (
    EX_INTERRUPTED,
    EX_SOFTWARE,
    BadMessage,
    ConfigError,
    ExactmailError,
    from_os_error,
)

# Not sysexits.h: 128 + SIGPIPE, what a shell reports for a command whose reader left.
EX_BROKEN_PIPE = 141


def say(text: str) -> None:
    """One line for the user on stderr, prefixed with the program's name."""
    print(f"exactmaild: {text}", file=sys.stderr)


def report(exc: ExactmailError) -> int:
    """Print `exc` for the user and return its exit code."""
    if isinstance(exc, ConfigError):
        # Already one "FILE:LINE: key.path: problem" line per problem.
        print(str(exc), file=sys.stderr)
    elif isinstance(exc, BadMessage):
        say(f"message refused: {exc}")
    else:
        say(str(exc))
    return exc.exit_code


def run_reporting(command: Callable[[], int]) -> int:
    """Run `command` and return its exit status, mapping every failure through the tree."""
    try:
        return int(command())
    except ExactmailError as exc:
        return report(exc)
    except BrokenPipeError:
        # The reader went away (`status | head`, `| grep -q`): end quietly, as
        # a command killed by SIGPIPE does, and keep the exit-time flush of
        # stdout from failing on the closed pipe again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EX_BROKEN_PIPE
    except OSError as exc:
        # Disk full, read-only filesystem, a directory in the way: say which file.
        return report(from_os_error(exc))
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    except Exception:
        import traceback

        traceback.print_exc()
        say("this is a bug: please report it with the traceback above")
        return EX_SOFTWARE
