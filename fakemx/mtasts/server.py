"""The MTA-STS policy host: HTTPS on loopback with fakemx's certificates, and its faults.

    host = PolicyHost(spec, state_dir, host="127.0.0.1", port=0)
    await host.start()          # host.port, host.requests

``down`` binds the port without listening (every SYN gets an RST), ``timeout``
accepts and never answers; the rest are HTTP answers (fakemx.mtasts.policy)
over TLS with the certificate kind the profile names, made for
``mta-sts.<domain>`` by fakemx's CA (fakemx.tls.certs).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fakemx.addresses import host_port
from fakemx.listener import bind
from fakemx.model import CertKind, Tls
from fakemx.mtasts.model import MtaSts
from fakemx.mtasts.policy import response
from fakemx.tls.contexts import server_context

_READ_TIMEOUT_SECONDS = 10.0
_HEAD_LIMIT_BYTES = 8192


@dataclass(frozen=True)
class PolicyRequest:
    at: float
    method: str
    path: str
    status: int


class PolicyHost:
    def __init__(self, spec: MtaSts, state_dir: Path, *, host: str = "127.0.0.1",
                 port: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.spec = spec
        self.host = host
        self._port = port
        self._state_dir = state_dir
        self._clock = clock  # a policy that changes counts from start() on it
        self._started = clock()
        self.requests: list[PolicyRequest] = []
        self._server: asyncio.Server | None = None
        self._refusing: socket.socket | None = None
        self._held: set[asyncio.StreamWriter] = set()  # ``timeout``: accepted, never answered

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return host_port(self.host, self._port)

    async def start(self) -> PolicyHost:
        self._started = self._clock()
        sock = bind(self.host, self._port)
        self._port = sock.getsockname()[1]
        if self.spec.fault == "down":
            self._refusing = sock  # bound, not listening: the port stays ours, SYNs get RST
            return self
        context = server_context(self._state_dir, self.spec.host,
                                 Tls(cert=CertKind(self.spec.cert)))
        sock.listen()
        self._server = await asyncio.start_server(self._serve, sock=sock, ssl=context,
                                                  limit=_HEAD_LIMIT_BYTES)
        return self

    async def stop(self) -> None:
        if self._refusing is not None:
            self._refusing.close()
            self._refusing = None
        for writer in list(self._held):
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.spec.fault == "timeout":
            self._held.add(writer)  # the client waits for an answer that never comes
            with contextlib.suppress(ConnectionError):
                await reader.read()  # until the client gives up and closes
            self._held.discard(writer)
            writer.close()
            return
        try:
            async with asyncio.timeout(_READ_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
            method, path = _request_line(head)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError, ConnectionError):
            writer.close()
            return
        status, reason, body = response(self.spec, method, path,
                                        self._clock() - self._started)
        self.requests.append(PolicyRequest(time.time(), method, path, status))
        payload = b"" if method == "HEAD" else body
        writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
                     f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                     + payload)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


def _request_line(head: bytes) -> tuple[str, str]:
    """The method and the path (query dropped) of ``GET /path HTTP/1.1``."""
    method, target, _version = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
    return method, target.split("?", 1)[0]
