"""The TLS handshake after STARTTLS: contexts as relays build them, failures named.

A failed handshake is explained by trying again, one protocol version at a
time and with every cipher OpenSSL has (security level 0): what the server
does accept tells "no shared version" from "no shared cipher" from "it aborts".
"""

from __future__ import annotations

import socket
import ssl
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fakemx.diagnose.model import Finding

VERSIONS = {
    "1.0": ssl.TLSVersion.TLSv1,
    "1.1": ssl.TLSVersion.TLSv1_1,
    "1.2": ssl.TLSVersion.TLSv1_2,
    "1.3": ssl.TLSVersion.TLSv1_3,
}
EVERY_CIPHER = "ALL:eNULL:aNULL:@SECLEVEL=0"

# OpenSSL reasons (ssl.SSLError.reason) and what they say about the server.
_VERSION_REASONS = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL",
                    "NO_PROTOCOLS_AVAILABLE", "WRONG_VERSION_NUMBER"}
_CLIENT_CERT_REASONS = {"TLSV13_ALERT_CERTIFICATE_REQUIRED", "TLSV1_ALERT_UNKNOWN_CA",
                        "SSLV3_ALERT_BAD_CERTIFICATE"}

Opener = Callable[[], socket.socket]  # a new connection, STARTTLS answered 220


def client_context(verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    """A relay's context: OpenSSL's defaults (TLS 1.2 and up); verifying, or not."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def lenient_context(version: str | None = None, ciphers: str = EVERY_CIPHER) -> ssl.SSLContext:
    """Anything goes (for the follow-up probes): one version, every cipher, no checks."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers(ciphers)
    if version is not None:
        with warnings.catch_warnings():  # TLS 1.0 and 1.1 are deprecated: that is the point
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = context.maximum_version = VERSIONS[version]
    return context


def handshake(sock: socket.socket, context: ssl.SSLContext, server_name: str | None,
              timeout: float) -> ssl.SSLSocket:
    sock.settimeout(timeout)
    return context.wrap_socket(sock, server_hostname=server_name,
                               suppress_ragged_eofs=False)


@dataclass(frozen=True)
class Failure:
    finding: Finding
    text: str
    reason: str = ""  # OpenSSL's reason, e.g. SSLV3_ALERT_HANDSHAKE_FAILURE
    verify_code: int | None = None


def classify(exc: BaseException, timeout: float) -> Failure:
    """What a handshake (or the first read after it) raised, as a finding."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return Failure(Finding.CERT_INVALID, f"certificate verify failed: {exc.verify_message}",
                       "CERTIFICATE_VERIFY_FAILED", exc.verify_code)
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return Failure(Finding.TLS_TIMEOUT, f"the handshake did not finish within {timeout:g} s")
    if isinstance(exc, ConnectionResetError):
        return Failure(Finding.TLS_RESET, "connection reset by the server during the handshake")
    if isinstance(exc, ssl.SSLEOFError) or (isinstance(exc, OSError) and not
                                            isinstance(exc, ssl.SSLError)):
        return Failure(Finding.TLS_RESET, f"connection closed during the handshake ({exc})")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        text = f"TLS handshake failure: {_openssl_text(exc)}"
        if reason in _CLIENT_CERT_REASONS:
            return Failure(Finding.TLS_CLIENT_CERT, text, reason)
        if reason in _VERSION_REASONS:
            return Failure(Finding.TLS_PROTOCOL_VERSION, text, reason)
        return Failure(Finding.TLS_ALERT, text, reason)
    return Failure(Finding.TLS_ALERT, f"TLS handshake failure: {type(exc).__name__}: {exc}")


def _openssl_text(exc: ssl.SSLError) -> str:
    """``sslv3 alert handshake failure`` from OpenSSL's reason, as relays log it."""
    reason = exc.reason or str(exc)
    return reason.lower().replace("_", " ")


@dataclass(frozen=True)
class Offer:
    """What one follow-up handshake found: accepted (with a cipher), or why not."""

    version: str
    cipher: str | None
    problem: str = ""


def offers(open_starttls: Opener, timeout: float,
           versions: tuple[str, ...] = tuple(VERSIONS)) -> list[Offer]:
    """For each version: can any cipher at all be agreed? One connection each."""
    found: list[Offer] = []
    for version in versions:
        try:
            sock = open_starttls()
        except Exception as exc:  # the server would not get this far again
            found.append(Offer(version, None, f"no STARTTLS: {exc}"))
            continue
        try:
            with handshake(sock, lenient_context(version), None, timeout) as tls:
                cipher = tls.cipher()
                found.append(Offer(version, cipher[0] if cipher else "?"))
                tls.sendall(b"QUIT\r\n")  # a polite end; the reply does not matter
        except Exception as exc:
            found.append(Offer(version, None, classify(exc, timeout).text))
        finally:
            sock.close()
    return found


def explain_failure(first: Failure, found: list[Offer]) -> Failure:
    """The handshake failure, explained by what the follow-up handshakes accepted."""
    if first.finding not in (Finding.TLS_ALERT, Finding.TLS_PROTOCOL_VERSION):
        return first
    accepted = [o for o in found if o.cipher is not None]
    summary = "; ".join(f"TLS {o.version}: {o.cipher or o.problem}" for o in found)
    if not accepted:
        return Failure(Finding.TLS_ALERT, f"{first.text}; the server accepts no version and no"
                       f" cipher at all ({summary})", first.reason)
    modern = [o for o in accepted if o.version in ("1.2", "1.3")]
    if not modern:
        return Failure(Finding.TLS_PROTOCOL_VERSION,
                       f"{first.text}; the server speaks only TLS"
                       f" {', '.join(o.version for o in accepted)}, which relays no longer"
                       f" offer ({summary})", first.reason)
    return Failure(Finding.TLS_NO_SHARED_CIPHER,
                   f"{first.text}; no shared cipher: the server accepts only"
                   f" {', '.join(f'{o.cipher} (TLS {o.version})' for o in modern)}, which"
                   f" OpenSSL's defaults do not offer ({summary})", first.reason)
