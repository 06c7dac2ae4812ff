"""What the HTTP listener is asked to do: address, TLS, OMi base path, body limit.

From ``ombridge start --listen HOST:PORT [--tls-cert F --tls-key F] [--max-body BYTES]`` and from
the home's ``conf/ombridge.conf`` (TOML, section ``[listen]``), the command line winning option
by option. Nothing listens unless one of them names an address. Imports nothing of the web stack.

```toml
[listen]
address  = "0.0.0.0:8443"          # HOST:PORT; [::1]:8443 for IPv6; port 0 picks a free one
tls_cert = "conf/tls/cert.pem"     # relative paths are under the home
tls_key  = "conf/tls/key.pem"
omi_base = "/omi"                  # where OMi's connected server points
max_body = 1048576                 # bytes; a larger request body is refused with 413
trusted_proxies = ["127.0.0.1"]    # reverse proxies whose X-Forwarded-For/-Proto count; default none
```
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass

from .. import conf
from ..errors import UsageError
from ..home import Home

DEFAULT_BASE = "/omi"
DEFAULT_MAX_BODY = 1 << 20
_KEYS = {"address", "tls_cert", "tls_key", "omi_base", "max_body", "trusted_proxies", "processes"}
MAX_PROCESSES = 16
_BASE_RE = re.compile(r"(/[A-Za-z0-9._~-]+)+")
_ADDRESS_RE = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]\s]+)):(?P<port>\d{1,5})")


@dataclass(frozen=True)
class ListenConfig:
    """One listener's settings (validated)."""

    host: str
    port: int
    tls_cert: str | None = None
    tls_key: str | None = None
    omi_base: str = DEFAULT_BASE
    max_body: int = DEFAULT_MAX_BODY
    trusted_proxies: tuple[str, ...] = ()  # networks, as written by trusted_proxies()
    processes: int = 0  # listener processes of its own (bridge/web/workers.py); 0: in the supervisor

    @property
    def tls(self) -> bool:
        """True when the listener speaks HTTPS only."""
        return self.tls_cert is not None

    def forwarded_allow_ips(self) -> list[str]:
        """The proxies whose ``X-Forwarded-*`` headers count, as uvicorn takes them: each network,
        and for IPv4 its IPv4-mapped IPv6 form too (how an IPv4 client looks on a ``[::]`` socket)."""
        allowed = []
        for text in self.trusted_proxies:
            net = ipaddress.ip_network(text)
            allowed.append(str(net))
            if net.version == 4:
                allowed.append(f"::ffff:{net.network_address}/{96 + net.prefixlen}")
        return allowed


def default_processes() -> int:
    """Listener processes when neither ``--listen-processes`` nor ``listen.processes`` says: two
    on a machine of two cores or more (HTTP and the group commit beside the Event Manager, not
    under its GIL), else none (the listener in the supervisor)."""
    return 2 if (os.cpu_count() or 1) >= 2 else 0


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` -> (host, port)."""
    m = _ADDRESS_RE.fullmatch(text.strip())
    if not m or int(m["port"]) > 65535:
        raise UsageError(f"bad listen address {text!r}: use HOST:PORT, e.g. 0.0.0.0:8443 or [::1]:8443")
    return (m["v6"] or m["host"]), int(m["port"])


def read_file(home: Home) -> dict[str, object]:
    """The ``[listen]`` section of the home's ``conf/ombridge.conf`` ({} when there is none)."""
    section = conf.table(home.root, "listen")
    unknown = {f"listen.{k}" for k in set(section) - _KEYS}
    if unknown:
        raise UsageError(f"{conf.path(home.root)}: unknown setting(s) {', '.join(sorted(unknown))} "
                         f"(known: {', '.join(f'listen.{k}' for k in sorted(_KEYS))})")
    return section


def resolve(home: Home, address: str | None = None, tls_cert: str | None = None, tls_key: str | None = None,
            max_body: int | None = None, omi_base: str | None = None,
            processes: int | None = None) -> ListenConfig | None:
    """The listener to run: the command line's options over the config file's; None when neither
    names an address. Raises :class:`UsageError` for anything inconsistent."""
    section = read_file(home)
    address = address or _text(section, "address")
    cert = tls_cert or _text(section, "tls_cert")
    key = tls_key or _text(section, "tls_key")
    base = omi_base or _text(section, "omi_base") or DEFAULT_BASE
    if max_body is None:
        raw = section.get("max_body", DEFAULT_MAX_BODY)
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise UsageError(f"{conf.CONF_FILE}: listen.max_body is a number of bytes")
        max_body = raw
    if processes is None:
        processes = section.get("processes", default_processes())
        if isinstance(processes, bool) or not isinstance(processes, int) or not 0 <= processes <= MAX_PROCESSES:
            raise UsageError(f"{conf.CONF_FILE}: listen.processes is a number from 0 (the listener in the supervisor) "
                             f"to {MAX_PROCESSES}")
    if not address:
        if cert or key:
            raise UsageError("--tls-cert and --tls-key need --listen HOST:PORT "
                             "(or listen.address in conf/ombridge.conf)")
        return None
    host, port = parse_address(address)
    if bool(cert) != bool(key):
        raise UsageError("TLS needs both --tls-cert and --tls-key")
    if not 1024 <= max_body <= 1 << 30:
        raise UsageError(f"the body limit must be between 1024 bytes and 1 GiB, not {max_body}")
    base = "/" + base.strip("/")
    if not _BASE_RE.fullmatch(base):
        raise UsageError(f"bad OMi base path {base!r}: one or more /segments of letters, digits, . _ ~ -")
    if base.startswith(("/api/", "/healthz", "/metrics")) or base == "/api":
        raise UsageError(f"the OMi base path {base} would hide one of ombridge's own paths")
    return ListenConfig(host, port, _under(home, cert), _under(home, key), base, max_body,
                        trusted_proxies(section.get("trusted_proxies", [])), processes)


def trusted_proxies(value: object) -> tuple[str, ...]:
    """``listen.trusted_proxies``: the reverse proxies (IP addresses or networks) whose
    ``X-Forwarded-For`` and ``X-Forwarded-Proto`` the listener believes. None by default: a
    client that could set them would choose the address the login throttle counts, and whether
    the console's cookies are ``Secure``."""
    example = 'e.g. trusted_proxies = ["127.0.0.1", "10.1.0.0/16"]'
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{conf.CONF_FILE}: listen.trusted_proxies is a list of IP addresses or networks ({example})")
    networks = []
    for text in value:
        try:
            networks.append(str(ipaddress.ip_network(text.strip())))
        except ValueError as exc:
            raise UsageError(f"{conf.CONF_FILE}: listen.trusted_proxies: {text!r} is not an IP address or network "
                             f"({exc}; {example})") from None
    return tuple(networks)


def _text(section: dict[str, object], name: str) -> str | None:
    value = section.get(name)
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{conf.CONF_FILE}: listen.{name} must be a string")
    return value or None


def _under(home: Home, path: str | None) -> str | None:
    if path is None:
        return None
    full = os.path.join(str(home.root), os.path.expanduser(path))
    if not os.path.isfile(full):
        raise UsageError(f"TLS file {full} does not exist")
    return full
