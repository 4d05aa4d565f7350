"""``--tls dane`` (RFC 7672): the MX and TLSA records judged by DNSSEC, the chain matched.

Before connecting, as a relay does: the MX RRset (for a domain) and the TLSA
RRset at ``_25._tcp.<MX host>`` are asked with DO set and judged secure,
insecure or bogus (``dnssec.py``). Bogus or SERVFAIL is 4.7.324 dnssec-invalid
and the relay does not connect; insecure, or no TLSA records, means DANE does
not apply (a relay that requires it defers: 4.7.5 dane-required). Secure TLSA
records make STARTTLS mandatory (4.7.321 starttls-not-supported without it),
and after the handshake the chain the server sent must match one usable record
(4.7.323 tlsa-invalid otherwise): DANE-EE (3) the leaf alone, names and dates
not checked; DANE-TA (2) a certificate the server sends above the leaf, the
leaf chaining to it, within its dates (4.7.322 certificate-expired) and naming
the MX host (4.7.325 certificate-host-mismatch). Usages 0 and 1 are unusable
for SMTP (RFC 7672 3.1.3): TLS is still required, not authenticated.

The TLSA name is always port 25's: relays deliver to port 25, also when the
probe is pointed at a lab port.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from fakemx.diagnose import certcheck
from fakemx.diagnose.dnsprobe import Address, Lookup
from fakemx.diagnose.dnssec import Judged, Security, Validator, read_anchor
from fakemx.diagnose.model import Finding, Options, Severity, Step, is_address

TLSA_PORT = 25
USAGES = {0: "PKIX-TA", 1: "PKIX-EE", 2: "DANE-TA", 3: "DANE-EE"}

# Bogus answers: (what was asked, why) -> the catalog profile that breaks exactly that.
_BOGUS = {("MX", "expired"): "4.7.324-mx-rrsig-expired",
          ("MX", "ds_mismatch"): "4.7.324-ds-mismatch",
          ("MX", "unsigned"): "4.7.324-ds-to-unsigned-zone",
          ("TLSA", "expired"): "4.7.324-tlsa-rrsig-expired",
          ("TLSA", "not_yet_valid"): "4.7.324-tlsa-rrsig-not-yet-valid",
          ("TLSA", "bad_signature"): "4.7.324-tlsa-bad-signature",
          ("TLSA", "servfail"): "4.7.324-tlsa-servfail"}


@dataclass(frozen=True)
class Tlsa:
    usage: int
    selector: int
    matching: int
    data: bytes

    @classmethod
    def parse(cls, text: str) -> Tlsa:
        usage, selector, matching, *data = text.split()
        return cls(int(usage), int(selector), int(matching), bytes.fromhex("".join(data)))

    def __str__(self) -> str:
        shown = self.data.hex()
        return f"{self.usage} {self.selector} {self.matching} {shown[:16]}" + (
            "..." if len(shown) > 16 else "")

    def matches(self, cert: x509.Certificate, selector: int | None = None) -> bool:
        """Does this record name ``cert`` (with another ``selector``: what a typo would)?"""
        chosen = self.selector if selector is None else selector
        data = cert.public_bytes(serialization.Encoding.DER) if chosen == 0 else \
            cert.public_key().public_bytes(serialization.Encoding.DER,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
        if self.matching == 0:
            return data == self.data
        if self.matching in (1, 2):
            digest = hashlib.sha256 if self.matching == 1 else hashlib.sha512
            return digest(data).digest() == self.data
        return False


@dataclass(frozen=True)
class Dane:
    """Secure TLSA records for the MX host: STARTTLS is mandatory, the chain must match."""

    host: str
    names: tuple[str, ...]  # the names the certificate may carry: the MX host, the domain
    records: tuple[Tlsa, ...]

    @property
    def usable(self) -> tuple[Tlsa, ...]:
        return tuple(r for r in self.records if r.usage in (2, 3))


class Failed(Exception):
    """The DNS part failed (the FAIL step is recorded): the relay does not connect."""


def lookup(options: Options, address: Address, steps: list[Step]) -> Dane | None:
    """The DNSSEC status of the MX and the TLSA records; None when DANE does not apply."""
    server = Lookup(options)
    anchor = read_anchor(options.trust_anchor) if options.trust_anchor else None
    validator = Validator(server.server, server.port, options.timeouts.dns_seconds, anchor)
    how = (f"validated against the trust anchor {anchor.name}" if anchor is not None
           else f"the AD bit of {server.where}")
    target = options.target
    if target.mx_lookup and not is_address(target.name):
        mx = validator.ask(target.name, "MX")
        if not _judged(steps, f"MX {target.name}", "MX", mx, how):
            return None
    host = address.host.rstrip(".")
    if is_address(host):
        steps.append(_not_dane(f"{host} is an address: it has no TLSA records (DANE needs the"
                               " MX host's name)", "4.7.5-dane-required"))
        return None
    name = f"_{TLSA_PORT}._tcp.{host}"
    tlsa = validator.ask(name, "TLSA")
    if not _judged(steps, f"TLSA {name}", "TLSA", tlsa, how):
        return None
    if not tlsa.records:
        steps.append(_not_dane(f"TLSA {name}: none (proven by NSEC): DANE does not apply to"
                               f" {host}", "4.7.5-dane-required"))
        return None
    records = tuple(Tlsa.parse(r) for r in tlsa.records)
    steps.append(Step("dane", Severity.OK, f"TLSA {name}: {', '.join(map(str, records))}"
                      f" (DNSSEC secure, {how}): STARTTLS is mandatory",
                      facts={"tlsa": tlsa.records}))
    if not any(r.usage in (2, 3) for r in records):
        steps.append(Step("dane", Severity.INFO, "only PKIX-TA/PKIX-EE records (usages 0 and"
                          " 1, unusable for SMTP, RFC 7672 3.1.3): TLS is required, the"
                          " certificate is not authenticated"))
    domain = target.name if target.mx_lookup else host
    return Dane(host, tuple(dict.fromkeys((host, domain))), records)


def _judged(steps: list[Step], what: str, rdtype: str, answer: Judged, how: str) -> bool:
    """Record the answer's DNSSEC status; True when DANE goes on (secure)."""
    if answer.security is Security.BOGUS:
        # A validating resolver answers every bogus record with SERVFAIL: any of them.
        named = sorted({p for (asked, kind), p in _BOGUS.items() if asked == rdtype},
                       key=lambda p: p != _BOGUS.get((rdtype, "servfail"))) \
            if answer.kind == "servfail" else [p for p in [_BOGUS.get((rdtype, answer.kind))] if p]
        steps.append(Step("dane", Severity.FAIL, f"{what}: DNSSEC bogus: {answer.why}; a DANE"
                          " relay does not connect (dnssec-invalid)", Finding.DANE_DNSSEC_INVALID,
                          facts={"why": answer.why, "rcode": answer.rcode, "profiles": named}))
        raise Failed
    if answer.security is Security.INSECURE:
        profile = "dane-missing-ds-insecure" if "no DS" in answer.why else "4.7.5-dane-required"
        steps.append(_not_dane(f"{what}: DNSSEC insecure ({answer.why}): DANE does not apply",
                               profile))
        return False
    if rdtype == "MX":
        steps.append(Step("dane", Severity.OK, f"{what}: DNSSEC secure ({how})"))
    return True


