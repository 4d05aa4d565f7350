"""What fakemx does to a session's TCP socket itself: its options once accepted, and
the two ways fakemx hangs up (FIN once the pending reply is out, or RST at once)."""

from __future__ import annotations

import asyncio
import fcntl
import socket
import struct
import termios

_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def tune_accepted(sock: socket.socket, idle_timeout_seconds: float) -> None:
    # asyncio sets TCP_NODELAY only when sock.proto is IPPROTO_TCP, and an
    # accepted socket reports 0, so aiosmtpd's line-by-line replies (EHLO) met
    # Nagle and the client's delayed ACK: about 40 ms per multi-line reply.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        # A client that stops reading keeps its window shut: our idle timer
        # then closes, but a close waits for the unread replies for ever, and
        # the session holds its descriptor. The kernel aborts it instead.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                        max(1, int(idle_timeout_seconds * 1000)))


def reset(raw: asyncio.Transport) -> None:
    """RST now, whatever is still unsent (the TCP transport, under any TLS layer)."""
    sock = raw.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    raw.abort()


def close(transport: asyncio.BaseTransport, raw: asyncio.BaseTransport | None) -> int:
    """Close after the pending reply (FIN); returns the client's bytes still unread, which
    make the kernel send RST instead."""
    sock = raw.get_extra_info("socket") if raw is not None else None
    unread = unread_bytes(sock.fileno()) if sock is not None else 0
    transport.close()
    return unread


def unread_bytes(fd: int) -> int:
    """Bytes the client sent that the kernel still holds for socket ``fd``, unread.

    A close with any of them makes the kernel reset the connection (RST), not
    close it (FIN): RFC 2525 2.17, what Linux does. A drop during a large body
    meets that, so the journal says so rather than claim a FIN.
    """
    try:
        raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except OSError:  # closed already, or not a socket
        return 0
    count: int = struct.unpack("i", raw)[0]
    return count
