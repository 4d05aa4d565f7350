"""SMTP replies read off a socket (plain or TLS), every wait bounded.

The three ways a wait ends badly are exceptions a step can name: the server
closed (FIN), reset (RST), or said nothing within the timeout.
"""

from __future__ import annotations

import errno
import re
import select
import socket
import ssl
import time

from fakemx.diagnose.model import Reply

MAX_REPLY_BYTES = 65_536  # a reply longer than this is not an SMTP reply worth reading on
_LINE = re.compile(rb"^(\d{3})([ -])(.*)$")


class Ended(Exception):
    """The server ended the connection: ``how`` is ``fin`` (EOF) or ``rst`` (ECONNRESET)."""

    def __init__(self, how: str, data: bytes = b"") -> None:
        self.how = how
        self.data = data
        super().__init__("closed by the server (FIN)" if how == "fin"
                         else "reset by the server (RST)")


class Silent(Exception):
    """No (complete) reply within the timeout."""

    def __init__(self, seconds: float, data: bytes = b"") -> None:
        self.seconds = seconds
        self.data = data
        super().__init__(f"no reply within {seconds:g} s")


class Garbled(Exception):
    """Bytes that are not an SMTP reply; ``line`` is the first such line."""

    def __init__(self, message: str, line: str = "") -> None:
        self.line = line
        super().__init__(message)


class Wire:
    """One connection: send a command, read its reply; ``seconds`` is how long the read took."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._pending = b""
        self.seconds = 0.0

    def send(self, line: str) -> None:
        # A server that closed after its last reply would answer this command with the
        # kernel's RST: notice its FIN first (plain sockets; a TLS one cannot peek).
        if not isinstance(self.sock, ssl.SSLSocket) and not self._pending:
            readable, _, _ = select.select([self.sock], [], [], 0)
            try:
                if readable and self.sock.recv(1, socket.MSG_PEEK) == b"":
                    raise Ended("fin")
            except ConnectionResetError:
                raise Ended("rst") from None
        try:
            self.sock.sendall(line.encode("ascii", "replace") + b"\r\n")
        except (ConnectionResetError, BrokenPipeError):
            raise Ended("rst") from None

    def reply(self, timeout: float) -> Reply:
        started = time.monotonic()
        deadline = started + timeout
        data = self._pending
        while True:
            parsed = _complete(data)
            if parsed is not None:
                reply, self._pending = parsed
                self.seconds = time.monotonic() - started
                return reply
            if len(data) > MAX_REPLY_BYTES:
                raise Garbled(f"{len(data)} bytes without a complete reply")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Silent(timeout, data)
            self.sock.settimeout(remaining)
            if isinstance(self.sock, ssl.SSLSocket) and not self.sock.pending():
                self._await_readable(remaining, data)
            try:
                chunk = self.sock.recv(4096)
            except TimeoutError:
                raise Silent(timeout, data) from None
            except ConnectionResetError:
                raise Ended("rst", data) from None
            except ssl.SSLEOFError:
                raise Ended("fin", data) from None
            if not chunk:
                raise Ended("fin", data)
            data += chunk

    def _await_readable(self, seconds: float, data: bytes) -> None:
        """Under TLS, OpenSSL reports a reset as an unexpected EOF: look at the socket first."""
        readable, _, _ = select.select([self.sock], [], [], seconds)
        if not readable:
            raise Silent(seconds, data)
        if self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNRESET:
            raise Ended("rst", data)

    def command(self, line: str, timeout: float) -> Reply:
        self.send(line)
        return self.reply(timeout)


def _complete(data: bytes) -> tuple[Reply, bytes] | None:
    """The first complete reply in ``data`` and what follows it, or None."""
    lines: list[str] = []
    code = 0
    rest = data
    while b"\r\n" in rest or b"\n" in rest:
        raw, _, rest = rest.partition(b"\n")
        line = raw.rstrip(b"\r")
        found = _LINE.match(line)
        if found is None:
            raise Garbled(f"not an SMTP reply line: {line[:80]!r}",
                          line[:200].decode("utf-8", "replace"))
        code = int(found[1])
        lines.append(found[3].decode("utf-8", "replace"))
        if found[2] == b" ":
            return Reply(code, tuple(lines)), rest
    return None
