"""fakemx's DNS server against hostile clients (issue #12): none can stop, starve or exhaust it.

Real sockets only: dnspython queries and raw sockets on loopback. Each test
ends with the control that matters here: a fresh, good query over UDP and over
TCP still gets its answer. No fixed sleeps: waits poll a condition, bounded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import socket
import struct
import time
import timeit
from collections.abc import Callable, Iterator

import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.update
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fakemx import ProfileError, profile_from_data
from fakemx.dns.journal import DnsJournal, Query
from fakemx.dns.model import MAX_TTL, Dns
from fakemx.dns.server import DnsServer
from fakemx.dns.zone import Zone
from fakemx.errors import FakeMXError
from fakemx.fdbudget import FdBudget

DOMAIN = "example.test"
SLOW = f"slow.{DOMAIN}"
TIMEOUT = 2.0  # every client call is bounded by this
DELAY_SECONDS = 1.0  # the slow name's delay: far longer than the few queries sent meanwhile

ZONE = Dns.model_validate({
    "records": [
        {"name": DOMAIN, "type": "MX", "value": f"10 mx.{DOMAIN}"},
        {"name": f"mx.{DOMAIN}", "type": "A", "value": "{fakemx}"},
        {"name": DOMAIN, "type": "TXT", "value": "v=spf1 mx -all"},
        {"name": SLOW, "type": "A", "value": "192.0.2.7"},
    ],
    "faults": [{"name": SLOW, "delay_seconds": DELAY_SECONDS}],
})


def answered(server: DnsServer) -> None:
    """The control: a fresh query over UDP and one over TCP each get their answer."""
    query = dns.message.make_query(DOMAIN, "MX")
    for ask in (dns.query.udp, dns.query.tcp):
        response = ask(query, server.host, port=server.port, timeout=TIMEOUT)
        assert (response.rcode(), len(response.answer)) == (dns.rcode.NOERROR, 1), ask


def poll(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def framed(wire: bytes) -> bytes:
    """RFC 1035 4.2.2: a DNS message over TCP, after its two-byte length."""
    return len(wire).to_bytes(2, "big") + wire


def unframed(data: bytes) -> list[bytes]:
    """The messages in a TCP stream, each after its two-byte length."""
    messages = []
    while data:
        length = int.from_bytes(data[:2], "big")
        messages.append(data[2:2 + length])
        data = data[2 + length:]
    return messages


def connect(server: DnsServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=TIMEOUT)


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes (FIN or RST); bounded in time."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed this (idle) connection, without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


def send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send, unless the server already reset the connection (what is being tested)."""
    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
        sock.sendall(data)


@pytest.fixture
def server() -> Iterator[DnsServer]:
    with DnsServer(ZONE) as running:
        yield running


@pytest.fixture
def no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fails the test if anything reached asyncio's exception handler (it logs each)."""
    caplog.set_level(logging.INFO)
    yield
    # caplog.records here would be the teardown's only: ask for the test's own.
    errors = [r.getMessage() for r in caplog.get_records("call") if r.levelno >= logging.ERROR]
    assert errors == []


# region 1. the query log: bounded, and O(1) per query ------------------------------


def test_query_log_keeps_the_newest_and_a_late_reply_still_leaves() -> None:
    with DnsServer(ZONE, max_queries=5) as server:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as late:
            late.settimeout(DELAY_SECONDS + 5)
            slow = dns.message.make_query(SLOW, "A")
            late.sendto(slow.to_wire(), (server.host, server.port))
            server.wait_for(1, name=SLOW)
            txt = dns.message.make_query(DOMAIN, "TXT")
            for _ in range(20):
                dns.query.udp(txt, server.host, port=server.port, timeout=TIMEOUT)
            reply = dns.message.from_wire(late.recv(4096))
        assert (reply.id, len(reply.answer)) == (slow.id, 1)
        # The newest five: the late reply's entry had gone, and was not written over one.
        assert [q.type for q in server.queries] == ["TXT"] * 5
        server.wait_for(21)  # arrivals count beyond the kept ones
        answered(server)


def test_a_late_reply_costs_the_same_in_a_long_query_log() -> None:
    """A delayed reply updates its journal entry by index, not by scanning the journal.

    Before: 60,000 queries logged made each update walk all of them, and SMTP
    on the same loop stalled for seconds. Measured as a ratio, so a slow
    machine slows both sides alike.
    """

    def cost(kept: int) -> float:
        journal = DnsJournal(max_queries=kept)
        entry = Query(0.0, "127.0.0.1:53000", "udp", f"{DOMAIN}.", "MX", "NOERROR",
                      answered=False)
        tickets = [journal.add(entry) for _ in range(kept)][:100] * 20
        done = dataclasses.replace(entry, answered=True)
        return min(timeit.repeat(lambda: [journal.replace(t, done) for t in tickets],
                                 number=1, repeat=7))  # the least disturbed of seven

    assert cost(100_000) < 10 * cost(100)


