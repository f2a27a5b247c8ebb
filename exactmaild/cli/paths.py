"""Where the configuration is: `-c PATH`, else $EXACTMAILD_CONFIG, else the default."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CONFIG = "/etc/exactmaild/exactmaild.yaml"


def config_path(arg: str | None) -> Path:
    return Path(arg or os.environ.get("EXACTMAILD_CONFIG") or DEFAULT_CONFIG)
