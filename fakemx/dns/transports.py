"""DNS's two transports: the UDP protocol, and the TCP connections with their cap,
idle close and descriptor budget (RFC 7766). Answers come from the server."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
from collections.abc import Callable

from fakemx.fdbudget import FdBudget

Log = Callable[..., None]  # DnsServer._note(level, template, *args, exc_info=False)


@dataclasses.dataclass(eq=False)  # one per connection, hashed by identity
class TcpClient:
    writer: asyncio.StreamWriter
    outstanding: int = 0  # delayed replies still to be sent on it: not idle while > 0

    def settle(self) -> None:
        self.outstanding -= 1


class TcpConnections:
    """Open DNS-over-TCP connections, the longest idle first (the one to close for room)."""

    def __init__(self, answer: Callable[[bytes, tuple[str, int], TcpClient], None], *,
                 max_connections: int, idle_seconds: float, fds: FdBudget | None,
                 log: Log) -> None:
        self._answer = answer
        self.max_connections = max_connections
        self.idle_seconds = idle_seconds
        self._fds = fds
        self._log = log
        self.clients: collections.OrderedDict[TcpClient, None] = collections.OrderedDict()

    def close_all(self) -> None:
        for client in list(self.clients):
            client.writer.close()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """asyncio's callback for a new connection."""
        client = self._admit(writer)
        if client is None:
            writer.transport.abort()  # at once: the descriptor is what we are short of
            return
        try:
            await self._converse(reader, client)
        except Exception:
            # Nothing a client sends may raise into asyncio: its handler logs every one.
            self._log(logging.ERROR, "fakemx dns: could not answer a TCP query from %s",
                       peer_of(writer)[0], exc_info=True)
        finally:
            self._forget(client)
            writer.close()

    def _admit(self, writer: asyncio.StreamWriter) -> TcpClient | None:
        """Room for one more connection: under the cap, or by closing the longest idle one."""
        if len(self.clients) >= self.max_connections:
            idle = next((c for c in self.clients if c.outstanding == 0), None)
            if idle is None:
                self._log(logging.WARNING, "fakemx dns: %d TCP connections, each owed a "
                           "delayed reply: closing new ones (max_tcp_connections)",
                           len(self.clients))
                return None
            self._log(logging.INFO, "fakemx dns: %d TCP connections (the cap): closing the "
                       "longest idle one for a new one (max_tcp_connections)",
                       len(self.clients))
            self._forget(idle)
            idle.writer.close()  # a FIN: idle, so nothing is left to flush
        if self._fds is not None and not self._fds.take():
            self._log(logging.WARNING, "fakemx dns: the process's descriptor budget is "
                       "spent: closing new TCP connections")
            return None
        client = TcpClient(writer)
        self.clients[client] = None
        return client

    def _forget(self, client: TcpClient) -> None:
        """No longer count ``client`` (once, whether closed for room or by its end)."""
        if client in self.clients:
            del self.clients[client]
            if self._fds is not None:
                self._fds.give_back()

    async def _converse(self, reader: asyncio.StreamReader, client: TcpClient) -> None:
        """Queries and answers on one connection until the client leaves or idles."""
        peer = peer_of(client.writer)
        while (wire := await self._read_message(reader, client)) is not None:
            if client not in self.clients:
                return  # closed for a newer connection while this message arrived
            self.clients.move_to_end(client)  # just used: the last to be closed for room
            self._answer(wire, peer, client)
            try:
                # A client that sends queries but never reads the answers would
                # otherwise grow our send buffer without end.
                async with asyncio.timeout(self.idle_seconds):
                    await client.writer.drain()
            except TimeoutError:
                client.writer.transport.abort()  # close() would wait for the unread data
                return

    async def _read_message(self, reader: asyncio.StreamReader, client: TcpClient) -> bytes | None:
        """The next message, or None: the client left, cut one short, or was idle too long.

        RFC 1035 4.2.2: each message comes after its two-byte length. RFC 7766
        6.2.3: a connection with no query and no reply owed for a while is closed.
        """
        try:
            while True:
                try:
                    async with asyncio.timeout(self.idle_seconds):
                        prefix = await reader.readexactly(2)
                    break
                except TimeoutError:
                    # readexactly keeps what it read so far in the buffer: safe to wait again.
                    if client.outstanding == 0:
                        return None
            async with asyncio.timeout(self.idle_seconds):
                return await reader.readexactly(int.from_bytes(prefix, "big"))
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            return None


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, tuple[str, int]], None]) -> None:
        self._on_datagram = on_datagram
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable from a client that left: nothing to do (RFC 1122 4.1.3.3)


def peer_of(writer: asyncio.StreamWriter) -> tuple[str, int]:
    # None when the client was gone before asyncio could ask who it was.
    name = writer.get_extra_info("peername") or ("?", 0)
    return str(name[0]), int(name[1])