def test_waiting_counts_arrivals_and_reset_starts_afresh() -> None:
    journal = DnsJournal(max_queries=3)
    for index in range(10):
        journal.add(Query(0.0, "127.0.0.1:1", "udp", f"n{index % 2}.test.", "A", "NOERROR"))
    assert len(journal.queries) == 3
    assert journal.wait_for(10, timeout=0)
    assert not journal.wait_for(11, timeout=0)
    assert journal.wait_for(2, timeout=0, name="n1.test")  # of the kept: n1, n0, n1
    journal.clear()
    assert (journal.queries, journal.arrived) == ([], 0)
    assert not journal.wait_for(1, timeout=0, name="n1.test")


# endregion
# region 2. DNS over TCP: capped, and idle connections closed -------------------------


def test_tcp_connections_over_the_cap_close_idle_ones_and_queries_still_get_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    cap = 8
    with DnsServer(ZONE, max_tcp_connections=cap, tcp_idle_seconds=60) as server:
        sockets = []
        try:
            for _ in range(3 * cap):
                sockets.append(connect(server))
                assert server.tcp_connections <= cap
            poll(lambda: server.tcp_connections == cap)
            closed: set[socket.socket] = set()

            def all_closed() -> bool:
                closed.update(s for s in sockets if s not in closed and closed_by_server(s))
                return len(closed) == 2 * cap

            poll(all_closed)
            assert closed == set(sockets[:2 * cap])  # the longest idle went first
            answered(server)  # its TCP query closed one more idle connection for room
            assert server.tcp_connections <= cap
        finally:
            for sock in sockets:
                sock.close()
    # A flood is one line (per 10 s), not one per connection.
    lines = [r for r in caplog.records if "max_tcp_connections" in r.getMessage()]
    assert len(lines) == 1


def test_a_connection_owed_a_reply_stays_and_a_new_one_over_the_cap_is_closed() -> None:
    with DnsServer(ZONE, max_tcp_connections=1, tcp_idle_seconds=0.2) as server, \
            connect(server) as owed:
        slow = dns.message.make_query(SLOW, "A")
        owed.sendall(framed(slow.to_wire()))
        server.wait_for(1, name=SLOW)
        with connect(server) as extra:
            send_quietly(extra, framed(dns.message.make_query(DOMAIN, "MX").to_wire()))
            assert read_until_closed(extra) == b""  # no idle one to close: closed itself
        assert server.tcp_connections == 1
        udp = dns.query.udp(dns.message.make_query(DOMAIN, "MX"), server.host,
                            port=server.port, timeout=TIMEOUT)
        assert udp.rcode() == dns.rcode.NOERROR
        # Idle for longer than tcp_idle_seconds, but owed a reply: kept until it leaves.
        (data,) = unframed(read_until_closed(owed, timeout=DELAY_SECONDS + 5))
        reply = dns.message.from_wire(data)
        assert (reply.id, len(reply.answer)) == (slow.id, 1)
        poll(lambda: server.tcp_connections == 0)  # then idle, and closed
        answered(server)


def test_tcp_connections_count_in_the_process_descriptor_budget() -> None:
    budget = FdBudget(3)
    with DnsServer(ZONE, max_tcp_connections=2, fds=budget) as server:
        held = [connect(server) for _ in range(2)]
        poll(lambda: server.tcp_connections == 2)
        assert budget.in_use == 2
        answered(server)  # closed one idle connection for room, then left itself
        poll(lambda: server.tcp_connections == 1)
        assert budget.in_use == 1  # each gave its descriptor back
        budget.in_use = budget.limit  # SMTP took the rest
        with connect(server) as extra:
            assert read_until_closed(extra) == b""
        for sock in held:
            sock.close()
        poll(lambda: server.tcp_connections == 0)
        assert budget.in_use == budget.limit - 1


@pytest.mark.parametrize(
    "sent",
    [b"", b"\x00", b"\x00\x30" + bytes(5)],
    ids=["silent", "half a length", "half a message"],
)
def test_idle_tcp_connections_are_closed(sent: bytes) -> None:
    with DnsServer(ZONE, tcp_idle_seconds=0.2) as server, connect(server) as sock:
        sock.sendall(sent)
        assert read_until_closed(sock) == b""
        poll(lambda: server.tcp_connections == 0)
        answered(server)


