"""Where the service may listen: loopback only, unless an admin token protects the admin API.

The socket is bound before any store is opened, so a port in use or a refused address is a
one-line error that leaves the stores untouched.
"""

from __future__ import annotations

import ipaddress
import socket

from dualvec.errors import ConfigError

__all__ = ["check_exposure", "is_loopback", "listen"]

_BACKLOG = 2048


def _addresses(host: str) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host!r}: the name does not resolve ({exc.strerror})") from exc
    return [str(info[4][0]) for info in infos]


def is_loopback(host: str) -> bool:
    """Whether every address `host` names is a loopback address (127.0.0.0/8, ::1)."""
    addresses = _addresses(host.strip("[]"))
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def check_exposure(host: str, admin_token: str | None) -> None:
    """Refuse to listen beyond loopback while the admin API is open to anyone."""
    if admin_token is None and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host!r}, which is reachable from other machines, while the admin "
            "API has no token: set DUALVEC_ADMIN_TOKEN to a secret (admin clients then send "
            "Authorization: Bearer <token>), or listen on 127.0.0.1"
        )


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host`:`port` (port 0: any free port)."""
    bare = host.strip("[]")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            bare, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock
