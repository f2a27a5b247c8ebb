"""The running daemon: the main loop and everything only it does.

- `Service` (service.py): the main loop, the only code that touches
  signals (handlers only record and wake the loop, as gunicorn's arbiter);
  reloads that rebuild the configuration whole or refuse it whole
  (reload.py);
- the state-directory lock and the control socket (control.py),
  systemd's notify protocol (systemd.py), the STATUS= line
  (statusline.py), the metrics and their port (metrics.py; the
  prometheus-client exposition, exposition.py, is imported at the first
  scrape), logging (logs.py), and detaching without systemd (detach.py).

Imported on first use (PEP 562): `flush` and `status` need the control
socket, not prometheus_client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from exactmaild.core.lazy import lazy_attributes

if TYPE_CHECKING:
    from exactmaild.daemon.control import AlreadyRunning, control_path, daemon_running, send_control
    from exactmaild.daemon.detach import PidFile, detach
    from exactmaild.daemon.metrics import Metrics
    from exactmaild.daemon.service import Service
    from exactmaild.daemon.statusline import status_line
    from exactmaild.daemon.systemd import Notifier

_WHERE = {
    "Service": "service",
    "AlreadyRunning": "control",
    "daemon_running": "control",
    "send_control": "control",
    "control_path": "control",
    "Metrics": "metrics",
    "Notifier": "systemd",
    "detach": "detach",
    "PidFile": "detach",
    "status_line": "statusline",
}
__all__ = [
    "AlreadyRunning",
    "Metrics",
    "Notifier",
    "PidFile",
    "Service",
    "control_path",
    "daemon_running",
    "detach",
    "send_control",
    "status_line",
]

__getattr__ = lazy_attributes(__name__, _WHERE)
