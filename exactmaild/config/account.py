"""The account section (with its auth) and the incoming and outgoing servers it logs in to.

`account` checks who logs in and how (password, OAuth2 with a provider
preset, or none); `server` checks the incoming (IMAP/POP3) and outgoing
(SMTP) sections, filling in a preset's hosts and encryption and refusing a
login or secret sent unencrypted to another machine. Called by the top-level
walk in `exactmaild.config.load`.
"""

from __future__ import annotations

from typing import Literal, cast
from urllib.parse import urlsplit

from yaml.nodes import MappingNode, ScalarNode

from exactmaild.config import convert as conv
from exactmaild.config.model import Account, Auth, Incoming, Outgoing, Security
from exactmaild.config.origins import Origins
from exactmaild.config.providers import PRESETS
from exactmaild.config.schema import (
    ACCOUNT_KEYS,
    AUTH_KEYS,
    INCOMING_KEYS,
    OAUTH2_KEYS,
    OUTGOING_KEYS,
)
from exactmaild.config.values import default_port, is_loopback
from exactmaild.config.yamlnodes import Checker, Map, as_str, is_null


def account_section(c: Checker, top: Map) -> Account:
    m = c.mapping(top.get("account"), "account", ACCOUNT_KEYS, line=top.line)
    if top.given("account") and not isinstance(top.get("account"), MappingNode):
        address = ""  # mapping() has said what is wrong; "address: required" would be noise
    elif not top.given("account"):
        c.problem(
            top.key_line("account"),
            "account",
            "required: a mapping with at least `address:` (the practice's email address)",
        )
        address = ""
    else:
        address = c.require(m, "address", conv.address, "the practice's email address") or ""
    display_name = c.get(m, "display_name", as_str, None)
    auth = _auth(c, c.mapping(m.get("auth"), "account.auth", AUTH_KEYS, line=m.line), address)
    return Account(address=address, display_name=display_name, auth=auth)


def _auth(c: Checker, m: Map, address: str) -> Auth:
    method = cast(
        Literal["password", "oauth2", "none"],
        c.get(m, "method", conv.choice("password", "oauth2", "none"), "password"),
    )
    username = c.get(m, "username", as_str, address)
    password_file = c.get(m, "password_file", c.path, None)
    if method != "password" and m.given("password_file"):
        c.problem(
            m.key_line("password_file"),
            m.sub("password_file"),
            f"only used with method: password (method is {method}); remove it",
        )
        password_file = None
    # The provider's preset (servers and sending limits) serves password
    # logins too: a Gmail app password or a Microsoft 365 tenant that still
    # allows SMTP AUTH has the same server and the same limits.
    provider = cast(
        Literal["microsoft365", "google", "custom"],
        c.get(m, "provider", conv.choice("microsoft365", "google", "custom"), "custom"),
    )
    if method != "oauth2":
        for key in OAUTH2_KEYS:
            if key != "provider" and m.given(key):
                c.problem(
                    m.key_line(key),
                    m.sub(key),
                    f"only used with method: oauth2 (method is {method}); "
                    "set `method: oauth2` or remove it",
                )
        if method == "password" and password_file is None:
            c.warn(
                "account.auth.password_file is not set: the password must come from "
                "$CREDENTIALS_DIRECTORY/password (systemd LoadCredential=password:/path) "
                "at run time"
            )
        given = provider if m.given("provider") and provider != "custom" else None
        return Auth(method=method, username=username, password_file=password_file, provider=given)

    preset = PRESETS.get(provider)
    token_url = c.get(m, "token_url", conv.url, None)
    if token_url is None and not m.given("token_url"):
        if preset is not None:
            token_url = preset.token_url
        else:
            c.problem(
                m.line,
                m.sub("token_url"),
                "required with provider custom (or set provider: microsoft365 or google)",
            )
    device_url = c.get(m, "device_authorization_url", conv.url, None)
    if device_url is None and not m.given("device_authorization_url") and preset is not None:
        device_url = preset.device_authorization_url
    authorization_url = c.get(m, "authorization_url", conv.url, None)
    if authorization_url is None and not m.given("authorization_url") and preset is not None:
        authorization_url = preset.authorization_url
    for key, url in (("token_url", token_url), ("device_authorization_url", device_url)):
        if url is not None and urlsplit(url).scheme == "http":
            host = urlsplit(url).hostname or ""
            if not is_loopback(host):
                c.problem(
                    m.key_line(key),
                    m.sub(key),
                    f"http:// would send the client secret and refresh token unencrypted to "
                    f"{host}; plain http is only allowed to this machine (localhost, 127.0.0.1, "
                    "::1): use https://",
                )
    client_id = c.require(m, "client_id", as_str, "the OAuth2 application (client) id")
    scope = c.get(m, "scope", conv.scope, preset.scope if preset else None)
    refresh_token_file = c.get(m, "refresh_token_file", c.path, None)
    if refresh_token_file is None:
        c.warn(
            "account.auth.refresh_token_file is not set: the refresh token must come from "
            "$CREDENTIALS_DIRECTORY/refresh_token, and a rotated token cannot be saved"
        )
    return Auth(
        method="oauth2",
        username=username,
        provider=provider,
        token_url=token_url,
        client_id=client_id,
        client_secret_file=c.get(m, "client_secret_file", c.path, None),
        refresh_token_file=refresh_token_file,
        scope=scope,
        device_authorization_url=device_url,
        authorization_url=authorization_url,
    )


