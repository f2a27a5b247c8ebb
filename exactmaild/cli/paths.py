"""Where the configuration is, and loading it from there.

`-c PATH`, else $EXACTMAILD_CONFIG, else the default.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from exactmaild.config.model import Config

DEFAULT_CONFIG = "/etc/exactmaild/exactmaild.yaml"


def config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("EXACTMAILD_CONFIG") or DEFAULT_CONFIG)


def load_config(arg: str | None) -> Config:
    """Load and validate the configuration `arg` names; raises ConfigError (exit 78).

    The YAML loader is imported here, not at the top: `exactmaild --version`
    and a sendmail call that fails on its flags never need it.
    """
    from exactmaild.config import load

    return load.load(config_path(arg))