# endregion
# region 3. the model: nothing loads that cannot go on the wire ---------------------


def dns_error(dns_section: dict[str, object]) -> str:
    with pytest.raises(ProfileError) as caught:
        profile_from_data({"dns": dns_section}, "t.toml")
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_record_too_big_for_the_wire_is_one_line_at_load() -> None:
    huge = {"name": DOMAIN, "type": "TXT", "value": "x" * 70_000}
    assert dns_error({"records": [huge]}).startswith(
        "t.toml: dns.records[0]: TXT value is 70,275 bytes on the wire, over the 65,535"
    )
    half = {"name": DOMAIN, "type": "TXT", "value": "x" * 40_000}
    message = dns_error({"records": [half, {**half, "name": DOMAIN.upper()}]})
    assert message.startswith("t.toml: dns.records: the records at 'example.test' "
                              "(records[0], records[1]) take 80,")
    assert "shorten or remove some" in message


def test_long_txt_values_are_split_and_the_largest_accepted_fits() -> None:
    """A TXT value over 255 bytes goes out as several strings (RFC 1035 3.3.14), and the
    size check is tight: the largest value accepted is within a few bytes of the limit."""
    def load(length: int) -> Dns | None:
        try:
            return Dns.model_validate(
                {"records": [{"name": DOMAIN, "type": "TXT", "value": "x" * length}]})
        except ValidationError:
            return None

    low, high = 0, 70_000  # the largest length that loads, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if load(middle) else (low, middle - 1)
    spec = load(low)
    assert spec is not None
    with DnsServer(spec) as server:
        query = dns.message.make_query(DOMAIN, "TXT")
        response = dns.query.tcp(query, server.host, port=server.port, timeout=TIMEOUT)
        (txt,) = response.answer[0]
        assert [len(s) for s in txt.strings][:2] == [255, 255]
        assert b"".join(txt.strings) == b"x" * low
        assert len(response.to_wire()) > 65_535 - 32


@pytest.mark.parametrize(
    ("where", "field"),
    [("records", "from_seconds"), ("records", "until_seconds"), ("faults", "delay_seconds")],
)
@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_durations_must_be_finite(where: str, field: str, value: float) -> None:
    item: dict[str, object] = {"name": DOMAIN, field: value}
    if where == "records":
        item.update(type="A", value="192.0.2.1")
    assert dns_error({where: [item]}).startswith(
        f"t.toml: dns.{where}[0].{field}: Input should be a finite number"
    )


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"name": "a" * 64 + ".test", "type": "A", "value": "192.0.2.1"},
         "dns.records[0].name: name 'aaaa"),
        ({"name": "a..test", "type": "A", "value": "192.0.2.1"},
         "dns.records[0].name: name 'a..test' has an empty label; remove the doubled dot"),
        ({"name": DOMAIN, "type": "MX", "value": "10 " + ".".join(["m" * 60] * 5)},
         "dns.records[0]: MX target 'mmmm"),
        ({"name": DOMAIN, "type": "CNAME", "value": "x" * 70 + ".test"},
         "dns.records[0]: CNAME target 'xxxx"),
    ],
    ids=["label over 63", "empty label", "MX target over 255", "CNAME target label"],
)
def test_names_that_cannot_go_on_the_wire_are_refused_at_load(
    record: dict[str, object], problem: str
) -> None:
    assert dns_error({"records": [record]}).startswith(f"t.toml: {problem}")


def test_time_scale_must_be_finite_and_ttls_stay_in_range() -> None:
    with pytest.raises(FakeMXError, match="time_scale must be a finite number above 0"):
        DnsServer(ZONE, time_scale=math.inf)
    # 300 s x 1e9 is past 32 bits: before, every answer raised while being built.
    with DnsServer(ZONE, time_scale=1e9) as server:
        response = dns.query.udp(dns.message.make_query(DOMAIN, "MX"), server.host,
                                 port=server.port, timeout=TIMEOUT)
        assert response.answer[0].ttl == MAX_TTL


LABELS = st.sampled_from(["a", "b", "mx", "x" * 63, "y" * 64, "", "bücher", "xn--a"])
NAMES = st.lists(LABELS, min_size=0, max_size=6).map(lambda labels: ".".join([*labels, "test"]))
RECORDS = st.one_of(
    st.builds(lambda n, size: {"name": n, "type": "TXT", "value": "t" * size},
              NAMES, st.sampled_from([0, 1, 255, 256, 30_000, 65_200, 65_600])),
    st.builds(lambda n, target: {"name": n, "type": "MX", "value": f"10 {target}"},
              NAMES, NAMES),
    st.builds(lambda n, target: {"name": n, "type": "CNAME", "value": target}, NAMES, NAMES),
    st.builds(lambda n: {"name": n, "type": "AAAA", "value": "2001:db8::1"}, NAMES),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(RECORDS, min_size=1, max_size=4))
