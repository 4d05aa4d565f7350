"""The answer to one DNS question, decided without sockets (pure, so unit-testable).

The server (fakemx.dnsserver) parses the query, asks ``answer()`` here, and
carries out what it says. The wire format is dnspython's; nothing here parses
bytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

from fakemx.dns.model import FAKEMX_ADDRESS, Dns, DnsFault, DnsRecord, normal_name
from fakemx.dns.tlsa import filled

# RFC 1034 3.6.2: a CNAME chain is followed in the answer section; a chain
# that comes back to a name it passed is a loop, and the answer stops there.


@dataclass(frozen=True)
class Answer:
    """What to send back: rcode and sections, or a fault the server carries out."""

    rcode: dns.rcode.Rcode
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    # no_answer, delay_seconds or truncate: how (or whether) the server sends it
    fault: DnsFault | None = None


@dataclass(frozen=True)
class Zone:
    """A ``Dns`` spec bound to the address of the SMTP server it points at.

    The records are indexed by name once, so a query costs the records at the
    names it touches, not a walk over every record in the zone.
    """

    spec: Dns
    fakemx_address: str = "127.0.0.1"
    # What TLSA values' digest names stand for (fakemx.dns.tlsa.digests).
    tlsa_digests: Mapping[str, str] = field(default_factory=dict)
    # Records owned by each name, and records at or below each name (RFC 8020).
    _at: dict[dns.name.Name, list[DnsRecord]] = field(init=False, repr=False, compare=False)
    _below: dict[dns.name.Name, list[DnsRecord]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        at: dict[dns.name.Name, list[DnsRecord]] = {}
        below: dict[dns.name.Name, list[DnsRecord]] = {}
        for record in self.spec.records:
            name = dns.name.from_text(normal_name(record.name))
            at.setdefault(name, []).append(record)
            while True:
                below.setdefault(name, []).append(record)
                if name == dns.name.root:
                    break
                name = name.parent()
        object.__setattr__(self, "_at", at)  # frozen: set once, here
        object.__setattr__(self, "_below", below)

    @property
    def origin(self) -> dns.name.Name:
        return dns.name.from_text(normal_name(self.spec.origin) or ".")

    def problems(self) -> list[str]:
        """Records that cannot go on the wire here, e.g. ``{fakemx}`` in an A record when
        fakemx listens on an IPv6 address. Checked at start, so no query finds them."""
        found = []
        for index, record in enumerate(self.spec.records):
            try:
                self._rdata(record)
            except (dns.exception.DNSException, ValueError) as exc:
                found.append(f"dns.records[{index}]: {record.type} {record.value!r} "
                             f"(with {{fakemx}} = {self.fakemx_address}): {exc}")
        return found

    def types_by_name(
        self, elapsed_seconds: float
    ) -> dict[dns.name.Name, set[dns.rdatatype.RdataType]]:
        """The types at each name in the zone that has records now (for NSEC)."""
        found: dict[dns.name.Name, set[dns.rdatatype.RdataType]] = {}
        for name, records in self._at.items():
            if name.is_subdomain(self.origin):
                types = {_type(r) for r in records if r.active(elapsed_seconds)}
                if types:
                    found[name] = types
        return found

    def answer(
        self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType, elapsed_seconds: float
    ) -> Answer:
        """The response to ``qname``/``qtype`` at ``elapsed_seconds`` after the server started."""
        type_text = dns.rdatatype.to_text(qtype)
        fault = self.spec.fault_for(qname.to_text(), type_text)
        if fault is not None and fault.rcode is not None:
            rcode = dns.rcode.from_text(fault.rcode)
            # An NXDOMAIN still names its zone's SOA, so resolvers cache it (RFC 2308 3).
            authority = [self._soa()] if rcode == dns.rcode.NXDOMAIN else []
            return Answer(rcode, authority=authority, fault=fault)
        result = self._lookup(qname, qtype, elapsed_seconds)
        return Answer(result.rcode, result.answer, result.authority, fault)

    def _lookup(
        self, qname: dns.name.Name, qtype: dns.rdatatype.RdataType, elapsed_seconds: float
    ) -> Answer:
        if not qname.is_subdomain(self.origin):
            return Answer(dns.rcode.REFUSED)  # not authoritative, not recursive for it
        answer: list[dns.rrset.RRset] = []
        name, seen = qname, {qname}
        while True:
            if qtype == dns.rdatatype.SOA and name == self.origin:
                answer.append(self._soa())
                return Answer(dns.rcode.NOERROR, answer)
            here = [r for r in self._at.get(name, ()) if r.active(elapsed_seconds)]
            wanted = [r for r in here if qtype == dns.rdatatype.ANY or _type(r) == qtype]
            if wanted:
                answer.extend(self._rrsets(name, wanted))
                return Answer(dns.rcode.NOERROR, answer)
            cname = next((r for r in here if r.type == "CNAME"), None)
            if cname is None:
                break
            answer.extend(self._rrsets(name, [cname]))
            target = dns.name.from_text(normal_name(cname.value.strip()))
            if target in seen or not target.is_subdomain(self.origin):
                # A loop (the chain ends at a name already in it), or a target
                # another server would answer: the answer stops here.
                return Answer(dns.rcode.NOERROR, answer)
            seen.add(target)
            name = target
        # RFC 8020: a name with records below it exists, even with none of its own.
        exists = name == self.origin or any(
            r.active(elapsed_seconds) for r in self._below.get(name, ())
        )
        # RFC 6604: the rcode is that of the last name in the chain.
        rcode = dns.rcode.NOERROR if exists else dns.rcode.NXDOMAIN
        return Answer(rcode, answer, [self._soa()])

    def _rrsets(self, name: dns.name.Name, records: list[DnsRecord]) -> list[dns.rrset.RRset]:
        """Records grouped into RRsets; one TTL per RRset, the lowest (RFC 2181 5.2)."""
        by_type: dict[dns.rdatatype.RdataType, list[DnsRecord]] = {}
        for record in records:
            by_type.setdefault(_type(record), []).append(record)
        rrsets = []
        for rdtype, group in by_type.items():
            ttl = min(self.spec.ttl if r.ttl is None else r.ttl for r in group)
            rrset = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
            for record in group:
                rrset.add(self._rdata(record), ttl)
            rrsets.append(rrset)
        return rrsets

    def _rdata(self, record: DnsRecord) -> dns.rdata.Rdata:
        value = record.value.strip()
        if value == FAKEMX_ADDRESS:
            value = self.fakemx_address
        if record.type == "TXT":
            # One <character-string> holds at most 255 bytes (RFC 1035 3.3.14).
            raw = value.encode()
            chunks = [raw[i:i + 255] for i in range(0, max(len(raw), 1), 255)]
            return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, chunks)
        if record.type in ("MX", "CNAME"):
            value = _absolute(value)
        elif record.type == "TLSA":
            value = filled(value, self.tlsa_digests)
        return dns.rdata.from_text(dns.rdataclass.IN, _type(record), value)

    def _soa(self) -> dns.rrset.RRset:
        origin = self.origin
        minimum = self.spec.negative_ttl
        rrset = dns.rrset.RRset(origin, dns.rdataclass.IN, dns.rdatatype.SOA)
        mname = dns.name.from_text("ns", origin)
        rname = dns.name.from_text("hostmaster", origin)
        text = f"{mname} {rname} 1 3600 600 86400 {minimum}"
        rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.SOA, text), minimum)
        return rrset


def _type(record: DnsRecord) -> dns.rdatatype.RdataType:
    return dns.rdatatype.from_text(record.type)


def _absolute(value: str) -> str:
    """Names in MX and CNAME values are absolute; ``0 .`` stays the root (RFC 7505)."""
    return value if value.endswith(".") else value + "."
