"""DNSSEC for the DANE check: answers judged secure, insecure or bogus (RFC 4035 5).

Two honest ways, as the probe's options allow:

- ``--trust-anchor FILE`` (a DS in zone-file form, e.g. fakemx's
  ``STATE_DIR/dnssec-anchor.ds``): the probe validates itself with dnspython.
  Each signed answer's RRSIG is checked against its signer's DNSKEY set, whose
  own RRSIG and DS are checked up to the anchor; an unsigned answer is insecure
  only where a signed NSEC proves a delegation without DS, else it is bogus.
  Denials (NODATA, NXDOMAIN) count as secure when their NSEC records' signatures
  validate (whether each NSEC covers the name is not checked).
- without it: the resolver's word. The query sets DO and AD (RFC 6840 5.7); an
  answer with AD is secure, SERVFAIL is what a validating resolver says for
  bogus, anything else insecure (or the resolver does not validate).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DS
import dns.rrset

from fakemx.diagnose import rrsig
from fakemx.errors import FakeMXError

IN = dns.rdataclass.IN


class Security(StrEnum):
    SECURE = "secure"
    INSECURE = "insecure"
    BOGUS = "bogus"  # signatures fail, a broken chain, or the resolver's SERVFAIL


@dataclass(frozen=True)
class Judged:
    """One question's answer and how far it can be trusted; ``why`` when not secure."""

    security: Security
    records: list[str] = field(default_factory=list)
    rcode: str = "NOERROR"
    why: str = ""
    kind: str = ""  # bogus: expired, not_yet_valid, bad_signature, ds_mismatch, unsigned, servfail