def test_whatever_loads_can_be_answered_on_the_wire(records: list[dict[str, str]]) -> None:
    """The validators' promise: a zone that loads never fails a query as it is built."""
    try:
        spec = Dns.model_validate({"records": records})
    except ValidationError:
        return
    zone = Zone(spec)
    assert zone.problems() == []
    for record in spec.records:
        qname = dns.name.from_text(record.name.rstrip(".") + ".")
        for qtype in (dns.rdatatype.from_text(record.type), dns.rdatatype.ANY):
            answer = zone.answer(qname, qtype, 0.0)
            if len({rrset.name for rrset in answer.answer}) > 1:
                continue  # a CNAME chain across names: the server's SERVFAIL guard's case
            response = dns.message.make_response(dns.message.make_query(qname, qtype))
            response.answer, response.authority = answer.answer, answer.authority
            response.to_wire(max_size=65_535)


# endregion
# region 4. garbage never raises, never floods the log ------------------------------


def header(*, flags: int = 0x0100, questions: int = 1, ident: int = 0x1234) -> bytes:
    """RFC 1035 4.1.1: ID, flags (0x0100: a query, RD), QD/AN/NS/AR counts."""
    return struct.pack("!6H", ident, flags, questions, 0, 0, 0)


QUESTION = dns.name.from_text(DOMAIN).to_wire() + struct.pack("!HH", 15, 1)  # MX IN


def tsig_signed() -> bytes:
    query = dns.message.make_query(DOMAIN, "MX")
    query.use_tsig(dns.tsigkeyring.from_text({"stranger.": "c2VjcmV0"}),
                   algorithm=dns.tsig.HMAC_SHA256)
    return query.to_wire()


# (what, datagram, the rcode of the reply, or None: dropped)
DATAGRAMS = [
    ("empty", b"", None),
    ("one byte", b"\x00", None),
    ("no question", header(questions=0), "FORMERR"),
    ("two questions", header(questions=2) + QUESTION + QUESTION, "FORMERR"),
    ("fewer questions than counted", header(questions=65535) + QUESTION, None),
    ("a response, not a query", header(flags=0x8180) + QUESTION, None),
    ("opcode STATUS", header(flags=2 << 11) + QUESTION, "NOTIMP"),
    ("opcode UPDATE", dns.update.UpdateMessage(DOMAIN).to_wire(), "NOTIMP"),
    ("UPDATE with a zone not SOA", header(flags=5 << 11) + QUESTION, None),
    ("compression loop", header() + b"\xc0\x0c" + QUESTION[-4:], None),
    ("label past the end", header() + b"\x3fabc", None),
    ("trailing junk", header() + QUESTION + b"junk", None),
    ("64 kB of zeros", bytes(65_000), None),
    ("TSIG with an unknown key", tsig_signed(), None),
    ("EDNS payload 0", dns.message.make_query(DOMAIN, "MX", use_edns=0, payload=0).to_wire(),
     "NOERROR"),
    ("AXFR over UDP", dns.message.make_query(DOMAIN, "AXFR").to_wire(), "NOERROR"),
]


@pytest.mark.usefixtures("no_errors")
@pytest.mark.parametrize(("datagram", "rcode"), [d[1:] for d in DATAGRAMS],
                         ids=[d[0] for d in DATAGRAMS])
