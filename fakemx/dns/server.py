"""fakemx's DNS server: a profile's ``[dns]`` zone on UDP and TCP, with its faults.

    async with DnsServer("4.4.312-servfail") as dns:      # on the caller's loop
        resolver.nameservers = [dns.host]; resolver.port = dns.port
    with DnsServer(Dns(...)) as dns:                       # own loop in a thread
        dns.queries[-1].rcode                              # "SERVFAIL"

Plays the relay's resolver and the destination's authoritative server at once:
it answers with AA and RA set, so stub resolvers (glibc, dnspython, dig) take
its word. The wire format is dnspython's (parse and build); the decisions are
in fakemx.dns.zone and fakemx.dns.answering.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Self

from fakemx.addresses import host_port, listen_error
from fakemx.dns.answering import TOO_BIG, Decided, decide, parse, tcp_wire, udp_wire
from fakemx.dns.journal import DEFAULT_MAX_QUERIES, DnsJournal, Query
from fakemx.dns.model import Dns
from fakemx.dns.transports import TcpClient, TcpConnections, UdpProtocol
from fakemx.dns.zone import Answer, Zone
from fakemx.errors import FakeMXError, ListenError
from fakemx.fdbudget import FdBudget
from fakemx.listener import bind as bind_tcp
from fakemx.logs import Throttle
from fakemx.loopthread import ThreadMode
from fakemx.model import Profile
from fakemx.profiles import load_profile

if TYPE_CHECKING:  # cryptography costs start-up time: imported for a signed zone
    from fakemx.dns.dnssec import ZoneKeys, ZoneSigner

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


class DnsServer(ThreadMode):
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
        keys: what signs a zone with ``[dns.dnssec]`` (fakemx.dns.dnssec.ZoneKeys, kept
            in a state dir); keys for this server alone when left out.
        tlsa_digests: what TLSA values' digest names stand for (fakemx.dns.tlsa.digests).
    """

    thread_name = "fakemx-dns"  # ``with DnsServer(...)``: own loop in a thread, for sync code

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
        keys: ZoneKeys | None = None,
        tlsa_digests: Mapping[str, str] | None = None,
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
        self.zone = Zone(self.spec, usable, tlsa_digests or {})
        self.signer: ZoneSigner | None = None
        if self.spec.dnssec is not None:
            from fakemx.dns.dnssec import ZoneKeys, ZoneSigner

            self.signer = ZoneSigner(self.zone.origin, keys or ZoneKeys.generate(),
                                     self.spec.dnssec)
        problems = self.zone.problems()
        if problems:
            raise FakeMXError(f"cannot serve this zone: {problems[0]}")
        self.host = host
        self._port = port
        self._clock = clock
        self._started = 0.0
        self.journal = DnsJournal(max_queries)
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_refusing: socket.socket | None = None  # bound, never listening: SYN gets RST
        self._tcp = TcpConnections(self._answer_tcp, max_connections=max_tcp_connections,
                                   idle_seconds=tcp_idle_seconds, fds=fds, log=self._note)
        self._pending: set[asyncio.TimerHandle] = set()  # delayed replies not yet sent
        # What clients can make us log: one line per kind per 10 s, on this server's clock.
        self._throttle = Throttle(clock=clock)
        self._loop: asyncio.AbstractEventLoop | None = None

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
            self._tcp.close_all()
            await self._tcp_server.wait_closed()
            self._tcp_server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _bind_udp(self) -> asyncio.DatagramTransport:
        assert self._loop is not None
        try:
            transport, _ = await self._loop.create_datagram_endpoint(
                lambda: UdpProtocol(self._on_datagram), local_addr=(self.host, self._port)
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
        self._tcp_server = await asyncio.start_server(self._tcp.serve, sock=sock)

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
    def trust_anchor(self) -> str | None:
        """The DS a validating resolver must trust for a signed zone (zone-file form)."""
        return None if self.signer is None else self.signer.keys.trust_anchor(self.zone.origin)

    @property
    def max_tcp_connections(self) -> int:
        return self._tcp.max_connections

    @property
    def tcp_connections(self) -> int:
        """DNS-over-TCP connections open now (each holds a file descriptor)."""
        return len(self._tcp.clients)

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
        data, truncated = udp_wire(
            decided.response, decided.udp_limit, fault is not None and fault.truncate is not None
        )
        entry = dataclasses.replace(decided.entry, answer=(), truncated=True) \
            if truncated else decided.entry

        def send() -> None:
            if self._udp is not None:
                self._udp.sendto(data, peer)

        self._send(send, decided.answer, entry)

    def _answer_tcp(self, wire: bytes, peer: tuple[str, int], client: TcpClient) -> None:
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

    def _tcp_wire(self, decided: Decided) -> tuple[bytes, Query]:
        data, entry = tcp_wire(decided)
        if entry.fault == TOO_BIG:
            self._note(logging.WARNING, "fakemx dns: the answer to %s %s is over 65,535 "
                       "bytes, so SERVFAIL (shorten the zone's CNAME chain)",
                       decided.entry.name, decided.entry.type)
        return data, entry

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

    def _decide(self, wire: bytes, peer: tuple[str, int], transport: str) -> Decided | None:
        """What to answer to ``wire``; None (journaled) for garbage or a response."""
        client = f"{peer[0]}:{peer[1]}"
        query = parse(wire)
        if isinstance(query, str):
            self.journal.add(Query(time.time(), client, transport, "", "", "FORMERR",
                                   answered=False, fault=query))
            return None
        return decide(query, self.zone, self.elapsed_seconds(), client, transport, self.signer)

    def _note(self, level: int, template: str, *args: object, exc_info: bool = False) -> None:
        """Log, through this server's Throttle (fakemx.logs): the kind is the template."""
        if not log.isEnabledFor(level):
            return
        record = log.makeRecord(log.name, level, __file__, 0, template, args,
                                sys.exc_info() if exc_info else None)
        if self._throttle.filter(record):
            log.handle(record)

    # endregion


def _unanswered(entry: Query) -> Query:
    return dataclasses.replace(entry, answered=False)
