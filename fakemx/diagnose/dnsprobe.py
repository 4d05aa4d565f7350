"""The DNS steps: MX, then the addresses of the first MX host that has one (RFC 5321 5.1).

Each query goes to one server (``--resolver``, or the first of the system's) over
UDP, then TCP when the answer is truncated, bounded by ``Timeouts.dns_seconds``.
What a relay's resolver would turn into ``450 4.4.312`` becomes a FAIL step.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from fakemx.diagnose.model import Finding, Options, Severity, Step, is_address
from fakemx.errors import FakeMXError

MAX_CNAME_HOPS = 8  # a resolver gives up on longer chains as it does on loops


@dataclass(frozen=True)
class Address:
    host: str  # the name that led here (MX host, or the target itself)
    ip: str


@dataclass
class _Answer:
    """One name's records of one type, after CNAMEs, or why there are none."""

    records: list[str] = field(default_factory=list)
    ttl: int | None = None
    finding: Finding | None = None
    problem: str = ""
    seconds: float = 0.0
    chain: list[str] = field(default_factory=list)  # CNAMEs followed


class Lookup:
    """Questions to one DNS server, each bounded; CNAMEs followed and loops caught."""

    def __init__(self, options: Options) -> None:
        if options.resolver is not None:
            self.server, self.port = options.resolver
        else:
            try:
                system = dns.resolver.Resolver()  # reads /etc/resolv.conf
            except dns.resolver.NoResolverConfiguration:
                raise FakeMXError("no DNS server in /etc/resolv.conf (pass --resolver IP, e.g."
                                  " --resolver 1.1.1.1)") from None
            self.server, self.port = str(system.nameservers[0]), 53
        self.timeout = options.timeouts.dns_seconds
        self.slow = options.timeouts.slow_seconds

    @property
    def where(self) -> str:
        return f"{self.server}#{self.port}"

    def ask(self, name: str, rdtype: str) -> _Answer:
        answer = _Answer()
        started = time.monotonic()
        qname = dns.name.from_text(name)
        seen = {qname}
        for _ in range(MAX_CNAME_HOPS):
            response = self._query(qname, rdtype, answer)
            if response is None:
                break
            qname_next = self._read(response, qname, rdtype, answer, seen)
            if qname_next is None:
                break
            qname = qname_next
        else:
            answer.finding = Finding.DNS_CNAME_LOOP
            answer.problem = f"more than {MAX_CNAME_HOPS} CNAMEs"
        answer.seconds = time.monotonic() - started
        return answer

    def _query(self, qname: dns.name.Name, rdtype: str, answer: _Answer
               ) -> dns.message.Message | None:
        query = dns.message.make_query(qname, rdtype)
        try:
            response = dns.query.udp(query, self.server, port=self.port, timeout=self.timeout)
        except dns.exception.Timeout:
            answer.finding = Finding.DNS_TIMEOUT
            answer.problem = f"no answer within {self.timeout:g} s"
            return None
        except OSError as exc:
            answer.finding = Finding.DNS_TIMEOUT
            answer.problem = f"no answer: {exc.strerror or exc}"
            return None
        if response.flags & dns.flags.TC:  # RFC 7766: retry the question over TCP
            try:
                response = dns.query.tcp(query, self.server, port=self.port,
                                         timeout=self.timeout)
            except (OSError, EOFError, dns.exception.DNSException) as exc:
                reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else (
                    f"{type(exc).__name__}: {exc}")
                answer.finding = Finding.DNS_TRUNCATED_TCP_FAILED
                answer.problem = f"answer truncated over UDP, and TCP failed ({reason})"
                return None
        return response

    def _read(self, response: dns.message.Message, qname: dns.name.Name, rdtype: str,
              answer: _Answer, seen: set[dns.name.Name]) -> dns.name.Name | None:
        """Take the records for ``qname``; the next name to ask when it ends at a CNAME."""
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            finding = {dns.rcode.NXDOMAIN: Finding.DNS_NXDOMAIN,
                       dns.rcode.REFUSED: Finding.DNS_REFUSED}.get(rcode, Finding.DNS_SERVFAIL)
            answer.finding = finding
            answer.problem = dns.rcode.to_text(rcode)
            return None
        wanted = dns.rdatatype.from_text(rdtype)
        name = qname
        while True:  # walk the CNAME chain inside this answer
            rrset = response.get_rrset(response.answer, name, dns.rdataclass.IN, wanted)
            if rrset is not None:
                answer.records = [r.to_text() for r in rrset]
                answer.ttl = rrset.ttl
                return None
            cname = response.get_rrset(response.answer, name, dns.rdataclass.IN,
                                       dns.rdatatype.CNAME)
            if cname is None:
                return None if name == qname else name  # NODATA, or ask the chain's end
            target = cname[0].target
            answer.chain.append(f"{name} CNAME {target}")
            if target in seen:
                answer.finding = Finding.DNS_CNAME_LOOP
                answer.problem = "; ".join(answer.chain)
                return None
            seen.add(target)
            name = target


