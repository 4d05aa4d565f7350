"""The server's certificate read with ``cryptography``: names, dates, key, signature,
and revocation (the CRL, else the OCSP responder it names), when reachable.

Python's ``ssl`` hands over only the leaf, so the chain is judged by OpenSSL's
verification in the handshake (``tlsprobe``); this module says what the leaf is.
"""

from __future__ import annotations

import datetime as dt
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import AuthorityInformationAccessOID

MIN_RSA_BITS = 2048  # OpenSSL security level 2, the default: smaller keys are refused
WEAK_HASHES = {"md5", "sha1"}


@dataclass
class Leaf:
    """What one certificate says, and what is wrong with it as a leaf."""

    subject: str
    issuer: str
    names: list[str]
    not_before: dt.datetime
    not_after: dt.datetime
    key: str
    signature_hash: str
    crl_urls: list[str]
    ocsp_urls: list[str]
    serial: int
    problems: list[str] = field(default_factory=list)

    def describe(self) -> str:
        days = (self.not_after - _now()).days
        return (f"{self.subject}, names {', '.join(self.names) or '(none)'}; issuer"
                f" {self.issuer}; valid {self.not_before:%Y-%m-%d} to {self.not_after:%Y-%m-%d}"
                f" ({days} days left); key {self.key}; signed with {self.signature_hash}")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def read_leaf(der: bytes, expected_name: str | None) -> tuple[Leaf, x509.Certificate]:
    cert = x509.load_der_x509_certificate(der)
    leaf = Leaf(
        subject=cert.subject.rfc4514_string() or "(empty subject)",
        issuer=cert.issuer.rfc4514_string(),
        names=_names(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        key=_key(cert),
        signature_hash=cert.signature_hash_algorithm.name if cert.signature_hash_algorithm
        else "none",
        crl_urls=_crl_urls(cert),
        ocsp_urls=_ocsp_urls(cert),
        serial=cert.serial_number,
    )
    now = _now()
    if leaf.not_after < now:
        leaf.problems.append(f"expired on {leaf.not_after:%Y-%m-%d}")
    if leaf.not_before > now:
        leaf.problems.append(f"not valid before {leaf.not_before:%Y-%m-%d}")
    if cert.subject == cert.issuer:
        leaf.problems.append("self-signed")
    if expected_name and not matches_name(expected_name, leaf.names):
        leaf.problems.append(f"does not name {expected_name}")
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
        leaf.problems.append(f"RSA key of {public.key_size} bits (under {MIN_RSA_BITS})")
    if leaf.signature_hash in WEAK_HASHES:
        leaf.problems.append(f"signed with {leaf.signature_hash.upper()}")
    return leaf, cert


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [*san.get_values_for_type(x509.DNSName),
            *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def matches_name(name: str, names: list[str]) -> bool:
    name = name.lower().rstrip(".")
    for candidate in (n.lower() for n in names):
        if candidate == name:
            return True
        if candidate.startswith("*.") and name.split(".", 1)[-1] == candidate[2:] and "." in name:
            return True
    return False


def _key(cert: x509.Certificate) -> str:
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA {public.key_size} bits"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"EC {public.curve.name}"
    if isinstance(public, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        return type(public).__name__.removesuffix("PublicKey")
    if isinstance(public, dsa.DSAPublicKey):
        return f"DSA {public.key_size} bits"
    return type(public).__name__


def _crl_urls(cert: x509.Certificate) -> list[str]:
    try:
        points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    except x509.ExtensionNotFound:
        return []
    return [name.value for point in points for name in point.full_name or []
            if isinstance(name, x509.UniformResourceIdentifier)]


def _ocsp_urls(cert: x509.Certificate) -> list[str]:
    try:
        access = cert.extensions.get_extension_for_class(
            x509.AuthorityInformationAccess).value
    except x509.ExtensionNotFound:
        return []
    return [item.access_location.value for item in access
            if item.access_method == AuthorityInformationAccessOID.OCSP
            and isinstance(item.access_location, x509.UniformResourceIdentifier)]


@dataclass(frozen=True)
class Revocation:
    """``revoked`` is None when no answer could be had; ``text`` says what was asked."""

    revoked: bool | None
    text: str


def revocation(leaf: Leaf, cert: x509.Certificate, ca_file: Path | None,
               timeout: float) -> Revocation:
    """Ask the CRL named in the certificate, else its OCSP responder (plain HTTP only)."""
    asked: list[str] = []
    for url in leaf.crl_urls:
        if not url.startswith("http://"):
            continue
        try:
            crl = _load_crl(_fetch(url, None, timeout))
        except (OSError, ValueError) as exc:
            asked.append(f"CRL {url}: {exc}")
            continue
        entry = crl.get_revoked_certificate_by_serial_number(leaf.serial)
        if entry is not None:
            return Revocation(True, f"revoked on {entry.revocation_date_utc:%Y-%m-%d}"
                                    f" (CRL {url})")
        return Revocation(False, f"not revoked (CRL {url})")
    issuer = _issuer(cert, ca_file)
    for url in leaf.ocsp_urls:
        if not url.startswith("http://") or issuer is None:
            asked.append(f"OCSP {url}: " + ("not plain HTTP" if issuer is not None
                                            else "the issuer is not in --ca"))
            continue
        request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
        try:
            answer = ocsp.load_der_ocsp_response(_fetch(
                url, request.public_bytes(serialization.Encoding.DER), timeout))
        except (OSError, ValueError) as exc:
            asked.append(f"OCSP {url}: {exc}")
            continue
        if answer.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            asked.append(f"OCSP {url}: {answer.response_status.name}")
            continue
        status = answer.certificate_status
        if status == ocsp.OCSPCertStatus.REVOKED:
            return Revocation(True, f"revoked (OCSP {url})")
        return Revocation(False, f"{status.name.lower()} (OCSP {url})")
    if not asked:
        return Revocation(None, "the certificate names no CRL and no OCSP responder")
    return Revocation(None, "revocation unknown: " + "; ".join(asked))


def _fetch(url: str, body: bytes | None, timeout: float) -> bytes:
    headers = {"Content-Type": "application/ocsp-request"} if body is not None else {}
    request = urllib.request.Request(url, data=body, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read(4_000_000)
        return data


def _load_crl(data: bytes) -> x509.CertificateRevocationList:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_crl(data)
    return x509.load_der_x509_crl(data)


def _issuer(cert: x509.Certificate, ca_file: Path | None) -> x509.Certificate | None:
    if ca_file is None:
        return None
    try:
        candidates = x509.load_pem_x509_certificates(ca_file.read_bytes())
    except (OSError, ValueError):
        return None
    return next((c for c in candidates if c.subject == cert.issuer), None)