def read_anchor(path: Path) -> dns.rrset.RRset:
    """The DS records of a trust-anchor file (``NAME [TTL] IN DS ...`` lines)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise FakeMXError(f"--trust-anchor {path}: cannot read: {exc.strerror or exc} (give"
                          " the DS file, e.g. STATE_DIR/dnssec-anchor.ds)") from None
    found: dns.rrset.RRset | None = None
    for line in lines:
        tokens = line.split(";")[0].split()
        if "DS" not in tokens:
            continue
        at = tokens.index("DS")
        try:
            name = dns.name.from_text(tokens[0])
            ds = dns.rdata.from_text(IN, dns.rdatatype.DS, " ".join(tokens[at + 1:]))
        except (dns.exception.DNSException, ValueError):
            continue
        if found is None:
            found = dns.rrset.RRset(name, IN, dns.rdatatype.DS)
        if name == found.name:
            found.add(ds)
    if found is None:
        raise FakeMXError(f"--trust-anchor {path}: no DS record in it (a line such as"
                          " 'test. IN DS 12345 13 2 ABCD...', from `fakemx dns PROFILE"
                          " --trust-anchor`)")
    return found


class Validator:
    """Asks one server with DO set; judges each answer (see the module's docstring)."""

    def __init__(self, server: str, port: int, timeout: float,
                 anchor: dns.rrset.RRset | None) -> None:
        self.server, self.port, self.timeout = server, port, timeout
        self.anchor = anchor

    def ask(self, name: str, rdtype: str) -> Judged:
        return self._judge(dns.name.from_text(name), dns.rdatatype.from_text(rdtype))

    def _query(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType
               ) -> dns.message.Message:
        query = dns.message.make_query(qname, rdtype, want_dnssec=True)
        query.flags |= dns.flags.AD
        response = dns.query.udp(query, self.server, port=self.port, timeout=self.timeout)
        if response.flags & dns.flags.TC:
            response = dns.query.tcp(query, self.server, port=self.port, timeout=self.timeout)
        return response

    @functools.cache  # noqa: B019 (one Validator per probe: the cache ends with it)
    def _judge(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> Judged:
        try:
            response = self._query(qname, rdtype)
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            return Judged(Security.BOGUS, why=f"no answer: {exc}", kind="servfail",
                          rcode="TIMEOUT")
        rcode = dns.rcode.to_text(response.rcode())
        if response.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return Judged(Security.BOGUS, rcode=rcode, kind="servfail",
                          why=f"{rcode} (a validating resolver's answer for bogus data)")
        rrset = response.get_rrset(response.answer, qname, IN, rdtype)
        records = [r.to_text() for r in rrset] if rrset is not None else []
        if self.anchor is None:
            if response.flags & dns.flags.AD:
                return Judged(Security.SECURE, records, rcode)
            return Judged(Security.INSECURE, records, rcode,
                          why="the resolver did not set AD (insecure, or it does not validate:"
                              " give --trust-anchor)")
        if not qname.is_subdomain(self.anchor.name):
            return Judged(Security.INSECURE, records, rcode,
                          why=f"no trust anchor covers {qname}")
        if rrset is not None:
            sigs = response.get_rrset(response.answer, qname, IN, dns.rdatatype.RRSIG, rdtype)
            if sigs is None:
                return self._unsigned(qname, rdtype, records, rcode)
            return self._verified(rrset, sigs, records, rcode)
        return self._denial(response, qname, rdtype, rcode)

    def _verified(self, rrset: dns.rrset.RRset, sigs: dns.rrset.RRset, records: list[str],
                  rcode: str) -> Judged:
        signer = sigs[0].signer
        above = signer != rrset.name if rrset.rdtype == dns.rdatatype.DS else True
        if not (rrset.name.is_subdomain(signer) and above and self.anchor_name is not None
                and signer.is_subdomain(self.anchor_name)):  # also: no loop through a signer
            return Judged(Security.BOGUS, records, rcode, kind="bad_signature",
                          why=f"{rrset.name} is signed by {signer}, not a zone above it")
        keys = self._keys(signer)
        if keys.security is not Security.SECURE:
            return Judged(keys.security, records, rcode, keys.why, keys.kind)
        dnskeys = dns.rrset.from_text_list(signer, 0, IN, dns.rdatatype.DNSKEY, keys.records)
        return self._check(rrset, sigs, dnskeys, records, rcode)

    def _check(self, rrset: dns.rrset.RRset, sigs: dns.rrset.RRset, dnskeys: dns.rrset.RRset,
               records: list[str], rcode: str) -> Judged:
        """Any one RRSIG that verifies makes it secure; else the first one's reason."""
        reasons = []
        for sig in sigs:
            try:
                rrsig.verify(rrset, sig, dnskeys)
            except rrsig.Failure as exc:
                reasons.append(str(exc))
                continue
            return Judged(Security.SECURE, records, rcode)
        kind = {"expired": "expired", "not yet valid": "not_yet_valid"}.get(
            reasons[0] if reasons else "", "bad_signature")
        return Judged(Security.BOGUS, records, rcode, kind=kind,
                      why=f"the RRSIG of {rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}"
                          f" does not validate: {', '.join(dict.fromkeys(reasons))}")

    def _keys(self, zone: dns.name.Name) -> Judged:
        """The zone's DNSKEY set, if its DS (the anchor's, or the parent's) names one of them."""
        if zone == self.anchor_name:
            ds_records = [r.to_text() for r in self.anchor or ()]
        else:
            ds = self._judge(zone, dns.rdatatype.DS)
            if ds.security is not Security.SECURE:
                return ds
            if not ds.records:
                return Judged(Security.INSECURE, why=f"no DS for {zone} at its parent (proven"
                              " by NSEC): the zone is not in the chain of trust")
            ds_records = ds.records
        try:
            response = self._query(zone, dns.rdatatype.DNSKEY)
        except (OSError, EOFError, dns.exception.DNSException) as exc:
            return Judged(Security.BOGUS, why=f"DNSKEY {zone}: no answer: {exc}",
                          kind="servfail")
        dnskeys = response.get_rrset(response.answer, zone, IN, dns.rdatatype.DNSKEY)
        sigs = response.get_rrset(response.answer, zone, IN, dns.rdatatype.RRSIG,
                                  dns.rdatatype.DNSKEY)
        if dnskeys is None or sigs is None:
            return Judged(Security.BOGUS, kind="unsigned", why=f"{zone} has a DS at its"
                          " parent but answers unsigned (no signed DNSKEY)")
        wanted = {r.lower() for r in ds_records}
        if not any(dns.dnssec.make_ds(zone, key, ds.digest_type).to_text().lower() in wanted
                   for key in dnskeys for ds in self._ds_rdatas(ds_records)):
            return Judged(Security.BOGUS, kind="ds_mismatch", why=f"the DS for {zone} names"
                          " no key of the zone (broken chain of trust)")
        return self._check(dnskeys, sigs, dnskeys, [r.to_text() for r in dnskeys], "NOERROR")

    @property
    def anchor_name(self) -> dns.name.Name | None:
        return self.anchor.name if self.anchor is not None else None

    @staticmethod
    def _ds_rdatas(texts: list[str]) -> list[dns.rdtypes.ANY.DS.DS]:
        found = [dns.rdata.from_text(IN, dns.rdatatype.DS, text) for text in texts]
        return [ds for ds in found if isinstance(ds, dns.rdtypes.ANY.DS.DS)]

    def _denial(self, response: dns.message.Message, qname: dns.name.Name,
                rdtype: dns.rdatatype.RdataType, rcode: str) -> Judged:
        """No records: secure when the NSEC records that deny them validate."""
        nsecs = [r for r in response.authority if r.rdtype == dns.rdatatype.NSEC]
        if not nsecs:
            return self._unsigned(qname, rdtype, [], rcode)
        for nsec in nsecs:
            sigs = response.get_rrset(response.authority, nsec.name, IN, dns.rdatatype.RRSIG,
                                      dns.rdatatype.NSEC)
            if sigs is None:
                return Judged(Security.BOGUS, [], rcode, kind="unsigned",
                              why=f"the NSEC of {nsec.name} is not signed")
            judged = self._verified(nsec, sigs, [], rcode)
            if judged.security is not Security.SECURE:
                return judged
        return Judged(Security.SECURE, [], rcode)

    def _unsigned(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType,
                  records: list[str], rcode: str) -> Judged:
        """An unsigned answer is insecure only below a proven delegation without DS."""
        name = qname.parent() if rdtype == dns.rdatatype.DS else qname
        while self.anchor_name is not None and name != self.anchor_name \
                and name.is_subdomain(self.anchor_name):
            ds = self._judge(name, dns.rdatatype.DS)
            if ds.security is Security.SECURE and ds.records:
                return Judged(Security.BOGUS, records, rcode, kind="unsigned",
                              why=f"{name} has a DS at its parent, but the answer for {qname}"
                                  " is not signed")
            if ds.security is Security.SECURE and self._is_cut(name):
                return Judged(Security.INSECURE, records, rcode,
                              why=f"{name} is delegated without DS (proven by NSEC)")
            name = name.parent()
        return Judged(Security.BOGUS, records, rcode, kind="unsigned",
                      why=f"the answer for {qname} is not signed, in a signed zone")

    def _is_cut(self, name: dns.name.Name) -> bool:
        """A delegation: the NSEC at ``name`` lists NS (RFC 4035 5.2)."""
        try:
            response = self._query(name, dns.rdatatype.DS)
        except (OSError, EOFError, dns.exception.DNSException):
            return False
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.NSEC and rrset.name == name:
                return any(dns.rdatatype.NS in window for nsec in rrset
                           for window in _types(nsec))
        return False


def _types(nsec: dns.rdata.Rdata) -> list[set[dns.rdatatype.RdataType]]:
    """The types an NSEC record's bitmap lists (one set, in a list for ``any``)."""
    text = nsec.to_text().split()[1:]
    return [{dns.rdatatype.from_text(t) for t in text}]
