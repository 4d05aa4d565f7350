"""fakemx's DNS server: a profile's ``[dns]`` zone on UDP and TCP, with its faults.

    async with DnsServer("4.4.312-servfail") as dns:      # on the caller's loop
        resolver.nameservers = [dns.host]; resolver.port = dns.port
    with DnsServer(Dns(...)) as dns:                       # own loop in a thread
        dns.queries[-1].rcode                              # "SERVFAIL"

Plays the relay's resolver and the destination's authoritative server at once:
it answers with AA and RA set, so stub resolvers (glibc, dnspython, dig) take
its word. The wire format is dnspython's (parse and build); the decisions are
in fakemx.dns_zone.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype

from fakemx.addresses import host_port, listen_error
from fakemx.dns.journal import DEFAULT_MAX_QUERIES, DnsJournal, Query
from fakemx.dns.model import Dns
from fakemx.dns.zone import Answer, Zone
from fakemx.errors import FakeMXError, ListenError
from fakemx.fdbudget import FdBudget
from fakemx.listener import bind as bind_tcp
from fakemx.logs import Throttle
from fakemx.loopthread import LoopThread, start_in_thread, stop_thread
from fakemx.model import Profile
from fakemx.profiles import load_profile

# RFC 1035 4.2.1: without EDNS a UDP answer holds at most 512 bytes.
CLASSIC_UDP_BYTES = 512
# RFC 6891 6.2.5 / DNS flag day 2020: the EDNS buffer size we offer and honour at most.
EDNS_PAYLOAD_BYTES = 1232
# RFC 1035 4.2.2: a TCP message's length is two bytes.
TCP_MESSAGE_BYTES = 65535
# RFC 7766 6.2.3: a server may close an idle TCP connection; a few seconds is usual.
TCP_IDLE_SECONDS = 5.0
# Each DNS TCP connection holds a file descriptor, shared with SMTP: a cap keeps
# a flood of them from taking every descriptor the process has (issue #12).
MAX_TCP_CONNECTIONS = 256
_BIND_ATTEMPTS = 20  # port 0: UDP picks the port, and TCP may find it taken; try another

log = logging.getLogger(__name__)

DnsSpec = Dns | Profile | str | os.PathLike[str]


def dns_spec(spec: DnsSpec) -> Dns:
    """A Dns section from itself, a Profile, a catalog name or a profile file."""
    if isinstance(spec, Dns):
        return spec
    profile = load_profile(spec)
    if profile.dns is None:
        raise FakeMXError(f"profile {profile.name!r} has no [dns] section (nothing to serve)")
    return profile.dns


class DnsServer:
    """A fake DNS server on one address and port, UDP and TCP.

    Args:
        spec: a Dns section, or a profile (name, file, Profile) that has one.
        host: the address to listen on (loopback by default).
        port: 0 (the default) picks a port free for both UDP and TCP; read back as ``port``.
        clock: seconds, monotonic; records' ``from_seconds``/``until_seconds``
            count from ``start()`` on this clock, so tests can jump ahead.
        fakemx_address: what ``{fakemx}`` in A/AAAA records stands for.
        time_scale: multiplies every duration in the zone (TTLs, delays, windows).
        max_queries: how many of the newest queries ``queries`` keeps; also the most
            delayed replies waiting at once (more are dropped, as by an overloaded server).
        max_tcp_connections: DNS-over-TCP connections open at once; a new one over the
            cap closes the longest idle one, or is closed itself if none is idle.
        tcp_idle_seconds: a TCP connection with no query for this long, and no delayed
            reply still owed on it, is closed (RFC 7766 6.2.3).
        fds: the process's descriptor budget (fakemx.fdbudget), shared with SMTP: each
            TCP connection takes one from it, and a connection it has none for is closed.
    """

    def __init__(
        self,
        spec: DnsSpec,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], float] = time.monotonic,
        fakemx_address: str = "127.0.0.1",
        time_scale: float = 1.0,
        max_queries: int = DEFAULT_MAX_QUERIES,
        max_tcp_connections: int = MAX_TCP_CONNECTIONS,
        tcp_idle_seconds: float = TCP_IDLE_SECONDS,
        fds: FdBudget | None = None,
    ) -> None:
        for name, value in [("time_scale", time_scale), ("max_queries", max_queries),
                            ("max_tcp_connections", max_tcp_connections),
                            ("tcp_idle_seconds", tcp_idle_seconds)]:
            if not (math.isfinite(value) and value > 0):
                raise FakeMXError(f"DnsServer: {name} must be a finite number above 0 "
                                  f"(got {value!r})")
        self.spec = dns_spec(spec).scaled(time_scale)
        # A server listening on every address is reached on loopback from here.
        usable = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(fakemx_address, fakemx_address)
        self.zone = Zone(self.spec, usable)
        problems = self.zone.problems()
        if problems:
            raise FakeMXError(f"cannot serve this zone: {problems[0]}")
        self.host = host
        self._port = port
        self._clock = clock
        self._started = 0.0
        self.journal = DnsJournal(max_queries)
        self.max_tcp_connections = max_tcp_connections
        self._tcp_idle_seconds = tcp_idle_seconds
        self._fds = fds
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_refusing: socket.socket | None = None  # bound, never listening: SYN gets RST
        # Open connections, the longest idle first: the one to close for room.
        self._tcp_clients: collections.OrderedDict[_TcpClient, None] = collections.OrderedDict()
        self._pending: set[asyncio.TimerHandle] = set()  # delayed replies not yet sent
        # What clients can make us log: one line per kind per 10 s, on this server's clock.
        self._throttle = Throttle(clock=clock)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: LoopThread | None = None

    # region lifecycle ----------------------------------------------------------

    async def start(self) -> Self:
        self._loop = asyncio.get_running_loop()
        for attempt in range(_BIND_ATTEMPTS):
            udp = await self._bind_udp()
            port = udp.get_extra_info("sockname")[1]
            try:
                await self._bind_tcp(port)
            except ListenError:
                udp.close()
                if self._port == 0 and attempt + 1 < _BIND_ATTEMPTS:
                    continue  # the free UDP port is a busy TCP port: pick another
                raise
            self._udp, self._port = udp, port
            break
        self._started = self._clock()
        return self

    async def stop(self) -> None:
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        if self._udp is not None:
            self._udp.close()
            # The socket is closed on a later loop turn: wait, so that the same
            # port can be bound again at once (a profile switch does).
            await self._udp.get_protocol().closed  # type: ignore[attr-defined]
            self._udp = None
        if self._tcp_refusing is not None:
            self._tcp_refusing.close()
            self._tcp_refusing = None
        if self._tcp_server is not None:
            self._tcp_server.close()
            for client in list(self._tcp_clients):
                client.writer.close()
            await self._tcp_server.wait_closed()
            self._tcp_server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __enter__(self) -> Self:
        """Run on a private event loop in a background thread (for sync resolvers)."""
        self._thread = start_in_thread("fakemx-dns", self.start)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        thread, self._thread = self._thread, None
        stop_thread(thread, self.stop)

    async def _bind_udp(self) -> asyncio.DatagramTransport:
        assert self._loop is not None
        try:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: _Udp(self), local_addr=(self.host, self._port)
            )
        except OSError as exc:
            raise listen_error(exc, "listen for DNS", f"{self._where(self._port)}/udp") from None
        return transport

    async def _bind_tcp(self, port: int) -> None:
        sock = bind_tcp(self.host, port)
        if self.spec.tcp == "refuse":
            # Bound but not listening: the port stays ours and every SYN gets an RST,
            # so a resolver that falls back to TCP sees ECONNREFUSED.
            self._tcp_refusing = sock
            return
        sock.listen()
        self._tcp_server = await asyncio.start_server(self._serve_tcp, sock=sock)

    # endregion
    # region observation --------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def running(self) -> bool:
        return self._udp is not None

    @property
    def address(self) -> str:
        return self._where(self._port)

    @property
    def queries(self) -> list[Query]:
        """The newest ``max_queries`` questions since the last ``reset()``, oldest first."""
        return self.journal.queries

    @property
    def tcp_connections(self) -> int:
        """DNS-over-TCP connections open now (each holds a file descriptor)."""
        return len(self._tcp_clients)

    def wait_for(self, queries: int, *, name: str | None = None, timeout: float = 5.0) -> None:
        """Block until ``queries`` questions (for ``name``) arrived; TimeoutError if not."""
        if not self.journal.wait_for(queries, timeout, name):
            raise TimeoutError(
                f"fakemx dns: still {self.journal.arrived} queries after {timeout:g} s"
            )

    def reset(self) -> None:
        """Forget the queries (the zone's clock keeps running)."""
        self.journal.clear()

    def elapsed_seconds(self) -> float:
        """Time since ``start()`` on the server's clock: what the records' windows compare."""
        return self._clock() - self._started

    def _where(self, port: int) -> str:
        return host_port(self.host, port)

    # endregion
    # region answering ----------------------------------------------------------

    def _on_datagram(self, wire: bytes, peer: tuple[str, int]) -> None:
        # Nothing a client sends may raise into asyncio: its handler logs every one.
        try:
            self._answer_udp(wire, peer)
        except Exception:
            self._note(logging.ERROR, "fakemx dns: could not answer a UDP query from %s",
                       peer[0], exc_info=True)

    def _answer_udp(self, wire: bytes, peer: tuple[str, int]) -> None:
        decided = self._decide(wire, peer, "udp")
        if decided is None:
            return
        fault = decided.answer.fault
        data, truncated = _udp_wire(
            decided.response, decided.udp_limit, fault is not None and fault.truncate is not None
        )
        entry = dataclasses.replace(decided.entry, answer=(), truncated=True) \
            if truncated else decided.entry

        def send() -> None:
            if self._udp is not None:
                self._udp.sendto(data, peer)

        self._send(send, decided.answer, entry)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = self._admit(writer)
        if client is None:
            writer.transport.abort()  # at once: the descriptor is what we are short of
            return
        try:
            await self._converse(reader, client)
        except Exception:
            # Nothing a client sends may raise into asyncio: its handler logs every one.
            self._note(logging.ERROR, "fakemx dns: could not answer a TCP query from %s",
                       _peer(writer)[0], exc_info=True)
        finally:
            self._forget(client)
            writer.close()

    def _admit(self, writer: asyncio.StreamWriter) -> _TcpClient | None:
        """Room for one more connection: under the cap, or by closing the longest idle one."""
        if len(self._tcp_clients) >= self.max_tcp_connections:
            idle = next((c for c in self._tcp_clients if c.outstanding == 0), None)
            if idle is None:
                self._note(logging.WARNING, "fakemx dns: %d TCP connections, each owed a "
                           "delayed reply: closing new ones (max_tcp_connections)",
                           len(self._tcp_clients))
                return None
            self._note(logging.INFO, "fakemx dns: %d TCP connections (the cap): closing the "
                       "longest idle one for a new one (max_tcp_connections)",
                       len(self._tcp_clients))
            self._forget(idle)
            idle.writer.close()  # a FIN: idle, so nothing is left to flush
        if self._fds is not None and not self._fds.take():
            self._note(logging.WARNING, "fakemx dns: the process's descriptor budget is "
                       "spent: closing new TCP connections")
            return None
        client = _TcpClient(writer)
        self._tcp_clients[client] = None
        return client

    def _forget(self, client: _TcpClient) -> None:
        """No longer count ``client`` (once, whether closed for room or by its end)."""
        if client in self._tcp_clients:
            del self._tcp_clients[client]
            if self._fds is not None:
                self._fds.give_back()

    async def _converse(self, reader: asyncio.StreamReader, client: _TcpClient) -> None:
        """Queries and answers on one connection until the client leaves or idles."""
        peer = _peer(client.writer)
        while (wire := await self._read_message(reader, client)) is not None:
            if client not in self._tcp_clients:
                return  # closed for a newer connection while this message arrived
            self._tcp_clients.move_to_end(client)  # just used: the last to be closed for room
            self._answer_tcp(wire, peer, client)
            try:
                # A client that sends queries but never reads the answers would
                # otherwise grow our send buffer without end.
                async with asyncio.timeout(self._tcp_idle_seconds):
                    await client.writer.drain()
            except TimeoutError:
                client.writer.transport.abort()  # close() would wait for the unread data
                return

    async def _read_message(self, reader: asyncio.StreamReader, client: _TcpClient) -> bytes | None:
        """The next message, or None: the client left, cut one short, or was idle too long.

        RFC 1035 4.2.2: each message comes after its two-byte length. RFC 7766
        6.2.3: a connection with no query and no reply owed for a while is closed.
        """
        try:
            while True:
                try:
                    async with asyncio.timeout(self._tcp_idle_seconds):
                        prefix = await reader.readexactly(2)
                    break
                except TimeoutError:
                    # readexactly keeps what it read so far in the buffer: safe to wait again.
                    if client.outstanding == 0:
                        return None
            async with asyncio.timeout(self._tcp_idle_seconds):
                return await reader.readexactly(int.from_bytes(prefix, "big"))
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            return None

    def _answer_tcp(self, wire: bytes, peer: tuple[str, int], client: _TcpClient) -> None:
        decided = self._decide(wire, peer, "tcp")
        if decided is None:
            return
        data, entry = self._tcp_wire(decided)
        framed = len(data).to_bytes(2, "big") + data
        writer = client.writer

        def send() -> None:
            if not writer.is_closing():
                writer.write(framed)

        if self._send(send, decided.answer, entry, late=client.settle):
            client.outstanding += 1

    def _tcp_wire(self, decided: _Decided) -> tuple[bytes, Query]:
        """The response for TCP; SERVFAIL when even 65,535 bytes cannot hold it.

        dns_model rejects a zone whose records at one name do not fit; a long
        CNAME chain across names still can, and must not raise per query.
        """
        response = decided.response
        try:
            return response.to_wire(max_size=TCP_MESSAGE_BYTES), decided.entry
        except dns.exception.TooBig:
            self._note(logging.WARNING, "fakemx dns: the answer to %s %s is over 65,535 "
                       "bytes, so SERVFAIL (shorten the zone's CNAME chain)",
                       decided.entry.name, decided.entry.type)
        response.answer, response.authority, response.additional = [], [], []
        response.set_rcode(dns.rcode.SERVFAIL)
        entry = dataclasses.replace(decided.entry, rcode="SERVFAIL", answer=(),
                                    fault="answer too big")
        return response.to_wire(max_size=TCP_MESSAGE_BYTES), entry

    def _send(
        self, send: Callable[[], None], answer: Answer, entry: Query,
        late: Callable[[], None] = lambda: None,
    ) -> bool:
        """Send now, later (a slow server) or never (a silent one); journal either way.

        True when the reply is to be sent later: ``late()`` then runs just before it.
        """
        fault = answer.fault
        if fault is not None and fault.no_answer:
            self.journal.add(_unanswered(entry))
            return False
        if fault is None or fault.delay_seconds is None:
            self.journal.add(entry)  # first: a client that has its answer finds it journaled
            send()
            return False
        if len(self._pending) >= self.journal.max_queries:
            # More waiting than the journal keeps: an overloaded server drops them.
            self._note(logging.WARNING, "fakemx dns: %d delayed replies waiting: dropping "
                       "new ones (max_queries)", len(self._pending))
            self.journal.add(_unanswered(entry))
            return False
        assert self._loop is not None
        ticket = self.journal.add(_unanswered(entry))

        def later() -> None:
            self._pending.discard(handle)
            self.journal.replace(ticket, entry)  # one index: no scan of the journal
            late()
            send()

        handle = self._loop.call_later(fault.delay_seconds, later)
        self._pending.add(handle)
        return True

    def _decide(self, wire: bytes, peer: tuple[str, int], transport: str) -> _Decided | None:
        client = f"{peer[0]}:{peer[1]}"
        query = self._parse(wire, client, transport)
        if query is None:
            return None
        response = dns.message.make_response(
            query, recursion_available=True, our_payload=EDNS_PAYLOAD_BYTES
        )
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            # RFC 1035 4.1.1: NOTIMP for a kind of query we do not serve; FORMERR
            # for none or several questions, which no server answers (RFC 9619).
            wrong_opcode = query.opcode() != dns.opcode.QUERY
            response.set_rcode(dns.rcode.NOTIMP if wrong_opcode else dns.rcode.FORMERR)
            rcode = dns.rcode.to_text(response.rcode())
            entry = Query(time.time(), client, transport, "", "", rcode)
            return _Decided(response, Answer(response.rcode()), entry, CLASSIC_UDP_BYTES)
        question = query.question[0]
        answer = self.zone.answer(question.name, question.rdtype, self.elapsed_seconds())
        if transport == "tcp" and answer.fault is not None and answer.fault.truncate:
            answer = dataclasses.replace(answer, fault=None)  # truncation is a UDP matter
        response.flags |= dns.flags.AA  # the zone's own server: its word is final
        response.set_rcode(answer.rcode)
        response.answer = list(answer.answer)
        response.authority = list(answer.authority)
        entry = Query(
            at=time.time(),
            client=client,
            transport=transport,
            name=question.name.to_text(),
            type=dns.rdatatype.to_text(question.rdtype),
            rcode=dns.rcode.to_text(answer.rcode),
            answer=tuple(line for rrset in answer.answer for line in rrset.to_text().splitlines()),
            fault=answer.fault.label if answer.fault else None,
        )
        # RFC 6891 6.2.3: a client's EDNS payload size; 512 without EDNS (RFC 1035 4.2.1).
        asked = query.payload if query.edns >= 0 else CLASSIC_UDP_BYTES
        limit = max(CLASSIC_UDP_BYTES, min(asked, EDNS_PAYLOAD_BYTES))
        return _Decided(response, answer, entry, limit)

    def _parse(self, wire: bytes, client: str, transport: str) -> dns.message.Message | None:
        """The query in ``wire``, or None (journaled): garbage, or a response.

        Neither gets a reply: garbage has no trustworthy ID to answer to, and
        answering a response invites two servers to answer each other forever.
        """
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            problem = "malformed query"
        else:
            if not query.flags & dns.flags.QR:
                return query
            problem = "a response, not a query"
        self.journal.add(Query(time.time(), client, transport, "", "", "FORMERR",
                               answered=False, fault=problem))
        return None

    def _note(self, level: int, template: str, *args: object, exc_info: bool = False) -> None:
        """Log, through this server's Throttle (fakemx.logs): the kind is the template."""
        if not log.isEnabledFor(level):
            return
        record = log.makeRecord(log.name, level, __file__, 0, template, args,
                                sys.exc_info() if exc_info else None)
        if self._throttle.filter(record):
            log.handle(record)

    # endregion


@dataclasses.dataclass(frozen=True)
class _Decided:
    response: dns.message.Message
    answer: Answer
    entry: Query
    udp_limit: int  # the largest UDP answer this client takes


@dataclasses.dataclass(eq=False)  # one per connection, hashed by identity
class _TcpClient:
    writer: asyncio.StreamWriter
    outstanding: int = 0  # delayed replies still to be sent on it: not idle while > 0

    def settle(self) -> None:
        self.outstanding -= 1


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server
        self.closed = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self._server._on_datagram(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable from a client that left: nothing to do (RFC 1122 4.1.3.3)


def _udp_wire(
    response: dns.message.Message, limit: int, truncate: bool
) -> tuple[bytes, bool]:
    """The response for UDP: whole, or empty with TC set when it does not fit or must not.

    RFC 2181 9: a truncated answer sets TC and the client retries over TCP;
    sending no records at all is the common (and simplest correct) form.
    """
    if not truncate:
        try:
            return response.to_wire(max_size=limit), False
        except dns.exception.TooBig:
            pass
    response.flags |= dns.flags.TC
    response.answer, response.authority, response.additional = [], [], []
    return response.to_wire(max_size=limit), True


def _peer(writer: asyncio.StreamWriter) -> tuple[str, int]:
    # None when the client was gone before asyncio could ask who it was.
    name = writer.get_extra_info("peername") or ("?", 0)
    return str(name[0]), int(name[1])


def _unanswered(entry: Query) -> Query:
    return dataclasses.replace(entry, answered=False)
