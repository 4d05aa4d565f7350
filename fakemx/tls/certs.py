"""Certificates: one fakemx root CA per state dir, and every kind of server certificate.

The CA is made once with trustme and kept as ``STATE_DIR/ca.pem`` (+ key), so a
relay configured to trust it keeps trusting it across restarts. Server
certificates are cached as files under ``STATE_DIR/certs/`` and loaded into a
bare ``ssl.SSLContext`` (see fakemx.tls.contexts). Making one is
fakemx.tls.recipes' job (trustme and ``cryptography``, about 0.1 s of CPU to
import): this module imports them only when a file is missing, so a server whose
CA and certificate exist starts without them.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fakemx.model import CertKind
from fakemx.store import ensure_state_dir

if TYPE_CHECKING:
    import trustme
    from cryptography import x509

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
DEFAULT_HOSTNAME = "mx.fakemx.test"
WRONG_HOSTNAME = "wrong-host.fakemx.test"  # what the wrong_host certificate names instead

_lock = threading.RLock()


def write_private(path: Path, data: bytes) -> None:
    """Write a file readable by the owner only, atomically."""
    tmp = path.with_suffix(f"{path.suffix}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def ensure_ca(state_dir: Path) -> Path:
    """The state dir's root CA certificate (``ca.pem``), created on first use."""
    state_dir = ensure_state_dir(state_dir)
    if not ((state_dir / CA_FILE).is_file() and (state_dir / CA_KEY_FILE).is_file()):
        load_or_create_ca(state_dir)
    return state_dir / CA_FILE


def load_or_create_ca(state_dir: Path) -> trustme.CA:
    """The state dir's root CA, created on first use."""
    import trustme

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
    return ensure_ca(state_dir).read_bytes()


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
        from cryptography import x509

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
        from fakemx.tls.recipes import make  # trustme and cryptography: only to make one

        made = make(kind, state_dir, hostname, revocation_base_url)
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


# endregion
