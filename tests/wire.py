"""Raw-socket helpers for asserting what a client sees on the wire.

Every call is bounded by a timeout so a hang fails the test instead of the run.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

TIMEOUT = 5.0


@dataclass
class Closed:
    """How the server ended the connection, as the client's socket reports it."""

    how: str  # "fin" (recv returned b""), "rst" (ECONNRESET), or "open" (timed out, still open)
    data: bytes  # everything received before the end


def connect(host: str, port: int, timeout: float = TIMEOUT) -> socket.socket:
    return socket.create_connection((host, port), timeout=timeout)


def read_reply(sock: socket.socket) -> bytes:
    """Read one complete SMTP reply (all continuation lines)."""
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed while reading a reply; got {data!r}")
        data += chunk
        lines = data.split(b"\r\n")
        complete = [line for line in lines[:-1]]
        if complete and len(complete[-1]) >= 4 and complete[-1][3:4] == b" ":
            return data


def command(sock: socket.socket, line: str) -> bytes:
    sock.sendall(line.encode() + b"\r\n")
    return read_reply(sock)


def wait_closed(sock: socket.socket, timeout: float = TIMEOUT) -> Closed:
    """Read until the server closes: tell a FIN (EOF) from an RST (ECONNRESET)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return Closed("fin", data)
            data += chunk
    except ConnectionResetError:
        return Closed("rst", data)
    except TimeoutError:
        return Closed("open", data)


def until(predicate: object, timeout: float = TIMEOUT) -> None:
    """Poll ``predicate()`` until true (for state the server sets on its own thread)."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)
