"""Implicit TLS (SMTPS, RFC 8314 3.3): the TLS handshake first, then SMTP inside it.

asyncio's ``create_server(ssl=...)`` does the handshake before the protocol
ever hears of the connection and drops a failed one silently, so a relay that
rejects fakemx's certificate would leave no trace in the journal. This wrapper
accepts the plain connection, runs the handshake itself with
``loop.start_tls``, and then hands the encrypted transport to FakeSMTP, or
tells FakeSMTP that the handshake failed so the attempt is journaled.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Protocol

from fakemx.smtp.seam import ssl_object_of
from fakemx.tls import contexts

HANDSHAKE_TIMEOUT_SECONDS = 30.0  # what asyncio's own ssl server uses


class TlsSession(Protocol):
    """The protocol that speaks SMTP once TLS is up (FakeSMTP)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None: ...

    def data_received(self, data: bytes) -> None: ...

    def eof_received(self) -> bool | None: ...

    def tls_handshake_failed(
        self, transport: asyncio.BaseTransport, error: BaseException
    ) -> None: ...


class ImplicitTls(asyncio.Protocol):
    """One SMTPS connection until its handshake is over."""

    def __init__(self, app: TlsSession, context: ssl.SSLContext) -> None:
        self._app = app
        self._context = context
        self._task: asyncio.Task[None] | None = None
        self._socket: asyncio.Transport | None = None
        self._hello: list[bytes] = []  # the client's TLS bytes read before start_tls
        self._early: list[bytes] = []  # its SMTP bytes read before the hand-over
        self._eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._socket = transport
        # Nothing should be read before start_tls takes the transport over. Debian 12's
        # Python 3.11.2 still starts reading once this returns (its transport adds the
        # reader without asking whether it was paused; 3.11.7 asks), so bytes may come
        # anyway: data_received keeps them for the handshake.
        transport.pause_reading()
        self._task = asyncio.get_running_loop().create_task(self._handshake(transport))

    # Until the hand-over this wrapper is the TLS transport's protocol too, so
    # that a failed handshake reports to it and not to an SMTP session that
    # never started; what arrives in between is kept and passed on.

    def data_received(self, data: bytes) -> None:
        if self._socket is not None and self._socket.get_protocol() is self:
            self._hello.append(data)  # still the socket's protocol: TLS records
        else:
            self._early.append(data)  # the TLS transport's: decrypted SMTP

    def eof_received(self) -> bool | None:
        self._eof = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        pass  # the handshake task sees the failure and journals it

    async def _handshake(self, transport: asyncio.Transport) -> None:
        loop = asyncio.get_running_loop()
        handshake = loop.create_task(loop.start_tls(
            transport, self, self._context,
            server_side=True, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS,
        ))
        # One turn of the loop lets start_tls install its SSLProtocol; keep it,
        # because its SSLObject holds the reason if the handshake fails (asyncio
        # drops the transport's protocol on close and has no public way to it).
        await asyncio.sleep(0)
        tls_protocol = transport.get_protocol()
        ssl_object = ssl_object_of(tls_protocol)
        if self._hello and isinstance(tls_protocol, asyncio.BufferedProtocol):
            hello, self._hello = b"".join(self._hello), []
            _feed(tls_protocol, hello)
        try:
            tls = await handshake
        except (OSError, TimeoutError, RuntimeError) as exc:  # ssl.SSLError is an OSError
            self._app.tls_handshake_failed(transport, contexts.handshake_error(exc, ssl_object))
            transport.abort()
            return
        if tls is None:  # the transport closed while the handshake ran
            self._app.tls_handshake_failed(transport, ConnectionResetError("closed"))
            return
        tls.set_protocol(self._app)  # type: ignore[arg-type]
        self._app.connection_made(tls)
        for data in self._early:
            self._app.data_received(data)
        if self._eof:
            self._app.eof_received()


def _feed(protocol: asyncio.BufferedProtocol, data: bytes) -> None:
    """Hand ``data`` to ``protocol`` as the transport would have (its buffer interface)."""
    view = memoryview(data)
    while view:
        buffer = memoryview(protocol.get_buffer(len(view))).cast("B")
        size = min(len(buffer), len(view))
        buffer[:size] = view[:size]
        protocol.buffer_updated(size)
        view = view[size:]
