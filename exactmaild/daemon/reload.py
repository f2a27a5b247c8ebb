"""What a reload (SIGHUP) may swap in: the whole new configuration, validated, or nothing.

`prepare` loads the configuration file again and checks all of it before the
loop touches anything running (supervisor's rule: never half-apply). It
raises `Refused` with every problem, and the loop keeps the running
configuration whole. What it returns is ready to apply:

* what the command line changed at start (`run --daemon`: the log file) is
  applied again;
* the settings that live for the whole process (the spool directory, the
  state directory, the metrics endpoint) keep their running values, with a
  warning that a restart is needed to change them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from exactmaild.config import load as configload
from exactmaild.config.model import Config
from exactmaild.core.errors import ConfigError
from exactmaild.core.log import Log
from exactmaild.store import running


class Refused(Exception):
    """The new configuration cannot be applied; `problems` says why, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def prepare(
    running: Config,
    *,
    log: Log,
    adjust: Callable[[Config], Config] | None = None,
) -> Config:
    """The configuration to apply in place of `running`, or raise `Refused`."""
    try:
        new = configload.load(running.source)
    except ConfigError as exc:
        raise Refused([str(p) for p in exc.problems]) from None
    # configload only warns about files that may appear later; what the
    # sender reads while swapping in must be readable now, or the swap
    # would stop half-way (and the exception end the daemon).
    if new.send.signature is not None:
        try:
            Path(new.send.signature).read_text("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise Refused([f"send.signature: cannot read {new.send.signature}: {exc}"]) from None
    for warning in new.warnings:
        log.warning("config_warning", warning=warning)
    if adjust is not None:
        new = adjust(new)
    # Settings that live for the whole process: a reload that changes them
    # says a restart is needed and keeps the running value.
    kept: list[str] = []
    if new.spool.dir != running.spool.dir:
        new = replace(new, spool=running.spool)
        kept.append("spool")
    if new.state_dir != running.state_dir:
        new = replace(new, state_dir=running.state_dir)
        kept.append("state_dir")
    if new.metrics != running.metrics:
        new = replace(new, metrics=running.metrics)
        kept.append("metrics")
    if kept:
        log.warning(
            "reload_needs_restart",
            settings=sorted(kept),
            action="these keep their running values until `systemctl restart exactmaild`",
        )
    return new


def record_running(cfg: Config, now: float, *, log: Log) -> None:
    """Keep a copy of the file `cfg` came from in the state directory
    (`store/running.py`), after a start or a reload the daemon accepted, so
    that `status`, `queue list` and `flush` still work from it once the file
    on disk is edited into something refused. The text is parsed again
    before it is kept: an edit saved since the load is kept only if valid."""
    try:
        text = Path(cfg.source).read_bytes().decode("utf-8-sig")
        configload.parse(text, cfg.source)
        running.record(cfg.state_dir, Path(cfg.source), text, now)
    except (OSError, UnicodeDecodeError, ConfigError) as exc:
        log.warning("running_config_not_recorded", error=str(exc)[:300])
