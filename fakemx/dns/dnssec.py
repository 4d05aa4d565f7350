"""DNSSEC for fakemx's zone (RFC 4033-4035): keys per state dir, the trust anchor, and
signed answers with NSEC denial, or signatures broken on purpose.

The zone's apex is the root of trust a validating resolver is given (unbound
``trust-anchor-file``): the DS of the key-signing key, written to
``STATE_DIR/dnssec-anchor.ds`` and printed by ``fakemx dns --trust-anchor``.
No chain to the real root is needed, and nothing leaves the machine.

Keys are ECDSA P-256 (algorithm 13, RFC 6605): small answers, fast signing.
The KSK signs the DNSKEY RRset, the ZSK everything else. Signatures are made
per answer (deterministic ECDSA, RFC 6979, so the same RRset always gets the
same signature) with a validity window fixed at start. They are made here with
``cryptography`` directly: dnspython's own signing needs a newer
``cryptography`` than fakemx requires.
"""

from __future__ import annotations

import base64
import dataclasses
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dns.dnssec
import dns.dnssectypes
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.DS
import dns.rdtypes.ANY.RRSIG
import dns.rrset
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from fakemx.dns import tlsa
from fakemx.dns.model import Dns, Dnssec, RrsigFault, normal_name
from fakemx.dns.nsec import NsecChain
from fakemx.dns.zone import Answer, Zone
from fakemx.store import ensure_state_dir
from fakemx.tls.certs import write_private
from fakemx.tls.recipes import Signer

KSK_FILE = "dnssec-ksk.pem"
ZSK_FILE = "dnssec-zsk.pem"
ANCHOR_FILE = "dnssec-anchor.ds"
ALGORITHM = dns.dnssectypes.Algorithm.ECDSAP256SHA256
_DAY = 86_400
# Signatures start an hour back: a resolver whose clock is a little behind still
# finds them valid (RFC 4035 5.3.1 compares inception and expiration with now).
_SKEW_SECONDS = 3_600


@dataclass(frozen=True)
class ZoneKeys:
    """The key-signing and zone-signing keys (RFC 4033 2: KSK and ZSK)."""

    ksk: ec.EllipticCurvePrivateKey
    zsk: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls) -> ZoneKeys:
        """Keys for this process only (a DnsServer with no state dir)."""
        return cls(ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def load_or_create(cls, state_dir: Path) -> ZoneKeys:
        """The state dir's keys, made on first use, so a resolver's anchor outlives restarts."""
        state_dir = ensure_state_dir(state_dir)
        keys = []
        for name in (KSK_FILE, ZSK_FILE):
            path = state_dir / name
            if path.is_file():
                key = serialization.load_pem_private_key(path.read_bytes(), None)
                if not isinstance(key, ec.EllipticCurvePrivateKey):
                    raise ValueError(f"{path}: not an ECDSA key (delete it to make a new one)")
            else:
                key = ec.generate_private_key(ec.SECP256R1())
                write_private(path, key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption()))
            keys.append(key)
        return cls(keys[0], keys[1])

    def dnskey(self, key: ec.EllipticCurvePrivateKey) -> dns.rdata.Rdata:
        # RFC 4034 2.1.1: flag 257 (zone key + secure entry point) marks the KSK.
        flags = 257 if key is self.ksk else 256
        point = key.public_key().public_numbers()
        # RFC 6605 4: the public key is the point's x and y, 32 bytes each.
        public = point.x.to_bytes(32, "big") + point.y.to_bytes(32, "big")
        text = f"{flags} 3 {int(ALGORITHM)} {base64.b64encode(public).decode()}"
        return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.DNSKEY, text)

    def ds(self, origin: dns.name.Name) -> dns.rdata.Rdata:
        return dns.dnssec.make_ds(origin, self.dnskey(self.ksk), "SHA256")

    def trust_anchor(self, origin: dns.name.Name) -> str:
        """The anchor in zone-file form, e.g. ``test. IN DS 12345 13 2 ABCD...``."""
        return f"{origin.to_text()} IN DS {self.ds(origin).to_text()}\n"


def write_anchor(state_dir: Path, keys: ZoneKeys, origin: dns.name.Name) -> Path:
    """``STATE_DIR/dnssec-anchor.ds``: what a resolver's ``trust-anchor-file`` names."""
    path = ensure_state_dir(state_dir) / ANCHOR_FILE
    write_private(path, keys.trust_anchor(origin).encode())
    path.chmod(0o644)  # meant to be handed out, like ca.pem
    return path


