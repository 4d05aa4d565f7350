"""fakemx's DNS server against real clients: dnspython's resolver, and dig.

Each 4.4.312 profile is asserted exactly: the exception a resolver raises,
the rcode and flags on the wire, a timeout when there is no answer. Every
test first proves the same client gets a good answer from the same server
(the positive control), so a failure comes from the profile, not the client.
"""

from __future__ import annotations

import os
import selectors
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from fakemx import FakeMX, ProfileError, profile_from_data
from fakemx.dns.model import Dns
from fakemx.dns.server import DnsServer
from fakemx.dns.zone import Answer, Zone

ROOT = Path(__file__).resolve().parent.parent
DOMAIN = "example.test"
TIMEOUT = 2.0  # every client call is bounded by this
DIG = "dig"


def resolver(server: DnsServer, lifetime: float = TIMEOUT) -> dns.resolver.Resolver:
    """A stub resolver that asks only fakemx, bounded in time."""
    stub = dns.resolver.Resolver(configure=False)
    stub.nameservers = [server.host]
    stub.port = server.port
    stub.timeout = stub.lifetime = lifetime
    return stub


def ask(server: DnsServer, name: str, rdtype: str, timeout: float = TIMEOUT) -> dns.message.Message:
    """One raw UDP question: the response exactly as sent, no resolver logic on top."""
    query = dns.message.make_query(name, rdtype)
    return dns.query.udp(query, server.host, port=server.port, timeout=timeout)


def dig(server: DnsServer, *args: str) -> subprocess.CompletedProcess[str]:
    """dig, a second real client: one try, one second."""
    return subprocess.run(
        [DIG, "+tries=1", "+time=1", "-p", str(server.port), f"@{server.host}", *args],
        capture_output=True, text=True, timeout=15, check=False,
    )


def control(server: DnsServer, name: str = f"mx.{DOMAIN}", rdtype: str = "A") -> None:
    """Positive control: the same resolver gets an answer from the same server."""
    assert resolver(server).resolve(name, rdtype).rrset is not None


needs_dig = pytest.mark.skipif(
    subprocess.run(["which", DIG], capture_output=True, check=False).returncode != 0,
    reason="dig is missing (Debian package bind9-dnsutils; scripts/test installs it)",
)


