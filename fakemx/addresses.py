"""Addresses as people read them, and the one-line error when one cannot be bound."""

from __future__ import annotations

import errno
import ipaddress

from fakemx.errors import ListenError

_PROBLEMS = {
    errno.EADDRINUSE: "address already in use",
    errno.EACCES: "permission denied",
    errno.EADDRNOTAVAIL: "address not available",
}


def host_port(host: str, port: int) -> str:
    """``127.0.0.1:25`` or ``[::1]:25``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def listen_error(exc: OSError | OverflowError, doing: str, where: str,
                 option: str = "--port") -> ListenError:
    """``cannot <doing> on <where>: <problem> (<fix>)``; ``option`` names the port's flag."""
    code = getattr(exc, "errno", 0) or 0
    problem = _PROBLEMS.get(code) or getattr(exc, "strerror", None) or str(exc)
    fix = {
        errno.EADDRINUSE: f"choose another {option}, or {option} 0 for a free one",
        errno.EACCES: "use a port above 1023, or grant CAP_NET_BIND_SERVICE",
        errno.EADDRNOTAVAIL: "use an address of this machine, e.g. 127.0.0.1",
    }.get(code, "check --host")
    return ListenError(f"cannot {doing} on {where}: {problem} ({fix})")


def loopback_like(host: str) -> str:
    """``host`` if it is a loopback address, else the loopback address of its family."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:  # a name such as "localhost"
        return host if host == "localhost" else "127.0.0.1"
    if address.is_loopback:
        return host
    return "::1" if address.version == 6 else "127.0.0.1"