def _not_dane(line: str, profile: str) -> Step:
    return Step("dane", Severity.WARN, f"{line}; a relay that requires DANE defers"
                " (dane-required), one that does not uses opportunistic TLS",
                Finding.DANE_REQUIRED, facts={"profiles": [profile]})


def starttls_missing(dane: Dane) -> Step:
    """No STARTTLS, where secure TLSA records make it mandatory (RFC 7672 2.2)."""
    profile = "4.7.321-dane-starttls-not-offered" if dane.usable else \
        "4.7.321-tlsa-unusable-no-starttls"
    return Step("starttls", Severity.FAIL, f"STARTTLS not offered, and {dane.host} has TLSA"
                " records: a DANE relay defers (starttls-not-supported)",
                Finding.DANE_NO_STARTTLS, facts={"profiles": [profile]})


def match(dane: Dane, chain: list[bytes]) -> Step:
    """The chain the server sent against the usable TLSA records."""
    if not dane.usable:
        return Step("dane", Severity.INFO, "TLS established; no usable TLSA record to match")
    if not chain:
        return _invalid("the server sent no certificate", "4.7.323-tlsa-other-key")
    try:
        certs = [x509.load_der_x509_certificate(der) for der in chain]
    except ValueError as exc:
        return _invalid(f"a certificate the server sent does not parse ({exc})",
                        "4.7.323-tlsa-other-key")
    leaf = certs[0]
    for record in dane.usable:
        if record.usage == 3 and record.matches(leaf):
            return Step("dane", Severity.OK, f"DANE-EE: TLSA {record} matches the server's"
                        f" {'certificate' if record.selector == 0 else 'key'} (names and"
                        " dates are not checked, RFC 7672 3.1.1)")
    for depth, cert in enumerate(certs[1:], 1):
        anchor = next((r for r in dane.usable if r.usage == 2 and r.matches(cert)), None)
        if anchor is not None:
            return _trust_anchor(dane, certs[:depth + 1], anchor)
    return _mismatch(dane, leaf)