def test_garbage_datagram(server: DnsServer, datagram: bytes, rcode: str | None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(datagram, (server.host, server.port))
        answered(server)  # after the garbage, on the same loop: any reply to it left first
        sock.setblocking(False)
        if rcode is None:
            with pytest.raises(BlockingIOError):
                sock.recv(65536)
        else:
            assert dns.rcode.to_text(dns.message.from_wire(sock.recv(65536)).rcode()) == rcode


# (what, the bytes a client sends and then half-closes)
STREAMS = [
    ("connect and leave", b""),
    ("half a length", b"\x00"),
    ("zero length", b"\x00\x00"),
    ("a length with less behind it", b"\xff\xff" + bytes(10)),
    ("garbage message", framed(b"\x01\x02\x03")),
    ("a response", framed(header(flags=0x8180) + QUESTION)),
    ("the 64 kB of zeros", framed(bytes(65_535))),
]


@pytest.mark.usefixtures("no_errors")
@pytest.mark.parametrize("stream", [s[1] for s in STREAMS], ids=[s[0] for s in STREAMS])
def test_garbage_tcp_stream(server: DnsServer, stream: bytes) -> None:
    with connect(server) as sock:
        sock.sendall(stream)
        sock.shutdown(socket.SHUT_WR)
        assert read_until_closed(sock) == b""  # nothing to answer, and the server hung up
    answered(server)


@pytest.mark.usefixtures("no_errors")
def test_a_tcp_stream_stays_in_step_after_garbage(server: DnsServer) -> None:
    good = dns.message.make_query(DOMAIN, "MX")
    garbage = [b"", b"\x01\x02\x03", header(flags=0x8180) + QUESTION, header(questions=0)]
    with connect(server) as sock:
        sock.sendall(b"".join(framed(g) for g in garbage) + framed(good.to_wire()))
        sock.shutdown(socket.SHUT_WR)
        first, last = unframed(read_until_closed(sock))
    assert dns.message.from_wire(first).rcode() == dns.rcode.FORMERR  # the empty question
    reply = dns.message.from_wire(last)
    assert (reply.id, reply.rcode(), len(reply.answer)) == (good.id, dns.rcode.NOERROR, 1)
    assert [q.fault for q in server.queries[-5:-2]] == [
        "malformed query", "malformed query", "a response, not a query"]


def test_an_answer_too_big_for_tcp_is_servfail_and_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A CNAME chain can outgrow 65,535 bytes across names; SERVFAIL, not an exception."""
    def name(index: int) -> str:
        return ".".join(f"{part}{index:03d}" + part * 56 for part in "abcd") + ".test"

    chain = [{"name": name(i), "type": "CNAME", "value": name(i + 1)} for i in range(270)]
    spec = Dns.model_validate({"records": [*chain, {"name": name(270), "type": "A",
                                                    "value": "192.0.2.1"}]})
    caplog.set_level(logging.INFO)
    with DnsServer(spec) as server:
        for _ in range(3):
            response = dns.query.tcp(dns.message.make_query(name(0), "A"), server.host,
                                     port=server.port, timeout=TIMEOUT)
            assert response.rcode() == dns.rcode.SERVFAIL
        assert server.queries[-1].fault == "answer too big"
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1
    assert "over 65,535 bytes" in lines[0]


class _Errors(logging.Handler):
    """Collects ERROR lines from any thread (hypothesis runs outside pytest's caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[DnsServer, _Errors]]:
    errors = _Errors()
    logging.getLogger().addHandler(errors)
    try:
        with DnsServer(ZONE) as running:
            yield running, errors
    finally:
        logging.getLogger().removeHandler(errors)


GOOD = dns.message.make_query(DOMAIN, "MX", use_edns=0).to_wire()


@st.composite
def mangled(draw: st.DrawFn) -> bytes:
    """A good query with a few bytes changed, cut or added: past the first checks."""
    wire = bytearray(GOOD)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(wire)))
        kind = draw(st.sampled_from(["set", "cut", "add"]))
        if kind == "set" and at < len(wire):
            wire[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del wire[at:]
        else:
            wire[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(wire)


@st.composite
def reheaded(draw: st.DrawFn) -> bytes:
    """A good query under other flags (QR, opcode, rcode, ...) or other section counts."""
    flags, *counts = struct.unpack("!5H", GOOD[2:12])
    if draw(st.booleans()):
        flags = draw(st.integers(0, 0xFFFF))
    else:
        counts = draw(st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4))
    return GOOD[:2] + struct.pack("!5H", flags, *counts) + GOOD[12:]


@settings(max_examples=200, deadline=None)
@given(st.one_of(mangled(), reheaded(), st.binary(max_size=600)))
def test_any_datagram_leaves_the_server_answering(
    shared: tuple[DnsServer, _Errors], datagram: bytes
) -> None:
    server, errors = shared
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(datagram, (server.host, server.port))
    response = dns.query.udp(dns.message.make_query(DOMAIN, "MX"), server.host,
                             port=server.port, timeout=TIMEOUT)
    assert response.rcode() == dns.rcode.NOERROR
    assert errors.lines == []


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(mangled().map(framed), reheaded().map(framed),
                          st.binary(max_size=40)), max_size=4))
def test_any_tcp_stream_leaves_the_server_answering(
    shared: tuple[DnsServer, _Errors], chunks: list[bytes]
) -> None:
    server, errors = shared
    with connect(server) as sock:
        sock.sendall(b"".join(chunks))
        sock.shutdown(socket.SHUT_WR)
        read_until_closed(sock)
    answered(server)
    assert errors.lines == []


# endregion
