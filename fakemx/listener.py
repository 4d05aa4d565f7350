"""The TCP listener and its three states, below SMTP.

- ``open``: listen and accept; aiosmtpd speaks SMTP.
- ``refuse``: the port stays bound (so nobody else takes it) but does not
  listen, so the kernel answers every SYN with RST: the client gets
  ECONNREFUSED, exactly what a closed port or a firewall's ``reject-with
  tcp-reset`` gives.
- ``blackhole``: listen with a backlog of 0 and fill the accept queue with one
  connection of fakemx's own that is never accepted. Linux then drops further
  SYNs, so the client's connect times out, as with a switched-off host or a
  firewall that drops.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Callable

from fakemx.addresses import host_port, listen_error
from fakemx.errors import ListenError
from fakemx.fdbudget import ACCEPTS_PER_TICK
from fakemx.stages import ListenerState

# As deep as the kernel allows (net.core.somaxconn caps it): a burst of connections
# waits in the queue instead of having its SYNs dropped and retried a second later.
_BACKLOG = socket.SOMAXCONN
# Set in a worker of `--workers N`: every port it binds is shared with the other
# workers (SO_REUSEPORT), and the kernel spreads the connections over them.
_shared_ports = False
# Of the workers, only the first holds a blackhole's full queue: the kernel picks
# among the *listening* sockets of a port, so if the others listened too a SYN
# could reach a queue that is not full (and be answered).
_holds_blackhole = True


def share_ports(*, holds_blackhole: bool) -> None:
    """Bind every later listening socket of this process with SO_REUSEPORT."""
    global _shared_ports, _holds_blackhole
    _shared_ports, _holds_blackhole = True, holds_blackhole


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket, or a one-line ListenError that says what to do."""
    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if _shared_ports and port:  # joins the port the first worker bound
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise listen_error(exc, "listen", host_port(host, port)) from None
    if _shared_ports and not port:
        # Set after the bind: a port-0 bind with SO_REUSEPORT may be given a port
        # another SO_REUSEPORT socket of this user holds (and share its connections);
        # set before listen(), the other workers can still join this one.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return sock


class Listener:
    """One port; its state can change while fakemx runs (from the next SYN)."""

    def __init__(
        self,
        host: str,
        port: int,
        protocol_factory: Callable[[], asyncio.Protocol],
        ssl_context: Callable[[], ssl.SSLContext | None],
    ) -> None:
        self.host = host
        self.port = port
        self.state = ListenerState.OPEN
        self._factory = protocol_factory
        self._ssl_context = ssl_context
        self._server: asyncio.Server | None = None
        self._held: list[socket.socket] = []
        self.serves_tls = False  # implicit TLS (SMTPS) on this socket

    async def start(self, state: ListenerState) -> None:
        sock = bind(self.host, self.port)
        self.port = sock.getsockname()[1]  # port 0 picks a free one; read it back
        await self._enter(state, sock)

    @property
    def bound(self) -> bool:
        return self._server is not None or bool(self._held)

    async def set_state(self, state: ListenerState) -> None:
        """Close the current socket and rebind the same port in the new state.

        If the port cannot be bound again, the old state is restored (when that
        bind works) and the error raised: never a server left with no socket
        because another one took the port meanwhile.
        """
        old = self.state
        await self._release()
        try:
            sock = bind(self.host, self.port)
        except ListenError:
            with contextlib.suppress(ListenError):
                await self._enter(old, bind(self.host, self.port))
            raise
        await self._enter(state, sock)

    async def stop(self) -> None:
        await self._release()

    async def _enter(self, state: ListenerState, sock: socket.socket) -> None:
        self.state = state
        if state is ListenerState.OPEN:
            loop = asyncio.get_running_loop()
            context = self._ssl_context()
            self.serves_tls = context is not None
            # asyncio's backlog is both listen()'s queue and how many connections it
            # accepts per loop turn: a short turn keeps a connect flood from taking
            # the loop (and every spare descriptor) at once, and listen() again
            # below gives the kernel its long queue back.
            if context is None:
                self._server = await loop.create_server(
                    self._factory, sock=sock, backlog=ACCEPTS_PER_TICK
                )
            else:
                self._server = await loop.create_server(
                    self._factory, sock=sock, backlog=ACCEPTS_PER_TICK, ssl=context,
                    ssl_handshake_timeout=30,
                )
            sock.listen(_BACKLOG)
        elif state is ListenerState.REFUSE or not _holds_blackhole:
            self._held = [sock]  # bound, not listening: the kernel sends no SYN here
        else:
            sock.listen(0)
            filler = socket.socket(sock.family, socket.SOCK_STREAM)
            # Completes at once: the queue is empty. From now on it is full.
            filler.connect(sock.getsockname()[:2])
            self._held = [sock, filler]

    async def _release(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for sock in self._held:
            sock.close()
        self._held = []
