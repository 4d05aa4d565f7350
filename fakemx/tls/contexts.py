"""A profile's ``tls`` settings as a server ``ssl.SSLContext``.

Built from a bare ``ssl.SSLContext(PROTOCOL_TLS_SERVER)``, never
``ssl.create_default_context``: that one loads the system trust store (about
20 ms) which a server that asks for no client certificate does not need.
"""

from __future__ import annotations

import ssl
import warnings
from pathlib import Path

from fakemx.model import CertKind, Tls, TlsVersion
from fakemx.tls import certs

_VERSIONS: dict[TlsVersion, ssl.TLSVersion] = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
# OpenSSL 3 refuses TLS 1.0/1.1 (SHA-1 handshake signatures), SHA-1 certificates
# and 1024-bit RSA keys at security level 1 and above, even on the server side.
# A server that really offers them, as an old one does, needs level 0.
# https://www.openssl.org/docs/man3.0/man3/SSL_CTX_set_security_level.html
_LEGACY_CIPHERS = "DEFAULT:@SECLEVEL=0"
_WEAK_KINDS = frozenset({CertKind.WEAK_SHA1, CertKind.WEAK_RSA1024})


class AlertingSSLObject(ssl.SSLObject):
    """An SSLObject whose fatal handshake alerts reach the client.

    When a server-side handshake fails (no shared version or cipher, no client
    certificate) OpenSSL writes the alert into the outgoing buffer, but asyncio's
    SSLProtocol closes the socket without sending it (its ``_do_handshake``
    flushes only on SSLWantRead), so the client sees a bare EOF ("unexpected
    eof") instead of "alert protocol version". So the first failure is held
    back and reported as "want read": asyncio flushes, the alert goes out, and
    the failure is raised the next time OpenSSL is driven. When the client
    simply hangs up after the alert, asyncio reports that instead;
    ``handshake_error`` gives the real reason back.
    """

    failure: ssl.SSLError | None = None

    def do_handshake(self) -> None:
        if self.failure is not None:
            raise self.failure
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            self.failure = exc
            raise ssl.SSLWantReadError("fakemx: flushing the alert first") from exc


def handshake_error(error: BaseException, ssl_object: object) -> BaseException:
    """The handshake's real failure: the one OpenSSL raised, not the hang-up after the alert."""
    failure = getattr(ssl_object, "failure", None)
    return failure if isinstance(failure, ssl.SSLError) else error


def needs_legacy_level(tls: Tls) -> bool:
    old = tls.min_version in ("1.0", "1.1")
    return old or tls.cert in _WEAK_KINDS


def server_context(
    state_dir: Path,
    hostname: str,
    tls: Tls | None = None,
    *,
    revocation_base_url: str | None = None,
) -> ssl.SSLContext:
    """The context for ``tls`` (a valid certificate and defaults when None)."""
    tls = tls or Tls()
    files = certs.cert_files(state_dir, hostname, tls.cert,
                             revocation_base_url=revocation_base_url)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.sslobject_class = AlertingSSLObject
    if needs_legacy_level(tls):
        context.set_ciphers(_LEGACY_CIPHERS)
    if tls.ciphers is not None:
        context.set_ciphers(tls.ciphers)
    with warnings.catch_warnings():
        # Python warns that TLS 1.0/1.1 are deprecated (bpo-43998); offering them is the point.
        warnings.simplefilter("ignore", DeprecationWarning)
        if tls.min_version is not None:
            context.minimum_version = _VERSIONS[tls.min_version]
        if tls.max_version is not None:
            context.maximum_version = _VERSIONS[tls.max_version]
    chain = files.chain
    if tls.send_ca:  # the chain, then the root: what a DANE-TA(2) record can match
        chain = files.chain.with_suffix(".with-ca.pem")
        if not chain.is_file():
            certs.write_private(chain, files.chain.read_bytes() + certs.ca_pem(state_dir))
    context.load_cert_chain(chain, files.key)
    if tls.require_client_cert:
        # A CA made now and forgotten: no client can hold a certificate from
        # it, so a client without one gets "certificate required" (TLS 1.3,
        # RFC 8446 4.4.2.4) and one with any certificate gets "unknown ca".
        import trustme  # only here: a server that starts from its files never imports it

        nobody = trustme.CA(organization_name="fakemx client CA (trusted by nobody)")
        context.load_verify_locations(cadata=nobody.cert_pem.bytes().decode())
        context.verify_mode = ssl.CERT_REQUIRED
    return context
