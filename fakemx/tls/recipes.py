"""Making server certificates, each kind wrong in exactly one way (fakemx.tls.certs keeps
them as files).

A client that verifies against ``ca.pem`` fails with exactly one OpenSSL reason
(the comment on each recipe names it). trustme makes what it can;
``cryptography`` makes what trustme cannot: self-signed leaves, SHA-1 signatures,
1024-bit RSA keys, and leaves carrying CRL and OCSP URLs (trustme's
``configure_cert`` also always serves the full chain, so fakemx writes the served
chain itself). Keys are ECDSA: about 1 ms each where RSA costs about 70 ms (only
the ``weak_rsa1024`` kind is RSA, on purpose).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from fakemx.model import CertKind
from fakemx.tls.certs import WRONG_HOSTNAME, load_or_create_ca, server_identities
from fakemx.tls.sha1sign import sign_sha1

_DAY = dt.timedelta(days=1)
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class Signer:
    """A CA as ``cryptography`` objects: what signs leaves, CRLs and OCSP answers."""

    cert: x509.Certificate
    key: SigningKey

    @classmethod
    def root(cls, state_dir: Path) -> Signer:
        ca = load_or_create_ca(state_dir)
        return cls.from_trustme(ca)

    @classmethod
    def from_trustme(cls, ca: trustme.CA) -> Signer:
        key = serialization.load_pem_private_key(ca.private_key_pem.bytes(), None)
        assert isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey))
        return cls(x509.load_pem_x509_certificate(ca.cert_pem.bytes()), key)


def crl_url(base_url: str) -> str:
    return f"{base_url}/fakemx.crl"


def ocsp_url(base_url: str) -> str:
    return f"{base_url}/ocsp"


def make(kind: CertKind, state_dir: Path, hostname: str,
         revocation_base_url: str | None) -> _Made:
    """A new certificate of ``kind`` for ``hostname``: chain, key, intermediate."""
    return _RECIPES[kind](_Request(state_dir, hostname, revocation_base_url))


# region recipes: one per kind -------------------------------------------------


@dataclass(frozen=True)
class _Request:
    state_dir: Path
    hostname: str
    revocation_base_url: str | None

    @property
    def ca(self) -> trustme.CA:
        return load_or_create_ca(self.state_dir)


@dataclass(frozen=True)
class _Made:
    chain: bytes
    key: bytes
    intermediate: bytes | None = None


def _from_leaf(leaf: trustme.LeafCert, *, chain: bool = True) -> _Made:
    pems = leaf.cert_chain_pems if chain else leaf.cert_chain_pems[:1]
    return _Made(b"".join(blob.bytes() for blob in pems), leaf.private_key_pem.bytes())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0)


def _valid(req: _Request) -> _Made:
    return _from_leaf(req.ca.issue_cert(*server_identities(req.hostname), common_name=req.hostname))


def _expired(req: _Request) -> _Made:
    # OpenSSL: X509_V_ERR_CERT_HAS_EXPIRED, "certificate has expired" (10).
    now = _now()
    leaf = req.ca.issue_cert(*server_identities(req.hostname), common_name=req.hostname,
                             not_before=now - 400 * _DAY, not_after=now - 30 * _DAY)
    return _from_leaf(leaf)


def _not_yet_valid(req: _Request) -> _Made:
    # OpenSSL: X509_V_ERR_CERT_NOT_YET_VALID, "certificate is not yet valid" (9).
    # Valid from ten years after it was made, so the cached file stays wrong.
    now = _now()
    leaf = req.ca.issue_cert(*server_identities(req.hostname), common_name=req.hostname,
                             not_before=now + 3650 * _DAY, not_after=now + 4015 * _DAY)
    return _from_leaf(leaf)


def _wrong_host(req: _Request) -> _Made:
    # OpenSSL: X509_V_ERR_HOSTNAME_MISMATCH, "Hostname mismatch" (62). Trusted and
    # in date, but names neither the server name nor a loopback address.
    return _from_leaf(req.ca.issue_cert(WRONG_HOSTNAME, common_name=WRONG_HOSTNAME))


def _untrusted(req: _Request) -> _Made:
    # OpenSSL: X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, "unable to get local
    # issuer certificate" (20). A second CA, made here and thrown away: never
    # exported, so no relay can trust it, as with a private CA on a real server.
    other = trustme.CA(organization_name="fakemx untrusted CA (never exported)")
    return _from_leaf(other.issue_cert(*server_identities(req.hostname),
                                       common_name=req.hostname))


def _missing_intermediate(req: _Request) -> _Made:
    # OpenSSL: "unable to get local issuer certificate" (20) again, but here the
    # chain is the fault: with the intermediate (kept beside it) it verifies.
    child = req.ca.create_child_ca()
    leaf = child.issue_cert(*server_identities(req.hostname), common_name=req.hostname)
    made = _from_leaf(leaf, chain=False)
    return _Made(made.chain, made.key, child.cert_pem.bytes())


def _self_signed(req: _Request) -> _Made:
    # OpenSSL: X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, "self-signed certificate" (18).
    key = ec.generate_private_key(ec.SECP256R1())
    name = _subject(req.hostname, "fakemx self-signed")
    cert = _leaf_builder(name, name, key, req.hostname).sign(key, hashes.SHA256())
    return _Made(_pem(cert), _key_pem(key))


def _revoked(req: _Request) -> _Made:
    # OpenSSL: X509_V_ERR_CERT_REVOKED, "certificate revoked" (23), for a client
    # that checks the CRL or asks the OCSP responder named in the certificate.
    assert req.revocation_base_url is not None
    signer = Signer.from_trustme(req.ca)
    key = ec.generate_private_key(ec.SECP256R1())
    base = req.revocation_base_url
    builder = (
        _leaf_builder(_subject(req.hostname, "fakemx revoked"), signer.cert.subject, key,
                      req.hostname)
        .add_extension(_aki(signer.cert), critical=False)
        .add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(crl_url(base))],
            relative_name=None, reasons=None, crl_issuer=None)]), critical=False)
        .add_extension(x509.AuthorityInformationAccess([x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP,
            x509.UniformResourceIdentifier(ocsp_url(base)))]), critical=False)
    )
    return _Made(_pem(builder.sign(signer.key, hashes.SHA256())), _key_pem(key))


def _weak_sha1(req: _Request) -> _Made:
    # OpenSSL at security level 1 or more (every modern default):
    # X509_V_ERR_CA_MD_TOO_WEAK, "CA signature digest algorithm too weak" (68).
    # SHA-1 signatures have been refused since SHAttered (2017).
    signer = Signer.from_trustme(req.ca)
    key = ec.generate_private_key(ec.SECP256R1())
    builder = _leaf_builder(_subject(req.hostname, "fakemx weak SHA-1"), signer.cert.subject,
                            key, req.hostname).add_extension(_aki(signer.cert), critical=False)
    assert isinstance(signer.key, ec.EllipticCurvePrivateKey)  # trustme's CAs are ECDSA
    return _Made(sign_sha1(builder, signer.key), _key_pem(key))


def _weak_rsa1024(req: _Request) -> _Made:
    # OpenSSL at security level 2 (Debian's and Python's default):
    # X509_V_ERR_EE_KEY_TOO_SMALL, "EE certificate key too weak" (66).
    signer = Signer.from_trustme(req.ca)
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    builder = _leaf_builder(_subject(req.hostname, "fakemx weak RSA-1024"),
                            signer.cert.subject, key, req.hostname)
    builder = builder.add_extension(_aki(signer.cert), critical=False)
    return _Made(_pem(builder.sign(signer.key, hashes.SHA256())), _key_pem(key))


_RECIPES: dict[CertKind, Callable[[_Request], _Made]] = {
    CertKind.VALID: _valid,
    CertKind.EXPIRED: _expired,
    CertKind.NOT_YET_VALID: _not_yet_valid,
    CertKind.WRONG_HOST: _wrong_host,
    CertKind.SELF_SIGNED: _self_signed,
    CertKind.UNTRUSTED: _untrusted,
    CertKind.MISSING_INTERMEDIATE: _missing_intermediate,
    CertKind.REVOKED: _revoked,
    CertKind.WEAK_SHA1: _weak_sha1,
    CertKind.WEAK_RSA1024: _weak_rsa1024,
}

# endregion
# region cryptography building blocks ------------------------------------------


def _subject(hostname: str, organization: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, hostname),
    ])


def _san(hostname: str) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for identity in server_identities(hostname):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(identity)))
        except ValueError:
            names.append(x509.DNSName(identity))
    return x509.SubjectAlternativeName(names)


def _leaf_builder(
    subject: x509.Name, issuer: x509.Name, key: SigningKey, hostname: str
) -> x509.CertificateBuilder:
    """A server leaf as trustme makes them: SANs, TLS server/client use, not a CA."""
    now = _now()
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _DAY)  # a day of slack for clocks that lag
        .not_valid_after(now + 3650 * _DAY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_san(hostname), critical=True)
        .add_extension(x509.ExtendedKeyUsage([
            ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH,
        ]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
    )


def _aki(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: SigningKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


# endregion