def resolve(options: Options) -> tuple[list[Step], list[Address]]:
    """The DNS steps and the addresses to try, in the order a relay would."""
    target = options.target
    if is_address(target.name):
        return [Step("dns", Severity.INFO, f"{target.name} is an address: no DNS lookup")], [
            Address(target.name, target.name)]
    if not target.mx_lookup and options.resolver is None:
        return _system_host(options)
    lookup = Lookup(options)
    steps: list[Step] = []
    if not target.mx_lookup:
        addresses = _addresses(lookup, target.name, steps)
        return steps, addresses
    mx = lookup.ask(target.name, "MX")
    if mx.finding is not None:
        steps.append(_failed(lookup, f"MX {target.name}", mx))
        return steps, []
    steps += _slow(lookup, mx, f"MX {target.name}")
    if not mx.records:
        steps.append(Step("dns", Severity.INFO,
                          f"MX {target.name}: none; the domain's own address is its implicit MX"
                          " (RFC 5321 5.1)", Finding.DNS_IMPLICIT_MX))
        return steps, _addresses(lookup, target.name, steps)
    hosts = sorted((int(pref), host) for pref, host in (r.split() for r in mx.records))
    if [host for _, host in hosts] == ["."]:
        steps.append(Step("dns", Severity.FAIL,
                          f"MX {target.name}: 0 . (null MX, RFC 7505): the domain accepts no mail",
                          Finding.DNS_NULL_MX, facts={"mx": mx.records}))
        return steps, []
    steps.append(Step("dns", Severity.OK,
                      f"MX {target.name}: {', '.join(f'{p} {h}' for p, h in hosts)}"
                      f" (TTL {mx.ttl} s, from {lookup.where})",
                      facts={"mx": mx.records, "ttl": mx.ttl}))
    for _, host in hosts:
        addresses = _addresses(lookup, host.rstrip(".") or ".", steps, of_mx=True)
        if addresses:
            return steps, addresses
    return steps, []


def _addresses(lookup: Lookup, host: str, steps: list[Step], of_mx: bool = False
               ) -> list[Address]:
    """A and AAAA of ``host``; an MX target that does not exist is a host with no address."""
    found: list[Address] = []
    failures: list[_Answer] = []
    for rdtype in ("A", "AAAA"):
        answer = lookup.ask(host, rdtype)
        if answer.finding is not None:
            failures.append(answer)
            continue
        steps += _slow(lookup, answer, f"{rdtype} {host}")
        found += [Address(host, ip) for ip in answer.records]
    if found:
        steps.append(Step("dns", Severity.OK,
                          f"address of {host}: {', '.join(a.ip for a in found)}",
                          facts={"host": host, "addresses": [a.ip for a in found]}))
    elif failures and not (of_mx and all(f.finding is Finding.DNS_NXDOMAIN for f in failures)):
        steps.append(_failed(lookup, f"address of {host}", failures[0]))
    else:
        problem = "NXDOMAIN" if failures else "no A or AAAA record"
        steps.append(Step("dns", Severity.FAIL, f"address of {host}: {problem}, so the mail"
                          " host has no address",
                          Finding.DNS_NO_ADDRESS, facts={"host": host}))
    return found


def _failed(lookup: Lookup, what: str, answer: _Answer) -> Step:
    return Step("dns", Severity.FAIL, f"{what}: {answer.problem} (from {lookup.where})",
                answer.finding, facts={"problem": answer.problem, "seconds": answer.seconds})


def _slow(lookup: Lookup, answer: _Answer, what: str) -> list[Step]:
    """A WARN step when the answer came, but later than ``slow_seconds``."""
    if answer.seconds <= lookup.slow:
        return []
    return [Step("dns", Severity.WARN,
                 f"{what}: answered after {answer.seconds:.1f} s, slower than"
                 f" {lookup.slow:g} s: a resolver that gives up sooner fails",
                 Finding.DNS_SLOW, facts={"seconds": answer.seconds})]


def _system_host(options: Options) -> tuple[list[Step], list[Address]]:
    """``--host NAME`` without ``--resolver``: the system's way (/etc/hosts, then DNS)."""
    name, port = options.target.name, options.target.port
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return [Step("dns", Severity.FAIL, f"address of {name}: {exc.strerror}",
                     Finding.DNS_NXDOMAIN if exc.errno == socket.EAI_NONAME
                     else Finding.DNS_SERVFAIL)], []
    ips = list(dict.fromkeys(str(info[4][0]) for info in infos))
    return [Step("dns", Severity.OK, f"address of {name}: {', '.join(ips)} (system resolver)",
                 facts={"addresses": ips})], [Address(name, ip) for ip in ips]
