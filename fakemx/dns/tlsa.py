"""TLSA records (RFC 6698, RFC 7672) for the certificate fakemx presents.

A profile's TLSA value names a digest instead of hex, so the record matches
the certificate of this state dir whatever it is::

    [[dns.records]]
    name = "_25._tcp.mx.fakemx.test"
    type = "TLSA"
    value = "3 1 1 {leaf-spki-sha256}"      # DANE-EE: the server's own key

``{leaf-spki-sha256}`` / ``{leaf-cert-sha256}``: SHA-256 of the presented
certificate's SubjectPublicKeyInfo / whole certificate (selector 1 / 0);
``{ca-cert-sha256}`` / ``{ca-spki-sha256}``: the same of fakemx's root CA
(``fakemx ca``), for DANE-TA(2); ``{other-spki-sha256}``: the key of no
server at all, so the record matches nothing fakemx presents.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # cryptography costs start-up time: imported when a zone has TLSA
    from cryptography import x509

TLSA_DIGESTS = ("{leaf-spki-sha256}", "{leaf-cert-sha256}", "{ca-cert-sha256}",
                "{ca-spki-sha256}", "{other-spki-sha256}")

# A fixed private scalar: "another key" is the same one on every run and machine,
# and no certificate fakemx makes carries it.
_OTHER_KEY_SCALAR = int.from_bytes(hashlib.sha256(b"fakemx: a key no server holds").digest())


def check_tlsa_value(value: str) -> None:
    """``USAGE SELECTOR MATCHING-TYPE DATA`` (RFC 6698 2.1), DATA hex or a digest name.

    Raises ValueError with the fix.
    """
    parts = value.split()
    example = "e.g. '3 1 1 {leaf-spki-sha256}'"
    if len(parts) != 4 or not all(p.isdigit() and int(p) < 256 for p in parts[:3]):
        raise ValueError(f"TLSA value {value!r} must be 'USAGE SELECTOR MATCHING-TYPE DATA', "
                         f"{example}")
    data = parts[3]
    if data.startswith("{"):
        if data not in TLSA_DIGESTS:
            raise ValueError(f"TLSA data {data!r} is not one of {', '.join(TLSA_DIGESTS)}")
        return
    try:
        bytes.fromhex(data)
    except ValueError:
        raise ValueError(f"TLSA data {data!r} is neither hex nor one of "
                         f"{', '.join(TLSA_DIGESTS)}") from None


def digests(leaf: x509.Certificate, ca: x509.Certificate) -> dict[str, str]:
    """Each digest name's hex for the presented ``leaf`` and fakemx's root ``ca``."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def sha256(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def spki(cert: x509.Certificate) -> bytes:
        return cert.public_key().public_bytes(serialization.Encoding.DER,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)

    other = ec.derive_private_key(_OTHER_KEY_SCALAR % (2**255), ec.SECP256R1()).public_key()
    other_spki = other.public_bytes(serialization.Encoding.DER,
                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    return {
        "{leaf-spki-sha256}": sha256(spki(leaf)),
        "{leaf-cert-sha256}": sha256(leaf.public_bytes(serialization.Encoding.DER)),
        "{ca-cert-sha256}": sha256(ca.public_bytes(serialization.Encoding.DER)),
        "{ca-spki-sha256}": sha256(spki(ca)),
        "{other-spki-sha256}": sha256(other_spki),
    }


def filled(value: str, known: Mapping[str, str]) -> str:
    """A TLSA value with its digest name replaced by hex (``known``: from ``digests``)."""
    usage, selector, matching, data = value.split()
    if data.startswith("{"):
        if data not in known:
            raise ValueError(f"{data} is unknown here: the zone is served without the "
                             "certificate it describes (serve it with fakemx serve, or give "
                             "fakemx dns --state-dir)")
        data = known[data]
    return f"{usage} {selector} {matching} {data}"
