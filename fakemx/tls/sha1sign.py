"""Sign a certificate with ECDSA-with-SHA1, which ``cryptography`` no longer does.

``CertificateBuilder.sign`` refuses SHA-1 ("Hash algorithm 'sha1' not
supported for signatures"), but the ``weak_sha1`` kind exists to be refused
*by the client*. So fakemx builds the certificate with SHA-256, swaps the
signature algorithm in the to-be-signed part for ecdsa-with-SHA1 (RFC 5758
3.2), signs that with SHA-1 and puts the DER back together. Only the few DER
forms a certificate uses are handled (fakemx.der).
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fakemx.tls.der import sequence_elements, tlv

# AlgorithmIdentifier { ecdsa-with-SHA1 (1.2.840.10045.4.1) }, no parameters.
_ECDSA_WITH_SHA1 = bytes.fromhex("3009" "06072a8648ce3d0401")


def sign_sha1(builder: x509.CertificateBuilder, key: ec.EllipticCurvePrivateKey) -> bytes:
    """The certificate ``builder`` describes, signed by ``key`` with ECDSA-SHA1, as PEM."""
    draft = builder.sign(key, hashes.SHA256())
    tbs = sequence_elements(draft.tbs_certificate_bytes)
    # TBSCertificate: [0] version, serialNumber, signature AlgorithmIdentifier, ...
    tbs[2] = _ECDSA_WITH_SHA1
    new_tbs = tlv(0x30, b"".join(tbs))
    signature = key.sign(new_tbs, ec.ECDSA(hashes.SHA1()))
    bit_string = tlv(0x03, b"\x00" + signature)
    der = tlv(0x30, new_tbs + _ECDSA_WITH_SHA1 + bit_string)
    return x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
