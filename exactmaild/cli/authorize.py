"""`exactmaild authorize`: obtain the first OAuth2 refresh token.

The command's front: load the configuration, run the flow in
`exactmaild.auth.authorize`, and say what went wrong in the terms of the
error tree. Also runnable as `python -m exactmaild.cli.authorize [-c CONFIG]`.
"""

from __future__ import annotations

import argparse
import sys

from exactmaild.auth.authorize import authorize
from exactmaild.cli.paths import config_path, load_config
from exactmaild.cli.report import run_reporting
from exactmaild.core.errors import (
    EX_OK,
    AccountFailure,
    ConfigError,
    Problem,
    TemporaryFailure,
)


def cmd_authorize(args: argparse.Namespace) -> int:
    """`exactmaild authorize [-c CONFIG]` (wired into exactmaild.cli.main's parser).

    A refusal of the client or the scope is the configuration's fault, so it
    is reported as a problem of the file's account.auth section (exit 78);
    AuthorizationFailed (the user refused, the code expired) keeps its own code.
    """
    arg = getattr(args, "config", None)
    cfg = load_config(arg)
    try:
        authorize(cfg.account)
    except AccountFailure as exc:
        raise ConfigError([Problem(str(config_path(arg)), 0, "account.auth", str(exc))]) from exc
    except TemporaryFailure as exc:
        raise TemporaryFailure(f"{exc}; try again") from exc
    return EX_OK


def main(argv: list[str] | None = None) -> int:
    """`python -m exactmaild.cli.authorize [-c CONFIG]`: the same as `exactmaild authorize`."""
    parser = argparse.ArgumentParser(prog="exactmaild authorize", description=__doc__)
    parser.add_argument("-c", "--config", help="config file")
    args = parser.parse_args(argv)
    return run_reporting(lambda: cmd_authorize(args))


if __name__ == "__main__":
    sys.exit(main())
