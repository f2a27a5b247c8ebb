"""The copy of the configuration the daemon runs, kept in its state directory.

After every start and every reload the daemon accepted, it records here the
text of the file it runs (with the file's path and a digest). When the file
on disk is then edited into something the daemon refuses, `status`, `queue
list` and `flush` still work: they read the configuration the daemon is
running from this copy, and say that the file on disk is refused.

Why a copy of the text rather than the path and a digest: once the file on
disk is broken, a digest can only say it changed, not what it said before;
and the text, parsed again against the same path, gives exactly the
configuration the daemon built (relative paths included).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from exactmaild.store.durable import fsync_dir, write_new

RUNNING_NAME = "running-config.json"


@dataclass(frozen=True)
class RunningConfig:
    source: Path  # the file the daemon loaded (absolute)
    text: str  # what it said when the daemon accepted it
    sha256: str
    recorded_at: float


def record(state_dir: Path, source: Path, text: str, now: float) -> None:
    """Replace the copy atomically (a crash leaves the old copy or the new one)."""
    data = json.dumps(
        {
            "source": str(source),
            "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "recorded_at": now,
            "text": text,
        }
    ).encode("utf-8")
    tmp = state_dir / f".{RUNNING_NAME}.{os.getpid()}.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    # Readable like the state directory (group): the config holds no secret.
    write_new(tmp, data, 0o640)
    os.replace(tmp, state_dir / RUNNING_NAME)
    fsync_dir(state_dir)


def read(state_dir: Path) -> RunningConfig | None:
    """The recorded copy, or None if there is none or it cannot be read."""
    try:
        raw = json.loads((state_dir / RUNNING_NAME).read_text("utf-8"))
        return RunningConfig(
            source=Path(raw["source"]),
            text=str(raw["text"]),
            sha256=str(raw["sha256"]),
            recorded_at=float(raw["recorded_at"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