def server_section(
    c: Checker,
    top: Map,
    name: Literal["incoming", "outgoing"],
    auth: Auth,
    origins: Origins | None = None,
) -> Outgoing | Incoming | None:
    node = top.get(name)
    preset = PRESETS.get(auth.provider or "")
    if (
        name == "incoming"
        and isinstance(node, ScalarNode)
        and not is_null(node)
        and str(node.value).strip().lower() in ("none", "false", "off", "no")
    ):
        return None
    if (node is None or is_null(node)) and preset is None:
        what = (
            "the mailbox server (protocol, host, ...), or `incoming: none` "
            "if this account only sends"
            if name == "incoming"
            else "the SMTP server (host, port, security)"
        )
        c.problem(top.key_line(name), name, f"required: {what}")
        return None
    keys = INCOMING_KEYS if name == "incoming" else OUTGOING_KEYS
    m = c.mapping(node, name, keys, line=top.line)
    if node is not None and not is_null(node) and not isinstance(node, MappingNode):
        return None  # already reported by mapping()

    protocol = "smtp"
    if name == "incoming":
        protocol = c.get(m, "protocol", conv.choice("imap", "pop3"), "imap")
    preset_host: tuple[str, Security] | None = None
    if preset is not None:
        preset_host = {"smtp": preset.smtp, "imap": preset.imap, "pop3": preset.pop3}[protocol]

    if m.given("host"):
        host = c.get(m, "host", conv.host, "")
        default_security: str = "tls" if name == "incoming" else "starttls"
    elif preset_host is not None:
        # The preset's encryption belongs to the preset's host: only used
        # together, so an explicit host never inherits it by accident.
        host, default_security = preset_host
    else:
        c.problem(m.key_line("host"), m.sub("host"), "required: the server's host name")
        host, default_security = "", "tls"
    security = cast(
        Security, c.get(m, "security", conv.choice("tls", "starttls", "none"), default_security)
    )
    port = c.get(m, "port", conv.port, default_port(protocol, security))
    tls_ca_file = c.get(m, "tls_ca_file", c.path, None)

    if security == "none" and host:
        if auth.method != "none" and not is_loopback(host):
            c.problem(
                m.key_line("security"),
                m.sub("security"),
                f"security: none would send the login for {auth.username or 'the account'} "
                f"unencrypted to {host}; unencrypted logins are only allowed to a relay on this "
                "machine (localhost, 127.0.0.1, ::1): use security: tls or starttls",
            )
        if tls_ca_file is not None:
            c.warn(f"{name}.tls_ca_file is ignored with security: none")
    if tls_ca_file is not None and not tls_ca_file.exists():
        c.warn(f"{name}.tls_ca_file {tls_ca_file} does not exist (yet)")

    if name == "outgoing":
        origins = origins or Origins(c.file, None)
        origins.note(m, "max_recipients", "outgoing.max_recipients")
        given = origins.default("outgoing.max_recipients", None)
        default = given if isinstance(given, int) else None
        keepalive = c.get(m, "keepalive", conv.duration, 240.0)
        if keepalive > 300:
            # RFC 5321 4.5.3.2.7: a server may close a connection idle for 5 min.
            c.warn(
                f"outgoing.keepalive {keepalive:g}s is longer than the 5 minutes after which "
                "SMTP servers close an idle connection; it is probed and reopened if so"
            )
        return Outgoing(
            host=host,
            port=port,
            security=security,
            tls_ca_file=tls_ca_file,
            keepalive=keepalive,
            max_recipients=c.get(m, "max_recipients", conv.positive_int, default),
        )
    if protocol == "pop3" and m.given("folder"):
        c.warn("incoming.folder is ignored with protocol: pop3 (POP3 has only the inbox)")
    idle = c.get(m, "idle", conv.as_bool, False)
    if idle and protocol == "pop3":
        c.problem(
            m.key_line("idle"),
            m.sub("idle"),
            "IMAP IDLE needs protocol: imap (POP3 cannot tell a client about new mail): "
            "use protocol: imap, or remove idle and let schedule.every check the mailbox",
        )
        idle = False
    return Incoming(
        host=host,
        port=port,
        security=security,
        tls_ca_file=tls_ca_file,
        protocol=cast(Literal["imap", "pop3"], protocol),
        folder=c.get(m, "folder", as_str, "INBOX"),
        leave_on_server=c.get(m, "leave_on_server", conv.as_bool, True),
        idle=idle,
    )