def zone_material(spec: Dns, state_dir: Path, presented: Callable[[], x509.Certificate]
                  ) -> tuple[ZoneKeys | None, dict[str, str]]:
    """What serving ``spec`` needs from the state dir: its keys (the anchor file written
    for its origin) when it is signed, and the digests its TLSA values name."""
    keys = None
    if spec.dnssec is not None:
        keys = ZoneKeys.load_or_create(state_dir)
        write_anchor(state_dir, keys, dns.name.from_text(normal_name(spec.origin) or "."))
    digests = {}
    if any(record.type == "TLSA" for record in spec.records):
        digests = tlsa.digests(presented(), Signer.root(state_dir).cert)
    return keys, digests


@dataclass(frozen=True)
class ZoneSigner:
    """Signs a zone's answers; ``now`` (seconds since the epoch) anchors every window.

    With ``[dns.dnssec.child]`` the names at and below the child are another
    zone (RFC 4035 2.4): signed with the child's signer name (the same keys), its
    own SOA and NSEC chain; the apex holds the child's DS (valid, wrong, or none).
    """

    origin: dns.name.Name
    keys: ZoneKeys
    settings: Dnssec = dataclasses.field(default_factory=Dnssec)
    now: float = dataclasses.field(default_factory=time.time)

    @property
    def child(self) -> dns.name.Name | None:
        child = self.settings.child
        return None if child is None else dns.name.from_text(normal_name(child.name))

    def apex_of(self, name: dns.name.Name, rdtype: int) -> dns.name.Name:
        """The top of the zone ``name``'s ``rdtype`` belongs to (a DS is the parent's)."""
        child = self.child
        if child is not None and name.is_subdomain(child) and not (
                name == child and rdtype == dns.rdatatype.DS):
            return child
        return self.origin

    def signs(self, apex: dns.name.Name) -> bool:
        return apex != self.child or self.settings.child is None or self.settings.child.signed

    def window(self, fault: RrsigFault | None) -> tuple[int, int]:
        """(inception, expiration): valid, or wrong as ``fault`` says (RFC 4035 5.3.1)."""
        now = int(self.now)
        if fault == "expired":
            return now - 60 * _DAY, now - 30 * _DAY
        if fault == "not_yet_valid":
            return now + 30 * _DAY, now + 60 * _DAY
        return now - _SKEW_SECONDS, now + self.settings.signature_days * _DAY

    def dnskeys(self, apex: dns.name.Name) -> dns.rrset.RRset:
        rrset = dns.rrset.RRset(apex, dns.rdataclass.IN, dns.rdatatype.DNSKEY)
        for key in (self.keys.ksk, self.keys.zsk):
            rrset.add(self.keys.dnskey(key), 3600)
        return rrset

    def child_ds(self) -> dns.rrset.RRset | None:
        """The DS the apex publishes for the child: its KSK's, or one naming no key."""
        child, settings = self.child, self.settings.child
        if child is None or settings is None or settings.ds == "missing":
            return None
        ds = self.keys.ds(child)
        if settings.ds == "wrong":  # RFC 4035 5.2: matches no DNSKEY of the child
            assert isinstance(ds, dns.rdtypes.ANY.DS.DS)
            ds = ds.replace(digest=bytes(b ^ 0xFF for b in ds.digest))
        rrset = dns.rrset.RRset(child, dns.rdataclass.IN, dns.rdatatype.DS)
        rrset.add(ds, 3600)
        return rrset

    def signature(self, rrset: dns.rrset.RRset, fault: RrsigFault | None,
                  signer: dns.name.Name) -> dns.rrset.RRset:
        """The RRSIG RRset over ``rrset``; ``bad``: one that does not verify."""
        key = self.keys.ksk if rrset.rdtype == dns.rdatatype.DNSKEY else self.keys.zsk
        rrsig = _sign(rrset, key, signer, self.keys.dnskey(key), self.window(fault))
        if fault == "bad":
            # Still well-formed, but the last byte of the signature changed: the
            # validator's ECDSA check fails (RFC 4035 5.3.3).
            assert isinstance(rrsig, dns.rdtypes.ANY.RRSIG.RRSIG)
            damaged = rrsig.signature[:-1] + bytes([rrsig.signature[-1] ^ 0xFF])
            rrsig = rrsig.replace(signature=damaged)
        signatures = dns.rrset.RRset(rrset.name, dns.rdataclass.IN, dns.rdatatype.RRSIG,
                                     covers=rrset.rdtype)
        signatures.add(rrsig, rrset.ttl)
        return signatures

    def complete(self, answer: Answer, qname: dns.name.Name, qtype: dns.rdatatype.RdataType,
                 zone: Zone, elapsed_seconds: float, *, dnssec_ok: bool) -> Answer:
        """``answer`` as a signed zone gives it: DNSKEY at each apex, the child's DS, and
        for a client that set DO (RFC 3225), signatures on every RRset and NSEC proof
        of what is not there."""
        if answer.rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return answer  # SERVFAIL, REFUSED: nothing to sign
        if not qname.is_subdomain(self.origin):
            return answer
        records, authority = list(answer.answer), list(answer.authority)
        apex = self.apex_of(qname, qtype)
        added = None
        if qname == apex and qtype in (dns.rdatatype.DNSKEY, dns.rdatatype.ANY) \
                and self.signs(apex):
            added = self.dnskeys(apex)
        elif qname == self.child and qtype == dns.rdatatype.DS:
            added = self.child_ds()
        if added is not None:
            records.append(added)
            if qtype != dns.rdatatype.ANY:
                answer, authority = dataclasses.replace(answer, rcode=dns.rcode.NOERROR), []
        final = _final_name(qname, records)
        denial = qtype != dns.rdatatype.ANY and final.is_subdomain(self.origin) and not any(
            r.name == final and r.rdtype == qtype for r in records)
        final_apex = self.apex_of(final, qtype)
        if denial and final_apex != self.origin:  # the child's own SOA says it (RFC 2308)
            authority = [_soa_at(final_apex, rrset) if rrset.rdtype == dns.rdatatype.SOA
                         else rrset for rrset in authority]
        if not dnssec_ok:
            return dataclasses.replace(answer, answer=records, authority=authority)
        proof: list[dns.rrset.RRset] = []
        if denial and self.signs(final_apex):
            chain = NsecChain(final_apex, zone, elapsed_seconds, cut=self.child,
                              signed_apex=self.signs(final_apex),
                              cut_ds=self.child_ds() is not None)
            proof = chain.proof(final, nxdomain=answer.rcode == dns.rcode.NXDOMAIN)
        fault = answer.fault.rrsig if answer.fault is not None else None
        return dataclasses.replace(
            answer, answer=self._with_signatures(records, fault),
            # the proof is its zone's, even at the cut, where the name is the child's
            authority=self._with_signatures(authority, fault)
            + self._with_signatures(proof, fault, final_apex))

    def _with_signatures(self, rrsets: list[dns.rrset.RRset], fault: RrsigFault | None,
                         apex: dns.name.Name | None = None) -> list[dns.rrset.RRset]:
        out = []
        for rrset in rrsets:
            out.append(rrset)
            signer = apex or self.apex_of(rrset.name, rrset.rdtype)
            if fault != "missing" and rrset.name.is_subdomain(self.origin) \
                    and self.signs(signer):
                out.append(self.signature(rrset, fault, signer))
        return out


