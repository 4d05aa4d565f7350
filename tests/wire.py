"""Raw-socket helpers for asserting what a client sees on the wire.

Every call is bounded by a timeout so a hang fails the test instead of the run.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
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


STEPS = ("greeting", "ehlo", "mail", "rcpt", "data", "body", "quit")


@dataclass
class Transcript:
    """A full SMTP transaction as a raw-socket client lived it."""

    replies: dict[str, bytes]  # step -> the reply received for it
    ended_at: str | None = None  # the step during which the server ended the connection
    how: str | None = None  # "fin", "rst", or "timeout" (the client gave up waiting)

    def code(self, step: str) -> int | None:
        reply = self.replies.get(step)
        return int(reply[:3]) if reply else None

    def text(self, step: str) -> str:
        return self.replies.get(step, b"").decode()


def _body(size: int) -> bytes:
    line = b"x" * 62 + b"\r\n"
    head = b"From: alice@sender.example\r\nTo: bob@dest.example\r\nSubject: probe\r\n\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def dialogue(
    host: str,
    port: int,
    *,
    helo: str = "client.example.net",
    sender: str = "alice@sender.example",
    recipient: str = "bob@dest.example",
    body_size: int = 2048,
    timeout: float = TIMEOUT,
    source: str | None = None,
) -> Transcript:
    """Run greeting, EHLO, MAIL, RCPT, DATA, body and QUIT; stop at a failure or a hang-up.

    A reply that is not 2xx/3xx ends the dialogue (the reply is kept); a
    connection the server ends is recorded with the step and FIN or RST.
    """
    transcript = Transcript({})
    try:
        sock = socket.create_connection(
            (host, port), timeout=timeout, source_address=(source, 0) if source else None
        )
    except ConnectionResetError:  # the RST overtook the end of the handshake
        transcript.ended_at, transcript.how = "greeting", "rst"
        return transcript
    sends = {
        "greeting": b"",
        "ehlo": f"EHLO {helo}\r\n".encode(),
        "mail": f"MAIL FROM:<{sender}>\r\n".encode(),
        "rcpt": f"RCPT TO:<{recipient}>\r\n".encode(),
        "data": b"DATA\r\n",
        "body": _body(body_size) + b".\r\n",
        "quit": b"QUIT\r\n",
    }
    with sock:
        for step in STEPS:
            try:
                if sends[step]:
                    sock.sendall(sends[step])
                reply = read_reply(sock)
            except ConnectionResetError:
                transcript.ended_at, transcript.how = step, "rst"
                return transcript
            except BrokenPipeError:
                transcript.ended_at, transcript.how = step, "rst"
                return transcript
            except ConnectionError:
                transcript.ended_at, transcript.how = step, "fin"
                return transcript
            except TimeoutError:  # the client's own timeout: it gives up and closes
                transcript.ended_at, transcript.how = step, "timeout"
                return transcript
            transcript.replies[step] = reply
            if reply[:1] not in (b"2", b"3"):
                break
    return transcript


def serve_process(state_dir: object, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``python -m fakemx serve --port 0 ARGS`` and read its ready line.

    Returns the process (use it as a context manager) and the port it printed.
    """
    process = subprocess.Popen(
        [sys.executable, "-m", "fakemx", "serve", *args, "--port", "0",
         "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    found = re.search(rb"127\.0\.0\.1:(\d+)", process.stdout.readline())
    assert found, "fakemx serve printed no ready line"
    return process, int(found[1])
