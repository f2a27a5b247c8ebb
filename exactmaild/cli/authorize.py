"""`exactmaild authorize`: obtain the first OAuth2 refresh token.

The command's front: load the configuration, run the flow in
`exactmaild.auth.authorize`, and say what went wrong in the terms of the
error tree. Also runnable as `python -m exactmaild.cli.authorize [-c CONFIG]`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from exactmaild.cli.paths import load_config
from exactmaild.cli.report import run_reporting
from exactmaild.core.errors import (
    EX_OK,
    AccountFailure,
    ConfigError,
    Problem,
    TemporaryFailure,
)


def cmd_authorize(args: argparse.Namespace) -> int:
    """`exactmaild authorize [-c CONFIG] [--port PORT]` (wired into exactmaild.cli.main's parser).

    A refusal of the client or the scope is the configuration's fault, so it
    is reported as a problem of the file's account.auth section (exit 78);
    AuthorizationFailed (the user refused, the code expired) keeps its own code.
    Every configuration problem is located in the file (`FILE:LINE: key: ...`).
    """
    # Imported on use: the flows pull in the HTTP client and server and the secrets.
    from exactmaild.auth.authorize import authorize

    arg = getattr(args, "config", None)
    cfg = load_config(arg)
    try:
        authorize(cfg.account, inp=sys.stdin, port=getattr(args, "port", None) or 0)
    except ConfigError as exc:
        # The flow knows the key, not the file: place each problem in it.
        raise ConfigError([_located(cfg.source, p.path, p.message) for p in exc.problems]) from exc
    except AccountFailure as exc:
        raise ConfigError([_located(cfg.source, "account.auth", str(exc))]) from exc
    except TemporaryFailure as exc:
        raise TemporaryFailure(f"{exc}; try again") from exc
    return EX_OK


def _located(source: Path | str, key: str, message: str) -> Problem:
    """`key`'s problem at its line, or at the nearest enclosing key the file writes
    (a preset's value is written nowhere: `provider:` is where it came from)."""
    from exactmaild.config.load import locate

    where = locate(source)
    for candidate in (key, "account.auth.provider", "account.auth", "account"):
        if candidate.count(".") <= key.count(".") and where.line(candidate):
            return Problem(where.file, where.line(candidate), key, message)
    return Problem(where.file, 0, key, message)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options, shared by `exactmaild authorize` and `python -m`."""
    parser.add_argument(
        "--port",
        type=int,
        default=0,
        metavar="PORT",
        help="loopback flow (Google): listen on 127.0.0.1:PORT for the redirect "
        "(default: any free port); use with ssh -L PORT:127.0.0.1:PORT",
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m exactmaild.cli.authorize [-c CONFIG]`: the same as `exactmaild authorize`."""
    parser = argparse.ArgumentParser(prog="exactmaild authorize", description=__doc__)
    parser.add_argument("-c", "--config", help="config file")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_reporting(lambda: cmd_authorize(args))


if __name__ == "__main__":
    sys.exit(main())