class FakeClock:
    """Injected time: tests jump ahead instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# region pure decisions: no sockets ----------------------------------------------


def zone_answer(spec: Dns, name: str, rdtype: str, elapsed: float = 0.0) -> Answer:
    return Zone(spec, "127.0.0.1").answer(
        dns.name.from_text(name), dns.rdatatype.from_text(rdtype), elapsed
    )


def test_zone_empty_non_terminal_is_nodata_not_nxdomain() -> None:
    record = {"name": "a.b.test", "type": "A", "value": "192.0.2.1"}
    spec = Dns.model_validate({"records": [record]})
    assert zone_answer(spec, "b.test", "A").rcode == dns.rcode.NOERROR  # RFC 8020
    assert zone_answer(spec, "c.test", "A").rcode == dns.rcode.NXDOMAIN
    assert zone_answer(spec, "a.b.test", "MX").rcode == dns.rcode.NOERROR
    assert zone_answer(spec, "test", "SOA").answer[0].rdtype == dns.rdatatype.SOA


def test_zone_cname_out_of_zone_stops_and_records_follow_their_window() -> None:
    spec = Dns.model_validate({"records": [
        {"name": "w.test", "type": "CNAME", "value": "www.example.org"},
        {"name": "t.test", "type": "A", "value": "192.0.2.1", "until_seconds": 5},
        {"name": "t.test", "type": "A", "value": "192.0.2.2", "from_seconds": 5},
    ]})
    out = zone_answer(spec, "w.test", "A")
    assert (out.rcode, len(out.answer)) == (dns.rcode.NOERROR, 1)
    assert [r.to_text() for r in zone_answer(spec, "t.test", "A", 4.9).answer[0]] == ["192.0.2.1"]
    assert [r.to_text() for r in zone_answer(spec, "t.test", "A", 5.0).answer[0]] == ["192.0.2.2"]


def test_profile_time_scale_reaches_the_dns_section() -> None:
    with FakeMX("4.4.312-slow", time_scale=0.01) as mx:
        assert mx.dns is not None
        assert mx.dns.spec.faults[0].delay_seconds == pytest.approx(0.3)
        assert mx.dns.spec.ttl == 3


# endregion
# region the healthy zone ---------------------------------------------------------


HEALTHY = Dns.model_validate({
    "records": [
        {"name": DOMAIN, "type": "MX", "value": f"10 mx.{DOMAIN}", "ttl": 120},
        {"name": f"mx.{DOMAIN}", "type": "A", "value": "{fakemx}"},
        {"name": f"mx.{DOMAIN}", "type": "AAAA", "value": "2001:db8::25"},
        {"name": DOMAIN, "type": "TXT", "value": "v=spf1 mx -all"},
        {"name": f"mail.{DOMAIN}", "type": "CNAME", "value": f"mx.{DOMAIN}"},
    ]
})


@pytest.fixture
def healthy() -> Iterator[DnsServer]:
    with DnsServer(HEALTHY) as server:
        yield server


def test_healthy_zone_answers_every_type(healthy: DnsServer) -> None:
    stub = resolver(healthy)
    mx = stub.resolve(DOMAIN, "MX")
    assert [(r.preference, r.exchange.to_text()) for r in mx] == [(10, f"mx.{DOMAIN}.")]
    assert mx.rrset is not None
    assert mx.rrset.ttl == 120
    assert [r.address for r in stub.resolve(f"mx.{DOMAIN}", "A")] == ["127.0.0.1"]
    assert [r.address for r in stub.resolve(f"mx.{DOMAIN}", "AAAA")] == ["2001:db8::25"]
    assert [r.strings for r in stub.resolve(DOMAIN, "TXT")] == [(b"v=spf1 mx -all",)]
    cname = stub.resolve(f"mail.{DOMAIN}", "A")
    assert cname.canonical_name.to_text() == f"mx.{DOMAIN}."
    # The journal: every question, its client and its answer.
    healthy.wait_for(5)
    first = healthy.queries[0]
    assert (first.name, first.type, first.rcode, first.transport) == (f"{DOMAIN}.", "MX",
                                                                       "NOERROR", "udp")
    assert first.answer == (f"{DOMAIN}. 120 IN MX 10 mx.{DOMAIN}.",)
    assert first.client.startswith("127.0.0.1:")


def test_healthy_zone_over_tcp_and_authoritative(healthy: DnsServer) -> None:
    query = dns.message.make_query(DOMAIN, "MX")
    response = dns.query.tcp(query, healthy.host, port=healthy.port, timeout=TIMEOUT)
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA
    assert len(response.answer) == 1
    assert healthy.queries[-1].transport == "tcp"


def test_names_outside_the_zone_are_refused(healthy: DnsServer) -> None:
    control(healthy)
    assert ask(healthy, "example.org", "MX").rcode() == dns.rcode.REFUSED


def test_large_answer_is_truncated_over_udp_and_whole_over_tcp() -> None:
    spf = "v=spf1 " + " ".join(f"ip4:192.0.2.{n}" for n in range(200)) + " -all"
    spec = Dns.model_validate({"records": [{"name": DOMAIN, "type": "TXT", "value": spf}]})
    with DnsServer(spec) as server:
        query = dns.message.make_query(DOMAIN, "TXT", use_edns=False)  # 512 bytes at most
        udp = dns.query.udp(query, server.host, port=server.port, timeout=TIMEOUT)
        assert udp.flags & dns.flags.TC
        assert udp.answer == []
        # The resolver retries over TCP, as RFC 7766 says, and gets it all.
        answer = resolver(server).resolve(DOMAIN, "TXT")
        assert b"".join(next(iter(answer)).strings) == spf.encode()
        assert [q.transport for q in server.queries][-1] == "tcp"


# endregion
# region one test per failure profile -------------------------------------------


def test_servfail() -> None:
    with DnsServer("4.4.312-servfail") as server:
        control(server)
        with pytest.raises(dns.resolver.NoNameservers, match="answered SERVFAIL"):
            resolver(server).resolve(DOMAIN, "MX")
        assert ask(server, DOMAIN, "MX").rcode() == dns.rcode.SERVFAIL
        assert server.queries[-1].fault == "SERVFAIL"


async def test_servfail_async_entry() -> None:
    async with DnsServer("4.4.312-servfail") as server:
        stub = dns.asyncresolver.Resolver(configure=False)
        stub.nameservers, stub.port, stub.lifetime = [server.host], server.port, TIMEOUT
        assert (await stub.resolve(DOMAIN, "TXT")).rrset is not None
        with pytest.raises(dns.resolver.NoNameservers, match="answered SERVFAIL"):
            await stub.resolve(DOMAIN, "MX")


def test_nxdomain_expired_domain() -> None:
    with DnsServer("4.4.312-nxdomain") as server:
        assert resolver(server).resolve("test", "SOA").rrset is not None  # the zone is served
        with pytest.raises(dns.resolver.NXDOMAIN):
            resolver(server).resolve(DOMAIN, "MX")
        response = ask(server, f"mx.{DOMAIN}", "A")
        assert response.rcode() == dns.rcode.NXDOMAIN
        # RFC 2308: the SOA rides along, so resolvers cache the NXDOMAIN.
        assert [rrset.rdtype for rrset in response.authority] == [dns.rdatatype.SOA]


def test_refused() -> None:
    with DnsServer("4.4.312-refused") as server:
        control(server)
        with pytest.raises(dns.resolver.NoNameservers, match="answered REFUSED"):
            resolver(server).resolve(DOMAIN, "MX")
        assert ask(server, DOMAIN, "TXT").rcode() == dns.rcode.REFUSED


def test_no_answer_times_out() -> None:
    with DnsServer("4.4.312-no-answer") as server:
        control(server)
        with pytest.raises(dns.resolver.LifetimeTimeout):
            resolver(server, lifetime=0.5).resolve(DOMAIN, "MX")
        with pytest.raises(dns.exception.Timeout):
            ask(server, DOMAIN, "MX", timeout=0.3)
        unanswered = [q for q in server.queries if q.type == "MX"]
        assert unanswered
        assert all(not q.answered and q.outcome == "no answer" for q in unanswered)


def test_slow_answer_arrives_after_the_resolver_gave_up() -> None:
    # 30 s in the profile, 1.5 s here: still three times the resolver's patience.
    with DnsServer("4.4.312-slow", time_scale=0.05) as server:
        control(server)
        with pytest.raises(dns.resolver.LifetimeTimeout):
            resolver(server, lifetime=0.5).resolve(DOMAIN, "MX")
        # A patient client gets the answer, but only after the delay.
        started = time.monotonic()
        response = ask(server, DOMAIN, "MX", timeout=5)
        assert time.monotonic() - started >= 1.5 - 0.1
        assert response.rcode() == dns.rcode.NOERROR
        assert len(response.answer) == 1
        assert server.queries[-1].answered
        assert server.queries[-1].fault == "delay 1.5s"


def test_no_mx_falls_back_to_the_a_record() -> None:
    """RFC 5321 5.1: no MX, so the domain's A record is the implicit MX; mail arrives."""
    with FakeMX("4.4.312-no-mx-implicit-a") as mx:
        assert mx.dns is not None
        stub = resolver(mx.dns)
        with pytest.raises(dns.resolver.NoAnswer):
            stub.resolve(DOMAIN, "MX")
        response = ask(mx.dns, DOMAIN, "MX")
        assert response.rcode() == dns.rcode.NOERROR  # NODATA: the name exists
        assert response.answer == []
        (address,) = [r.address for r in stub.resolve(DOMAIN, "A")]
        assert address == mx.host
        with smtplib.SMTP(address, mx.port, timeout=TIMEOUT) as client:
            client.sendmail("alice@sender.test", [f"bob@{DOMAIN}"], b"Subject: implicit\r\n\r\n.")
        mx.wait_for(messages=1)


