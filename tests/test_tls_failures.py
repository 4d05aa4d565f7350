"""4.4.317, the TLS half: STARTTLS missing, refused or broken, and handshakes a default modern
client cannot complete, each asserted by what that client sees and by the journal."""

from __future__ import annotations

import smtplib
import socket
import ssl

import pytest
import trustme
from tlshelp import HOSTNAME, plain_until_starttls, starttls, verifying_context
from wire import TIMEOUT, command, connect, read_reply, wait_closed

from fakemx import FakeMX, Outcome
from fakemx.tls.certs import load_or_create_ca


def journal_note(mx: FakeMX, text: str) -> bool:
    mx.wait_for(ended=1)
    return any(text in event.text for event in mx.sessions[0].events)


def test_positive_control_default_client() -> None:
    with FakeMX("tls-valid-starttls") as mx, starttls(mx, verifying_context(mx)) as tls:
        assert tls.version() == "TLSv1.3"


def test_starttls_not_offered() -> None:
    with FakeMX("4.4.317-starttls-not-offered") as mx:
        with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as client:
            client.ehlo()
            assert not client.has_extn("starttls")
            with pytest.raises(smtplib.SMTPNotSupportedError):
                client.starttls(context=verifying_context(mx))
        with connect(mx.host, mx.port) as sock:  # a client that tries anyway
            read_reply(sock)
            command(sock, "EHLO client.example.net")
            assert command(sock, "STARTTLS").startswith(b"454 ")


def test_starttls_answered_454() -> None:
    with FakeMX("4.4.317-starttls-454") as mx, \
            smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        with pytest.raises(smtplib.SMTPResponseException) as error:
            client.starttls(context=verifying_context(mx))
        assert error.value.smtp_code == 454
        assert b"4.7.0 TLS not available" in error.value.smtp_error


def test_handshake_aborted_with_an_alert() -> None:
    with FakeMX("4.4.317-handshake-alert") as mx:
        with pytest.raises(ssl.SSLError, match="SSLV3_ALERT_HANDSHAKE_FAILURE"):
            starttls(mx, verifying_context(mx))
        mx.wait_for(ended=1)
        assert mx.sessions[0].outcome is Outcome.CLOSED_AFTER_REPLY
        assert journal_note(mx, "sent fatal TLS alert handshake_failure (40)")


def test_handshake_aborted_with_a_reset() -> None:
    with FakeMX("4.4.317-handshake-reset") as mx:
        with pytest.raises(ConnectionResetError):
            starttls(mx, verifying_context(mx))
        mx.wait_for(ended=1)
        assert mx.sessions[0].outcome is Outcome.RESET_AFTER_REPLY
        assert journal_note(mx, "ClientHello received")


def test_220_ready_then_no_handshake() -> None:
    with FakeMX("4.4.317-handshake-stall") as mx:
        sock = plain_until_starttls(mx)
        sock.settimeout(0.3)  # the client's handshake timeout, short for the test
        with pytest.raises(TimeoutError):
            verifying_context(mx).wrap_socket(sock, server_hostname=HOSTNAME)
        sock.close()
        mx.wait_for(ended=1)
        assert mx.sessions[0].outcome is Outcome.CLIENT_CLOSED
        assert journal_note(mx, "stall for ever")


def legacy_client(mx: FakeMX) -> ssl.SSLContext:
    """An old client: TLS 1.0 allowed, at the security level that permits it."""
    context = verifying_context(mx)
    with pytest.warns(DeprecationWarning, match="TLSv1 is deprecated"):
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


def test_only_tls_1_0_and_1_1() -> None:
    with FakeMX("4.4.317-tls-1.0-1.1-only") as mx:
        # The server's alert to a client at TLS 1.2 or later, or (Debian's own Python,
        # whose hello also offers 1.0 and 1.1) the client's refusal of the 1.1 it got.
        with pytest.raises(ssl.SSLError,
                           match=r"TLSV1_ALERT_PROTOCOL_VERSION|legacy sigalg disallowed"):
            starttls(mx, verifying_context(mx))
        # The journal has the server's reason, or the alert the client sent it.
        assert journal_note(mx, "unsupported protocol") or journal_note(mx, "alert internal error")
        with starttls(mx, legacy_client(mx)) as tls:  # really offered: an old client gets 1.1
            assert tls.version() == "TLSv1.1"


