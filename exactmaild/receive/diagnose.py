"""What a failed incoming step of `test-connection` means, when it is a known confusion.

A port for implicit TLS (IMAP 993, POP3 995) waits silently for the client's
TLS handshake, so `security: starttls` or `none` on it times out waiting for
a greeting, which reads like a dead server. After such a failure (the TCP
connection was made, the greeting never came) the port is tried once more
with a bare TLS handshake; when that works, the step says what the port
speaks and what to set. (The opposite confusion, `security: tls` on a plain
port, is named by the TLS step itself: `exactmaild.receive.mailbox.wrap_tls`.)
Only `test-connection` asks: a scheduled check just reports its failure.
"""

from __future__ import annotations

import contextlib
import socket
import ssl

from exactmaild.auth.tls import TlsContexts
from exactmaild.config.model import Incoming
from exactmaild.receive.receiver import Step

# A port that speaks TLS answers a ClientHello at once.
PROBE_TIMEOUT = 5.0
_PORTS = {"imap": ("IMAP", 993, 143), "pop3": ("POP3", 995, 110)}


def explain(incoming: Incoming, steps: list[Step]) -> list[Step]:
    """`steps` with the failed last one reworded when the port's security is the cause."""
    if len(steps) < 2 or steps[-1].ok:
        return steps
    last, before = steps[-1], steps[-2]
    greeting_failed = last.name == "connect" and before.name == "connect" and before.ok
    if not greeting_failed or incoming.security == "tls" or not speaks_tls(incoming):
        return steps
    name, tls_port, plain_port = _PORTS.get(incoming.protocol, ("the", 993, 143))
    detail = (
        f"{incoming.host} port {incoming.port} waits for a TLS handshake (implicit TLS) and "
        f"sent no {name} greeting, but incoming.security is {incoming.security}: set "
        f"incoming.security: tls (usually port {tls_port}), or incoming.port: {plain_port} "
        f"for {incoming.security}"
    )
    return [*steps[:-1], Step(last.name, False, detail)]


def speaks_tls(incoming: Incoming) -> bool:
    """Whether the port completes a TLS handshake (an untrusted certificate counts too)."""
    try:
        ctx = TlsContexts().get(incoming.tls_ca_file)
        sock = socket.create_connection((incoming.host, incoming.port), timeout=PROBE_TIMEOUT)
    except (OSError, ssl.SSLError):
        return False
    try:
        with ctx.wrap_socket(sock, server_hostname=incoming.host):
            return True
    except ssl.SSLCertVerificationError:
        return True
    except (OSError, ssl.SSLError):
        return False
    finally:
        with contextlib.suppress(OSError):
            sock.close()