def _soa_at(apex: dns.name.Name, soa: dns.rrset.RRset) -> dns.rrset.RRset:
    """The zone's SOA record, owned by ``apex`` (a child zone's own)."""
    rrset = dns.rrset.RRset(apex, dns.rdataclass.IN, dns.rdatatype.SOA)
    rrset.add(soa[0], soa.ttl)
    return rrset


def _sign(rrset: dns.rrset.RRset, key: ec.EllipticCurvePrivateKey, signer: dns.name.Name,
          dnskey: dns.rdata.Rdata, window: tuple[int, int]) -> dns.rdata.Rdata:
    """The RRSIG over ``rrset`` (RFC 4034 3.1.8.1, RFC 6605 4)."""
    assert isinstance(dnskey, dns.rdtypes.ANY.DNSKEY.DNSKEY)
    # labels: the owner's, the root not counted (the zone has no wildcards)
    fields = (f"{dns.rdatatype.to_text(rrset.rdtype)} {int(ALGORITHM)} {len(rrset.name) - 1} "
              f"{rrset.ttl} {_stamp(window[1])} {_stamp(window[0])} "
              f"{dns.dnssec.key_id(dnskey)} {signer.to_text()}")
    placeholder = b"\0" * 64
    template = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.RRSIG,
                                   f"{fields} {base64.b64encode(placeholder).decode()}")
    # The RRSIG's fields without the signature, then each record in canonical
    # form (RFC 4034 6.2) and order (6.3).
    data = template.to_digestable()[:-len(placeholder)]
    head = rrset.name.to_digestable() + struct.pack("!HHI", rrset.rdtype, rrset.rdclass,
                                                    rrset.ttl)
    for rdata in sorted(r.to_digestable() for r in rrset):
        data += head + struct.pack("!H", len(rdata)) + rdata
    der = key.sign(data, ec.ECDSA(hashes.SHA256(), deterministic_signing=True))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.RRSIG,
                               f"{fields} {base64.b64encode(signature).decode()}")


def _stamp(seconds: int) -> str:
    """RFC 4034 3.2: YYYYMMDDHHmmSS in UTC."""
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(seconds))


def _final_name(qname: dns.name.Name, records: list[dns.rrset.RRset]) -> dns.name.Name:
    """Where the answer's CNAME chain, if any, ends."""
    name = qname
    for rrset in records:
        if rrset.name == name and rrset.rdtype == dns.rdatatype.CNAME:
            name = rrset[0].target
    return name
