"""fakemx's own revocation service: a CRL and an OCSP responder over HTTP on loopback.

The ``revoked`` certificate names ``http://127.0.0.1:PORT/fakemx.crl`` (CRL
distribution point, RFC 5280 4.2.1.13) and ``http://127.0.0.1:PORT/ocsp``
(authority information access, RFC 6960), so a client that checks revocation
learns "certificate revoked" without leaving the machine. Both are signed by
the state dir's root CA. The server speaks just enough HTTP/1.1 for CRL
fetchers and OCSP clients (GET, and POST of ``application/ocsp-request``,
RFC 6960 appendix A), one request per connection.

The port is remembered in ``STATE_DIR/revocation-port`` and asked for again on
the next start, so the cached certificate (which names the port) stays usable.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import errno
import logging
import urllib.parse
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from fakemx.tls.der import content_span, sequence_elements
from fakemx.tls.recipes import Signer

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
PORT_FILE = "revocation-port"
_REQUEST_LIMIT_BYTES = 65536
_READ_TIMEOUT_SECONDS = 10.0
_VALIDITY = dt.timedelta(days=30)  # nextUpdate: clients may cache the answer that long


class RevocationServer:
    """Serves the CRL and answers OCSP for the CA in ``signer``.

    Serials passed to ``revoke`` are revoked (reason keyCompromise); every
    other serial of this CA is good; other issuers get ``unauthorized``.
    """

    def __init__(self, signer: Signer, state_dir: Path) -> None:
        self._signer = signer
        self._state_dir = state_dir
        self._revoked: dict[int, dt.datetime] = {}
        self._server: asyncio.Server | None = None
        self._crl: bytes | None = None
        self.port = 0
        self.requests: list[str] = []  # "GET /fakemx.crl", "POST /ocsp 12345 revoked", ...

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def revoke(self, certificate: x509.Certificate) -> None:
        if certificate.serial_number not in self._revoked:
            # Revoked as soon as it was valid: any client clock sees it revoked.
            self._revoked[certificate.serial_number] = certificate.not_valid_before_utc
            self._crl = None

    async def start(self) -> None:
        remembered = self._state_dir / PORT_FILE
        wanted = 0
        with contextlib.suppress(OSError, ValueError):
            wanted = int(remembered.read_text())
        try:
            self._server = await asyncio.start_server(self._serve, HOST, wanted)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or wanted == 0:
                raise
            self._server = await asyncio.start_server(self._serve, HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.port != wanted:
            remembered.write_text(f"{self.port}\n")

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # region documents -------------------------------------------------------

    def crl_der(self) -> bytes:
        if self._crl is None:
            now = dt.datetime.now(dt.UTC)
            builder = (
                x509.CertificateRevocationListBuilder()
                .issuer_name(self._signer.cert.subject)
                .last_update(now - dt.timedelta(minutes=5))
                .next_update(now + _VALIDITY)
                .add_extension(x509.CRLNumber(int(now.timestamp())), critical=False)
            )
            for serial, when in self._revoked.items():
                builder = builder.add_revoked_certificate(
                    x509.RevokedCertificateBuilder()
                    .serial_number(serial)
                    .revocation_date(when)
                    .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise),
                                   critical=False)
                    .build()
                )
            crl = builder.sign(self._signer.key, hashes.SHA256())
            self._crl = crl.public_bytes(serialization.Encoding.DER)
        return self._crl

    def ocsp_answer(self, request_der: bytes) -> tuple[bytes, str]:
        """(DER OCSPResponse, what it said) for a DER OCSPRequest."""
        # Everything here is the client's: parsed lazily by cryptography, so each
        # part it could not use is an OCSP error answer (RFC 6960 2.3), not a crash.
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            extensions = list(request.extensions)
        except ValueError:
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST), "malformed"
        try:
            algorithm = request.hash_algorithm
        except UnsupportedAlgorithm:  # a CertID hashed with something we cannot recompute:
            # we cannot tell whether it names our CA, so we are not the responder for it
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED), "unsupported hash"
        issuer = self._signer.cert
        name_hash, key_hash = _issuer_hashes(issuer, algorithm)
        if (request.issuer_name_hash, request.issuer_key_hash) != (name_hash, key_hash):
            return _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED), "unauthorized"
        now = dt.datetime.now(dt.UTC)
        revoked_at = self._revoked.get(request.serial_number)
        status = ocsp.OCSPCertStatus.GOOD if revoked_at is None else ocsp.OCSPCertStatus.REVOKED
        builder = ocsp.OCSPResponseBuilder().add_response_by_hash(
            issuer_name_hash=name_hash,
            issuer_key_hash=key_hash,
            serial_number=request.serial_number,
            algorithm=algorithm,
            cert_status=status,
            this_update=now - dt.timedelta(minutes=5),
            next_update=now + _VALIDITY,
            revocation_time=revoked_at,
            revocation_reason=None if revoked_at is None else x509.ReasonFlags.key_compromise,
        ).responder_id(ocsp.OCSPResponderEncoding.HASH, issuer)
        for extension in extensions:  # echo the nonce (RFC 8954)
            if isinstance(extension.value, x509.OCSPNonce):
                builder = builder.add_extension(extension.value, critical=False)
        try:
            response = builder.sign(self._signer.key, hashes.SHA256())
        except ValueError:  # e.g. a nonce that cannot be echoed
            return _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST), "malformed"
        said = "good" if revoked_at is None else "revoked"
        return response.public_bytes(serialization.Encoding.DER), said

    # endregion
    # region HTTP ------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(_READ_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
                method, target, headers = _parse_head(head)
                size = min(int(headers.get("content-length", "0") or 0), _REQUEST_LIMIT_BYTES)
                body = await reader.readexactly(size) if size else b""
            status, content_type, payload = self._route(method, target, body)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ValueError, ConnectionError):
            status, content_type, payload = "400 Bad Request", "text/plain", b"bad request\n"
        except Exception as exc:  # a request we did not foresee: still an answer, one log line
            log.warning("fakemx: revocation server could not answer a request: %s: %s",
                        type(exc).__name__, exc)
            status, content_type, payload = ("500 Internal Server Error", "text/plain",
                                             b"fakemx could not answer this request\n")
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode() + payload
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    def _route(self, method: str, target: str, body: bytes) -> tuple[str, str, bytes]:
        path = urllib.parse.urlsplit(target).path
        if method == "GET" and path == "/fakemx.crl":
            self.requests.append("GET /fakemx.crl")
            return "200 OK", "application/pkix-crl", self.crl_der()
        if path == "/ocsp" and method == "POST":
            answer, said = self.ocsp_answer(body)
        elif path.startswith("/ocsp/") and method == "GET":  # RFC 6960 A.1: base64 in the URL
            encoded = urllib.parse.unquote(path.removeprefix("/ocsp/"))
            answer, said = self.ocsp_answer(base64.b64decode(encoded + "=" * (-len(encoded) % 4)))
        else:
            return "404 Not Found", "text/plain", b"fakemx serves /fakemx.crl and /ocsp\n"
        self.requests.append(f"{method} /ocsp {said}")
        return "200 OK", "application/ocsp-response", answer

    # endregion


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, _version = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


def _issuer_hashes(
    issuer: x509.Certificate, algorithm: hashes.HashAlgorithm
) -> tuple[bytes, bytes]:
    """CertID's issuerNameHash and issuerKeyHash (RFC 6960 4.1.1)."""
    name = hashes.Hash(algorithm)
    name.update(issuer.subject.public_bytes())
    key_der = issuer.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    key = hashes.Hash(algorithm)
    key.update(_spki_bit_string(key_der))
    return name.finalize(), key.finalize()


def _spki_bit_string(spki: bytes) -> bytes:
    """The subjectPublicKey bits of a SubjectPublicKeyInfo (what issuerKeyHash covers)."""
    bit_string = sequence_elements(spki)[1]
    start, end = content_span(bit_string)
    return bit_string[start + 1 : end]  # skip the "unused bits" octet


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> bytes:
    return ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(
        serialization.Encoding.DER
    )
