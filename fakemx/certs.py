"""Certificates: one fakemx root CA per state dir, and the server certificates it issues.

The CA is made once with trustme and kept as ``STATE_DIR/ca.pem`` (+ key), so a
relay configured to trust it keeps trusting it across restarts. Server
certificates are cached as files under ``STATE_DIR/certs/`` and loaded into a
bare ``ssl.SSLContext`` (``ssl.create_default_context`` would load the system
trust store, about 20 ms, which a server does not need). Keys are ECDSA: about
1 ms each where RSA costs about 70 ms.
"""

from __future__ import annotations

import os
import ssl
import threading
from pathlib import Path

import trustme

from fakemx.store import ensure_state_dir

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
DEFAULT_HOSTNAME = "mx.fakemx.test"

_lock = threading.Lock()


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by the owner only, atomically."""
    tmp = path.with_suffix(path.suffix + ".tmp")
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
        _write_private(key_path, ca.private_key_pem.bytes())
        _write_private(cert_path, ca.cert_pem.bytes())
        cert_path.chmod(0o644)  # the CA certificate is meant to be handed out
        return ca


def ca_pem(state_dir: Path) -> bytes:
    load_or_create_ca(state_dir)
    return (state_dir / CA_FILE).read_bytes()


def server_identities(hostname: str) -> tuple[str, ...]:
    """A valid certificate covers the server name and the loopback names."""
    names = [hostname, "localhost", "127.0.0.1", "::1"]
    return tuple(dict.fromkeys(names))


def valid_cert_files(state_dir: Path, hostname: str) -> tuple[Path, Path]:
    """(chain PEM, key PEM) of a valid server certificate for ``hostname``, cached."""
    certs = ensure_state_dir(state_dir / "certs")
    chain_path = certs / f"valid-{hostname}.pem"
    key_path = certs / f"valid-{hostname}.key"
    if chain_path.is_file() and key_path.is_file():
        return chain_path, key_path
    ca = load_or_create_ca(state_dir)
    leaf = ca.issue_cert(*server_identities(hostname), common_name=hostname)
    _write_private(key_path, leaf.private_key_pem.bytes())
    _write_private(chain_path, b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    return chain_path, key_path


def server_context(state_dir: Path, hostname: str) -> ssl.SSLContext:
    chain_path, key_path = valid_cert_files(state_dir, hostname)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain_path, key_path)
    return context