def test_null_mx() -> None:
    """RFC 7505: ``MX 0 .`` says the domain accepts no mail."""
    with DnsServer("4.4.312-null-mx") as server:
        (record,) = resolver(server).resolve(DOMAIN, "MX")
        assert (record.preference, record.exchange) == (0, dns.name.root)


def test_mx_target_has_no_address() -> None:
    with DnsServer("4.4.312-mx-target-no-address") as server:
        (record,) = resolver(server).resolve(DOMAIN, "MX")
        assert record.exchange.to_text() == f"mx.{DOMAIN}."
        with pytest.raises(dns.resolver.NXDOMAIN):
            resolver(server).resolve(record.exchange, "A")
        with pytest.raises(dns.resolver.NXDOMAIN):
            resolver(server).resolve(record.exchange, "AAAA")


def test_cname_loop() -> None:
    with DnsServer("4.4.312-cname-loop") as server:
        with pytest.raises(dns.resolver.NoNameservers, match="CNAME chain is too long"):
            resolver(server).resolve(DOMAIN, "MX")
        response = ask(server, DOMAIN, "MX")
        chain = [(r.name.to_text(), next(iter(r)).to_text()) for r in response.answer]
        assert chain == [(f"{DOMAIN}.", f"alias.{DOMAIN}."), (f"alias.{DOMAIN}.", f"{DOMAIN}.")]


