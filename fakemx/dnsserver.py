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
import dataclasses
import errno
import os
import socket
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

from fakemx.dns_journal import DnsJournal, Query
from fakemx.dns_model import Dns
from fakemx.dns_zone import Answer, Zone
from fakemx.errors import FakeMXError, ListenError
from fakemx.listener import bind as bind_tcp
from fakemx.loopthread import LoopThread, start_in_thread, stop_thread
from fakemx.model import Profile
from fakemx.profiles import load_profile

# RFC 1035 4.2.1: without EDNS a UDP answer holds at most 512 bytes.
CLASSIC_UDP_BYTES = 512
# RFC 6891 6.2.5 / DNS flag day 2020: the EDNS buffer size we offer and honour at most.
EDNS_PAYLOAD_BYTES = 1232
# RFC 7766 6.2.3: a server may close an idle TCP connection; a few seconds is usual.
TCP_IDLE_SECONDS = 10.0
_BIND_ATTEMPTS = 20  # port 0: UDP picks the port, and TCP may find it taken; try another

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
    ) -> None:
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
        self.journal = DnsJournal()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tcp_refusing: socket.socket | None = None  # bound, never listening: SYN gets RST
        self._tcp_writers: set[asyncio.StreamWriter] = set()
        self._pending: set[asyncio.TimerHandle] = set()  # delayed replies not yet sent
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
            self._udp = None
        if self._tcp_refusing is not None:
            self._tcp_refusing.close()
            self._tcp_refusing = None
        if self._tcp_server is not None:
            self._tcp_server.close()
            for writer in list(self._tcp_writers):
                writer.close()
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
            where = self._where(self._port)
            fix = {
                errno.EADDRINUSE: "choose another --port, or --port 0 for a free one",
                errno.EACCES: "use a port above 1023, or grant CAP_NET_BIND_SERVICE",
                errno.EADDRNOTAVAIL: "use an address of this machine, e.g. 127.0.0.1",
            }.get(exc.errno or 0, "check --host")
            raise ListenError(f"cannot listen for DNS on {where}/udp: {exc.strerror} ({fix})") \
                from None
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
    def address(self) -> str:
        return self._where(self._port)

    @property
    def queries(self) -> list[Query]:
        """Every question so far (since the last ``reset()``), oldest first."""
        return self.journal.queries

    def wait_for(self, queries: int, *, name: str | None = None, timeout: float = 5.0) -> None:
        """Block until ``queries`` questions (for ``name``) arrived; TimeoutError if not."""
        if not self.journal.wait_for(queries, timeout, name):
            raise TimeoutError(
                f"fakemx dns: still {len(self.queries)} queries after {timeout:g} s"
            )

    def reset(self) -> None:
        """Forget the queries (the zone's clock keeps running)."""
        self.journal.clear()

    def elapsed_seconds(self) -> float:
        """Time since ``start()`` on the server's clock: what the records' windows compare."""
        return self._clock() - self._started

    def _where(self, port: int) -> str:
        return f"[{self.host}]:{port}" if ":" in self.host else f"{self.host}:{port}"

    # endregion
    # region answering ----------------------------------------------------------

    def _on_datagram(self, wire: bytes, peer: tuple[str, int]) -> None:
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
        self._tcp_writers.add(writer)
        peer = writer.get_extra_info("peername")
        try:
            while True:
                try:
                    # RFC 1035 4.2.2: each message is prefixed by its two-byte length.
                    length = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_SECONDS)
                    wire = await asyncio.wait_for(
                        reader.readexactly(int.from_bytes(length, "big")), TCP_IDLE_SECONDS
                    )
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return
                decided = self._decide(wire, peer, "tcp")
                if decided is None:
                    continue
                data = decided.response.to_wire(max_size=65535)
                framed = len(data).to_bytes(2, "big") + data

                def send(framed: bytes = framed) -> None:
                    if not writer.is_closing():
                        writer.write(framed)

                self._send(send, decided.answer, decided.entry)
        finally:
            self._tcp_writers.discard(writer)
            writer.close()

    def _send(self, send: Callable[[], None], answer: Answer, entry: Query) -> None:
        """Send now, later (a slow server) or never (a silent one); journal either way."""
        fault = answer.fault
        if fault is not None and fault.no_answer:
            self.journal.add(_unanswered(entry))
            return
        if fault is None or fault.delay_seconds is None:
            self.journal.add(entry)  # first: a client that has its answer finds it journaled
            send()
            return
        assert self._loop is not None
        pending = _unanswered(entry)
        self.journal.add(pending)

        def later() -> None:
            self._pending.discard(handle)
            self.journal.replace(pending, entry)
            send()

        handle = self._loop.call_later(fault.delay_seconds, later)
        self._pending.add(handle)

    def _decide(self, wire: bytes, peer: tuple[str, int], transport: str) -> _Decided | None:
        client = f"{peer[0]}:{peer[1]}"
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            # No trustworthy ID to answer to: a real server drops it too.
            self.journal.add(Query(time.time(), client, transport, "", "", "FORMERR",
                                   answered=False, fault="malformed query"))
            return None
        response = dns.message.make_response(
            query, recursion_available=True, our_payload=EDNS_PAYLOAD_BYTES
        )
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            response.set_rcode(dns.rcode.NOTIMP if query.question else dns.rcode.FORMERR)
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

    # endregion


@dataclasses.dataclass(frozen=True)
class _Decided:
    response: dns.message.Message
    answer: Answer
    entry: Query
    udp_limit: int  # the largest UDP answer this client takes


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: DnsServer) -> None:
        self._server = server

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


def _unanswered(entry: Query) -> Query:
    return dataclasses.replace(entry, answered=False)