def _trust_anchor(dane: Dane, path: list[x509.Certificate], record: Tlsa) -> Step:
    """DANE-TA: the leaf chains to the matched certificate, in its dates, naming the host."""
    anchor = path[-1]
    for child, issuer in itertools.pairwise(path):
        try:
            child.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature):
            return _invalid(f"DANE-TA: TLSA {record} matches {anchor.subject.rfc4514_string()},"
                            f" but {child.subject.rfc4514_string()} is not issued by"
                            f" {issuer.subject.rfc4514_string()}", "4.7.323-tlsa-ta-not-in-chain")
    now = dt.datetime.now(dt.UTC)
    for cert in path:
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            when = "expired on" if cert.not_valid_after_utc < now else "not valid before"
            date = cert.not_valid_after_utc if cert.not_valid_after_utc < now \
                else cert.not_valid_before_utc
            return Step("dane", Severity.FAIL, f"DANE-TA: TLSA {record} matches the chain, but"
                        f" {cert.subject.rfc4514_string()} {when} {date:%Y-%m-%d}; DANE-TA"
                        " checks dates (certificate-expired)", Finding.DANE_CERT_EXPIRED,
                        facts={"profiles": ["4.7.322-dane-certificate-expired"]})
    leaf, _ = certcheck.read_leaf(path[0].public_bytes(serialization.Encoding.DER), None)
    if not any(certcheck.matches_name(name, leaf.names) for name in dane.names):
        return Step("dane", Severity.FAIL, f"DANE-TA: TLSA {record} matches the chain, but the"
                    f" certificate names {', '.join(leaf.names) or '(nothing)'}, not"
                    f" {' or '.join(dane.names)} (certificate-host-mismatch)",
                    Finding.DANE_HOST_MISMATCH,
                    facts={"profiles": ["4.7.325-dane-certificate-host-mismatch"]})
    return Step("dane", Severity.OK, f"DANE-TA: TLSA {record} matches"
                f" {anchor.subject.rfc4514_string()} (depth {len(path) - 1}); the leaf chains to"
                f" it, is in its dates and names {dane.host}")


def _mismatch(dane: Dane, leaf: x509.Certificate) -> Step:
    """No record matches: say which mistake the records look like."""
    records = dane.usable
    if any(r.usage == 2 and r.matches(leaf) for r in records):
        return _invalid("no TLSA record matches: a DANE-TA (2) record carries the server's own"
                        " certificate or key, which only DANE-EE (3) may",
                        "4.7.323-tlsa-wrong-usage")
    if any(r.usage == 3 and r.matches(leaf, 1 - r.selector) for r in records if r.selector < 2):
        return _invalid("no TLSA record matches: a DANE-EE record has the wrong selector (its"
                        " data is the digest of the other form)", "4.7.323-tlsa-wrong-selector")
    if all(r.usage == 2 for r in records):
        return _invalid("no TLSA record matches: the CA the DANE-TA record names is not in the"
                        " chain the server sends", "4.7.323-tlsa-ta-not-in-chain")
    return _invalid("no TLSA record matches the server's certificate or key (another key: a"
                    " renewal the record missed?)", "4.7.323-tlsa-other-key")


def _invalid(line: str, profile: str) -> Step:
    return Step("dane", Severity.FAIL, f"{line} (tlsa-invalid)", Finding.DANE_TLSA_INVALID,
                facts={"profiles": [profile]})