def test_truncated_answer_and_tcp_refused() -> None:
    with DnsServer("4.4.312-truncated-tcp-refused") as server:
        control(server)
        response = ask(server, DOMAIN, "MX")
        assert response.flags & dns.flags.TC
        assert response.answer == []
        with pytest.raises(ConnectionRefusedError):
            dns.query.tcp(dns.message.make_query(DOMAIN, "MX"), server.host,
                          port=server.port, timeout=TIMEOUT)
        # The resolver retries over TCP as it must (RFC 7766), and that fails too.
        with pytest.raises(dns.resolver.NoNameservers, match="Connection refused"):
            resolver(server).resolve(DOMAIN, "MX")
        assert server.queries[-1].truncated


def test_mx_changed_while_caches_hold_the_old_answer() -> None:
    """A caching resolver keeps the old MX for its TTL; fakemx's journal shows the mail
    arriving at the old server after the change."""
    clock = FakeClock()
    with FakeMX("4.4.312-mx-changed-stale-cache", clock=clock) as mx:
        assert mx.dns is not None
        cached = resolver(mx.dns)
        cached.cache = dns.resolver.Cache()

        def deliver() -> str:
            (mx_record,) = cached.resolve(DOMAIN, "MX")
            (a_record,) = cached.resolve(mx_record.exchange, "A")
            with smtplib.SMTP(a_record.address, mx.port, timeout=TIMEOUT) as client:
                client.sendmail("alice@sender.test", [f"bob@{DOMAIN}"], b"Subject: x\r\n\r\nhi")
            return str(mx_record.exchange)

        assert deliver() == f"old-mx.{DOMAIN}."
        clock.now += 61  # past the change (60 s); the old answer's TTL (3600 s) still runs
        fresh = resolver(mx.dns)
        (new,) = fresh.resolve(DOMAIN, "MX")
        assert new.exchange.to_text() == f"new-mx.{DOMAIN}."
        assert [r.address for r in fresh.resolve(new.exchange, "A")] == ["192.0.2.25"]
        assert deliver() == f"old-mx.{DOMAIN}."  # from the cache: the stale answer
        mx.wait_for(messages=2)
        # fakemx saw the MX asked twice only: the cached resolver never asked again.
        mx_answers = [q.answer for q in mx.dns.queries if q.type == "MX"]
        assert mx_answers == [(f"{DOMAIN}. 3600 IN MX 10 old-mx.{DOMAIN}.",),
                              (f"{DOMAIN}. 3600 IN MX 10 new-mx.{DOMAIN}.",)]
        assert len(mx.sessions) == 2  # both messages went to the old server


# endregion
# region dig, a second real client -------------------------------------------------


@needs_dig
@pytest.mark.parametrize(
    ("profile", "qtype", "expected"),
    [
        ("4.4.312-servfail", "MX", "status: SERVFAIL"),
        ("4.4.312-nxdomain", "MX", "status: NXDOMAIN"),
        ("4.4.312-refused", "MX", "status: REFUSED"),
        ("4.4.312-no-mx-implicit-a", "MX", "ANSWER: 0,"),
        ("4.4.312-null-mx", "MX", "IN\tMX\t0 ."),
        ("4.4.312-mx-target-no-address", "A", "status: NXDOMAIN"),
        ("4.4.312-cname-loop", "MX", "IN\tCNAME\talias.example.test."),
    ],
)
def test_dig_sees_the_failure(profile: str, qtype: str, expected: str) -> None:
    with DnsServer(profile) as server:
        name = f"mx.{DOMAIN}" if profile == "4.4.312-mx-target-no-address" else DOMAIN
        result = dig(server, name, qtype)
        assert result.returncode == 0, result.stderr
        assert "flags: qr aa rd ra" in result.stdout
        assert expected in result.stdout, result.stdout


