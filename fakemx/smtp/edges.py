"""The malformed and edge replies on the wire (the actions in fakemx.edge_actions).

Replies stay in order: a shaped reply (in segments, or with plaintext after a
220) is the very reply the session was about to push, written by
``shape_next_reply`` in its place (see fakemx/smtp/seam.py), and the session
reads nothing more until it is out. Client bytes read here (the first line an
"other server" gets) are journaled losslessly, like every command.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from email.utils import formatdate
from typing import NoReturn

from fakemx.clientbytes import from_bytes
from fakemx.edge_actions import (
    EdgeAction,
    HeloOnly,
    InjectPlaintext,
    MixedCodes,
    OtherServer,
    Segmented,
    Unterminated,
)
from fakemx.smtp.core import SessionCore
from fakemx.smtp.replies import render
from fakemx.stages import Stage

# What Debian 12's OpenSSH sends first, and to a first line that is not "SSH-..."
# (kex_exchange_identification in OpenSSH's kex.c), before it closes.
SSH_BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
SSH_REFUSAL = b"Invalid SSH identification string.\r\n"
# nginx 1.22's page for a request line it cannot parse ("EHLO x" is one).
_NGINX_400_BODY = (b"<html>\r\n<head><title>400 Bad Request</title></head>\r\n<body>\r\n"
                   b"<center><h1>400 Bad Request</h1></center>\r\n"
                   b"<hr><center>nginx/1.22.1</center>\r\n</body>\r\n</html>\r\n")


def nginx_400() -> bytes:
    """nginx's answer to a first line that is no HTTP request, headers and page."""
    head = ("HTTP/1.1 400 Bad Request\r\nServer: nginx/1.22.1\r\n"
            f"Date: {formatdate(usegmt=True)}\r\nContent-Type: text/html\r\n"
            f"Content-Length: {len(_NGINX_400_BODY)}\r\nConnection: close\r\n\r\n")
    return head.encode() + _NGINX_400_BODY


def pieces(data: bytes, segments: int) -> list[bytes]:
    """``data`` cut into ``segments`` pieces of nearly equal size (fewer if it is shorter)."""
    count = max(1, min(segments, len(data)))
    cuts = [round(n * len(data) / count) for n in range(count + 1)]
    return [data[start:end] for start, end in itertools.pairwise(cuts)]


class EdgeReplies(SessionCore):
    async def _edge(self, stage: Stage, action: EdgeAction) -> str | None:
        """Carry out a malformed or edge reply; the contract of ``perform``."""
        match action:
            case Unterminated():
                await self._unterminated(stage, action)
            case Segmented():
                self.shape_next_reply = functools.partial(self._write_segmented, action)
                reply = action.as_reply()
                return None if reply is None else render(reply, self._placeholders())
            case MixedCodes():
                return action.wire
            case HeloOnly():
                return action.reply if self._verb == "EHLO" else None
            case OtherServer():
                await self._other_server(action)
            case InjectPlaintext():
                self.shape_next_reply = functools.partial(self._write_injected, action)
        return None

    async def _unterminated(self, stage: Stage, action: Unterminated) -> NoReturn:
        """The reply without the CRLF that ends its last line, then FIN."""
        text = render(action.as_reply(), self._placeholders())
        self.on_reply(text)
        self._note("the reply's last line went without CRLF; closing (FIN)")
        self.writer.write(text.encode())
        self._hang_up(stage, "fin", replied=True)

    async def _write_segmented(self, action: Segmented, reply: bytes) -> None:
        """One write per piece: TCP_NODELAY is on, so each leaves as its own segment."""
        parts = pieces(reply + b"\r\n", action.segments)
        self._note(f"reply in {len(parts)} TCP segments, {action.pause_seconds:g} s apart")
        self.pause_idle_timer()  # fakemx's own pauses are not the client's idleness
        for number, part in enumerate(parts):
            if number:
                await asyncio.sleep(action.pause_seconds)
            if self.transport is None or self.transport.is_closing():
                return  # the client left meanwhile: connection_lost has the story
            self.writer.write(part)
        self.restart_idle_timer()
        await self.writer.drain()

    async def _write_injected(self, action: InjectPlaintext, reply: bytes) -> None:
        """The 220 and the injected lines in one write, so in one TCP segment."""
        self.writer.write(reply + b"\r\n" + action.wire)
        self.on_reply("\r\n".join(action.lines))
        self._note(f"{len(action.lines)} plaintext line(s) injected after the 220, in the"
                   " same TCP segment")
        await self.writer.drain()

    async def _other_server(self, action: OtherServer) -> NoReturn:
        """Speak as nginx or OpenSSH would to an SMTP client, then close (FIN)."""
        self.pause_idle_timer()  # that server's own timeout governs
        wrote = False
        if action.protocol == "ssh":
            self._say(SSH_BANNER)
            wrote = True
        line: bytes | None = b""  # None: a line too long to read, refused all the same
        try:
            line = await asyncio.wait_for(self.reader.readline(), action.seconds)
        except TimeoutError:
            self._note(f"no line from the client in {action.seconds:g} s: {action.protocol}"
                       " closes")
        except ValueError:  # over the reader's limit
            self._note("the client's first line is longer than fakemx reads")
            line = None
        if line is None or line:
            if line and self.record is not None:
                self.record.add("client", from_bytes(line.rstrip(b"\r\n")))
            self._say(SSH_REFUSAL if action.protocol == "ssh" else nginx_400())
            wrote = True
        self._hang_up(Stage.GREETING, "fin", replied=wrote)

    def _say(self, data: bytes) -> None:
        self.on_reply(data.decode("utf-8", "replace").rstrip("\r\n"))
        self.writer.write(data)
