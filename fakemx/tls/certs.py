"""Certificates: one fakemx root CA per state dir, and every kind of server certificate.

The CA is made once with trustme and kept as ``STATE_DIR/ca.pem`` (+ key), so a
relay configured to trust it keeps trusting it across restarts. Server
certificates are cached as files under ``STATE_DIR/certs/`` and loaded into a
bare ``ssl.SSLContext`` (see fakemx.tls.contexts). Keys are ECDSA: about 1 ms each
where RSA costs about 70 ms (only the ``weak_rsa1024`` kind is RSA, on purpose).

Each kind is wrong in exactly one way, so a client that verifies against
``ca.pem`` fails with exactly one OpenSSL reason (the comment on each recipe
names it). trustme makes what it can; ``cryptography`` makes what trustme
cannot: self-signed leaves, SHA-1 signatures, 1024-bit RSA keys, and leaves
carrying CRL and OCSP URLs (trustme's ``configure_cert`` also always serves the
full chain, so fakemx writes the served chain itself).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from fakemx.model import CertKind
from fakemx.store import ensure_state_dir
from fakemx.tls.sha1sign import sign_sha1

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
DEFAULT_HOSTNAME = "mx.fakemx.test"
WRONG_HOSTNAME = "wrong-host.fakemx.test"  # what the wrong_host certificate names instead

_lock = threading.RLock()
_DAY = dt.timedelta(days=1)
SigningKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by the owner only, atomically."""
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def load_or_create_ca(state_dir: Path) -> trustme.CA:
    """The state dir's root CA, created on first use."""
    state_dir = ensure_state_dir(state_dir)
    cert_path, key_path = state_dir / CA_FILE, state_dir / CA_KEY_FILE
    with _lock:
        if cert_path.is_file() and key_path.is_file():
            return trustme.CA.from_pem(cert_path.read_bytes(), key_path.read_bytes())
        ca = trustme.CA(organization_name="fakemx test CA")
        write_private(key_path, ca.private_key_pem.bytes())
        write_private(cert_path, ca.cert_pem.bytes())
        cert_path.chmod(0o644)  # the CA certificate is meant to be handed out
        return ca


def ca_pem(state_dir: Path) -> bytes:
    load_or_create_ca(state_dir)
    return (state_dir / CA_FILE).read_bytes()


def export_ca(state_dir: Path, out: Path | None = None) -> bytes:
    """The root certificate a relay must trust (PEM); also written to ``out`` when given.

    This is ``fakemx ca``: the one file to hand to Postfix ``smtp_tls_CAfile``,
    Exim ``tls_verify_certificates``, ``SSL_CERT_FILE`` or ``openssl -CAfile``.
    """
    pem = ca_pem(state_dir)
    if out is not None:
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        tmp.write_bytes(pem)
        tmp.chmod(0o644)
        os.replace(tmp, out)
    return pem


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


def server_identities(hostname: str) -> tuple[str, ...]:
    """A valid certificate covers the server name and the loopback names."""
    names = [hostname, "localhost", "127.0.0.1", "::1"]
    return tuple(dict.fromkeys(names))


# region the served files --------------------------------------------------------


@dataclass(frozen=True)
class CertFiles:
    """What the server loads: the chain it sends (leaf first) and the leaf's key.

    ``intermediate`` is the CA certificate a complete chain would have carried
    (``missing_intermediate`` only): give it to ``openssl verify -untrusted`` to
    show that the chain, not the leaf, is at fault.
    """

    chain: Path
    key: Path
    intermediate: Path | None = None

    @property
    def leaf(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.chain.read_bytes())


def cert_files(
    state_dir: Path,
    hostname: str,
    kind: CertKind = CertKind.VALID,
    *,
    revocation_base_url: str | None = None,
) -> CertFiles:
    """The cached files of a ``kind`` certificate for ``hostname``, made on first use.

    ``revoked`` certificates name fakemx's revocation server in them, so they
    need its ``revocation_base_url`` (``http://127.0.0.1:PORT``) and are cached
    per port; fakemx asks for the same port again on the next start.
    """
    certs_dir = ensure_state_dir(state_dir / "certs")
    stem = f"{kind}-{hostname}"
    if kind is CertKind.REVOKED:
        if revocation_base_url is None:
            raise ValueError("a revoked certificate needs the revocation server's URL")
        stem += "-" + revocation_base_url.rsplit(":", 1)[-1]
    files = CertFiles(
        certs_dir / f"{stem}.pem",
        certs_dir / f"{stem}.key",
        certs_dir / f"{stem}.intermediate.pem" if kind is CertKind.MISSING_INTERMEDIATE else None,
    )
    with _lock:
        if all(p is None or p.is_file() for p in (files.key, files.intermediate, files.chain)):
            return files
        made = _RECIPES[kind](_Request(state_dir, hostname, revocation_base_url))
        if files.intermediate is not None:
            assert made.intermediate is not None
            write_private(files.intermediate, made.intermediate)
            files.intermediate.chmod(0o644)
        write_private(files.key, made.key)
        write_private(files.chain, made.chain)  # last: its presence means "complete"
    return files


def valid_cert_files(state_dir: Path, hostname: str) -> tuple[Path, Path]:
    """(chain PEM, key PEM) of a valid server certificate for ``hostname``, cached."""
    files = cert_files(state_dir, hostname, CertKind.VALID)
    return files.chain, files.key


def crl_url(base_url: str) -> str:
    return f"{base_url}/fakemx.crl"


def ocsp_url(base_url: str) -> str:
    return f"{base_url}/ocsp"


# endregion
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