@needs_dig
@pytest.mark.parametrize("profile", ["4.4.312-no-answer", "4.4.312-slow"])
def test_dig_times_out(profile: str) -> None:
    with DnsServer(profile) as server:
        assert dig(server, "TXT", DOMAIN).returncode == 0  # positive control
        result = dig(server, DOMAIN, "MX")
        assert result.returncode == 9, result  # dig: no reply from any server
        assert "timed out" in result.stdout


@needs_dig
def test_dig_retries_over_tcp_and_is_refused() -> None:
    with DnsServer("4.4.312-truncated-tcp-refused") as server:
        result = dig(server, DOMAIN, "MX")
        assert "Truncated, retrying in TCP mode" in result.stdout, result.stdout
        assert "connection refused" in result.stdout + result.stderr, result


@needs_dig
def test_dig_sees_the_mx_change_at_its_time() -> None:
    clock = FakeClock()
    with DnsServer("4.4.312-mx-changed-stale-cache", clock=clock) as server:
        assert dig(server, "+short", DOMAIN, "MX").stdout.strip() == f"10 old-mx.{DOMAIN}."
        clock.now += 60
        assert dig(server, "+short", DOMAIN, "MX").stdout.strip() == f"10 new-mx.{DOMAIN}."


def ready_line(process: subprocess.Popen[bytes], timeout: float) -> str:
    """The first line a process prints, or TimeoutError (raw reads, bounded by select)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    seen = b""
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while b"\n" not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(timeout=left):
                raise TimeoutError(f"no ready line in {timeout} s: {seen!r}")
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"exited before its ready line: {seen!r}")
            seen += chunk
    return seen.decode().splitlines()[0]


# endregion
# region profiles, FakeMX and the CLI --------------------------------------------


def test_fakemx_starts_and_stops_its_dns_server() -> None:
    with FakeMX("4.4.312-servfail") as mx:
        assert mx.dns is not None
        dns_server = mx.dns
        assert dns_server.host == mx.host
        assert dns_server.port > 0
        assert [r.address for r in resolver(dns_server).resolve(f"mx.{DOMAIN}", "A")] == [mx.host]
    with pytest.raises(dns.exception.Timeout):
        ask(dns_server, DOMAIN, "TXT", timeout=0.3)  # stopped: nobody answers
    with FakeMX() as sink:
        assert sink.dns is None  # no [dns] section, no DNS server


def test_time_scale_shortens_ttls_and_windows() -> None:
    with DnsServer("4.4.312-mx-changed-stale-cache", time_scale=0.01) as server:
        (record,) = resolver(server).resolve(DOMAIN, "MX")
        answer = resolver(server).resolve(DOMAIN, "MX")
        assert answer.rrset is not None
        assert answer.rrset.ttl == 36
        assert record.exchange.to_text() == f"old-mx.{DOMAIN}."
        assert server.spec.records[0].until_seconds == pytest.approx(0.6)


def test_bad_dns_section_is_one_line() -> None:
    data = {"dns": {"records": [{"name": DOMAIN, "type": "A", "value": "mx.example.test"}]}}
    with pytest.raises(ProfileError) as caught:
        profile_from_data(data, "t.toml")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("t.toml: dns.records[0]: A value 'mx.example.test' is not an IPv4")
    fault = {"dns": {"faults": [{"name": DOMAIN, "rcode": "SERVFAIL", "no_answer": True}]}}
    with pytest.raises(ProfileError, match=r"dns\.faults\[0\]: a DNS fault needs exactly one"):
        profile_from_data(fault, "t.toml")


@needs_dig
def test_cli_dns_serves_until_signalled() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "fakemx", "dns", "4.4.312-servfail", "--port", "0"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        line = ready_line(process, timeout=20)
        assert line.startswith("fakemx: DNS for 4.4.312-servfail on 127.0.0.1:"), line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        result = subprocess.run(
            [DIG, "+tries=1", "+time=1", "-p", str(port), "@127.0.0.1", DOMAIN, "MX"],
            capture_output=True, text=True, timeout=15, check=False,
        )
        assert "status: SERVFAIL" in result.stdout
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


# endregion
