"""One RRSIG checked against a DNSKEY set (RFC 4034 3.1.8.1, 6.2, 6.3) with ``cryptography``.

dnspython's own ``dns.dnssec.validate`` wants a newer ``cryptography`` than the
one fakemx runs with, so the signed data is rebuilt here: the RRSIG's fields
without the signature, then each record in canonical form and order. The
algorithms: 8 and 10 (RSA/SHA-256, SHA-512), 13 and 14 (ECDSA P-256, P-384), 15 (Ed25519).
"""

from __future__ import annotations

import struct
import time

import dns.dnssec
import dns.rdata
import dns.rdtypes.ANY.DNSKEY
import dns.rdtypes.ANY.RRSIG
import dns.rrset
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


class Failure(Exception):
    """Why the signature does not validate: ``expired``, ``not yet valid``, ``verify failure``,
    ``no key``, ``unsupported algorithm N``."""


def verify(rrset: dns.rrset.RRset, sig: dns.rdata.Rdata, dnskeys: dns.rrset.RRset,
           now: float | None = None) -> None:
    """Return when ``sig`` is a valid signature of ``rrset`` by a key in ``dnskeys``."""
    assert isinstance(sig, dns.rdtypes.ANY.RRSIG.RRSIG)
    moment = time.time() if now is None else now
    if sig.expiration < moment:
        raise Failure("expired")
    if sig.inception > moment:
        raise Failure("not yet valid")
    keys = [k for k in dnskeys if isinstance(k, dns.rdtypes.ANY.DNSKEY.DNSKEY)
            and k.algorithm == sig.algorithm and dns.dnssec.key_id(k) == sig.key_tag]
    if not keys:
        raise Failure("no key")
    data = sig.to_digestable()[:-len(sig.signature)]
    head = rrset.name.canonicalize().to_digestable() + struct.pack(
        "!HHI", rrset.rdtype, rrset.rdclass, sig.original_ttl)
    for rdata in sorted(r.to_digestable() for r in rrset):
        data += head + struct.pack("!H", len(rdata)) + rdata
    for key in keys:
        try:
            _check(int(sig.algorithm), key.key, sig.signature, data)
        except (InvalidSignature, ValueError):
            continue
        return
    raise Failure("verify failure")


def _check(algorithm: int, key: bytes, signature: bytes, data: bytes) -> None:
    if algorithm in (13, 14):
        curve, digest, size = ((ec.SECP256R1(), hashes.SHA256(), 32) if algorithm == 13
                               else (ec.SECP384R1(), hashes.SHA384(), 48))
        public = ec.EllipticCurvePublicKey.from_encoded_point(curve, b"\x04" + key)
        der = encode_dss_signature(int.from_bytes(signature[:size]),
                                   int.from_bytes(signature[size:]))
        public.verify(der, data, ec.ECDSA(digest))
    elif algorithm in (8, 10):
        length, at = (key[0], 1) if key[0] else (int.from_bytes(key[1:3]), 3)
        exponent = int.from_bytes(key[at:at + length])
        modulus = int.from_bytes(key[at + length:])
        rsa.RSAPublicNumbers(exponent, modulus).public_key().verify(
            signature, data, padding.PKCS1v15(),
            hashes.SHA256() if algorithm == 8 else hashes.SHA512())
    elif algorithm == 15:
        ed25519.Ed25519PublicKey.from_public_bytes(key).verify(signature, data)
    else:
        raise Failure(f"unsupported algorithm {algorithm}")