def test_only_tls_1_3() -> None:
    with FakeMX("4.4.317-tls-1.3-only") as mx:
        with starttls(mx, verifying_context(mx)) as tls:  # a modern client is fine
            assert tls.version() == "TLSv1.3"
        capped = verifying_context(mx)
        capped.maximum_version = ssl.TLSVersion.TLSv1_2  # a relay without TLS 1.3
        with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_PROTOCOL_VERSION"):
            starttls(mx, capped)
        mx.wait_for(ended=2)
        assert any("unsupported protocol" in e.text for e in mx.sessions[1].events)


def test_no_shared_cipher() -> None:
    with FakeMX("4.4.317-no-shared-cipher") as mx:
        with pytest.raises(ssl.SSLError, match="SSLV3_ALERT_HANDSHAKE_FAILURE"):
            starttls(mx, verifying_context(mx))
        assert journal_note(mx, "no shared cipher")


def test_client_certificate_required_without_one() -> None:
    with FakeMX("4.4.317-client-cert-required") as mx:
        # TLS 1.3: the client finishes first and hears the alert on its next read
        # (RFC 8446 4.4.2.4).
        with starttls(mx, verifying_context(mx)) as tls:
            tls.sendall(b"EHLO client.example.net\r\n")
            with pytest.raises(ssl.SSLError, match="TLSV13_ALERT_CERTIFICATE_REQUIRED"):
                tls.recv(4096)
        assert journal_note(mx, "peer did not return a certificate")


def test_client_certificate_required_and_the_clients_is_rejected() -> None:
    with FakeMX("4.4.317-client-cert-required") as mx:
        context = verifying_context(mx)
        # Even a certificate from fakemx's own CA: the server trusts no client issuer.
        load_or_create_ca(mx.state_dir).issue_cert("relay.example.net").configure_cert(context)
        with starttls(mx, context) as tls:
            tls.sendall(b"EHLO client.example.net\r\n")
            with pytest.raises(ssl.SSLError, match="TLSV1_ALERT_UNKNOWN_CA"):
                tls.recv(4096)
        other = verifying_context(mx)
        trustme.CA().issue_cert("relay.example.net").configure_cert(other)
        with starttls(mx, other) as tls:
            tls.sendall(b"EHLO client.example.net\r\n")
            with pytest.raises(ssl.SSLError, match="UNKNOWN_CA"):
                tls.recv(4096)


def test_smtplib_sees_the_handshake_failures() -> None:
    for profile, error in [("4.4.317-handshake-alert", ssl.SSLError),
                           ("4.4.317-no-shared-cipher", ssl.SSLError),
                           ("4.4.317-tls-1.0-1.1-only", ssl.SSLError),
                           ("4.4.317-handshake-reset", ConnectionResetError)]:
        with FakeMX(profile) as mx, smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as client:
            with pytest.raises(error):
                client.starttls(context=verifying_context(mx))
            client.close()


def test_a_failed_handshake_does_not_stop_the_server() -> None:
    with FakeMX("4.4.317-no-shared-cipher") as mx:
        for _ in range(3):
            with pytest.raises(ssl.SSLError):
                starttls(mx, verifying_context(mx))
        mx.wait_for(ended=3)
        assert [s.attempt for s in mx.sessions] == [1, 2, 3]
        with socket.create_connection((mx.host, mx.port), timeout=TIMEOUT) as sock:
            assert read_reply(sock).startswith(b"220 ")
            sock.sendall(b"QUIT\r\n")
            assert wait_closed(sock).data.startswith(b"221")
