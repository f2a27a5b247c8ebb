"""`exactmaild authorize`: obtain the first OAuth2 refresh token.

The command's front: load the configuration, run the flow in
`exactmaild.auth.authorize`, map its errors to exit codes. Also runnable as
`python -m exactmaild.cli.authorize [-c CONFIG]`.
"""

from __future__ import annotations

import argparse
import sys

from exactmaild.auth.authorize import AuthorizationFailed, authorize
from exactmaild.cli.paths import config_path
from exactmaild.config import load as configload
from exactmaild.core.errors import (
    EX_CONFIG,
    EX_OK,
    EX_TEMPFAIL,
    AccountFailure,
    ConfigError,
    ExactmailError,
    TemporaryFailure,
)


def cmd_authorize(args: argparse.Namespace) -> int:
    """`exactmaild authorize [-c CONFIG]` (wired into cli.py's parser)."""
    cfg = configload.load(config_path(getattr(args, "config", None)))
    try:
        authorize(cfg.account)
    except AuthorizationFailed as exc:
        print(f"exactmaild: {exc}", file=sys.stderr)
        return exc.exit_code
    except AccountFailure as exc:  # the provider refused the client or scope: fix the config
        print(f"exactmaild: {exc}", file=sys.stderr)
        return EX_CONFIG
    except TemporaryFailure as exc:
        print(f"exactmaild: {exc}; try again", file=sys.stderr)
        return EX_TEMPFAIL
    return EX_OK


def main(argv: list[str] | None = None) -> int:
    """`python -m exactmaild.cli.authorize [-c CONFIG]`: the same as `exactmaild authorize`."""
    parser = argparse.ArgumentParser(prog="exactmaild authorize", description=__doc__)
    parser.add_argument("-c", "--config", help="config file")
    args = parser.parse_args(argv)
    try:
        return cmd_authorize(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    except ExactmailError as exc:
        print(f"exactmaild: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
