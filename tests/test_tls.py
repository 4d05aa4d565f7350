"""Certificates: a client that verifies against fakemx's CA fails each 4.7.320 profile with
its own OpenSSL reason, after the positive control passes with the same client."""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import ocsp
from tlshelp import HOSTNAME, fetch, post, served_leaf, starttls, verifying_context
from wire import TIMEOUT

from fakemx import FakeMX, Outcome, Profile
from fakemx.tls.certs import cert_files

# profile -> the reason OpenSSL gives the verifying client (ssl.SSLCertVerificationError).
CERTIFICATE_FAILURES = {
    "4.7.320-expired": "certificate has expired",
    "4.7.320-not-yet-valid": "certificate is not yet valid",
    "4.7.320-wrong-host": f"Hostname mismatch, certificate is not valid for '{HOSTNAME}'",
    "4.7.320-self-signed": "self-signed certificate",
    "4.7.320-untrusted-ca": "unable to get local issuer certificate",
    "4.7.320-missing-intermediate": "unable to get local issuer certificate",
    "4.7.320-weak-sha1": "CA signature digest algorithm too weak",
    "4.7.320-weak-rsa-1024": "EE certificate key too weak",
}


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "alice@sender.example", "bob@dest.example", "tls"
    msg.set_content("over TLS\n")
    return msg


def test_positive_control_starttls_verifies_and_delivers() -> None:
    with FakeMX("tls-valid-starttls") as mx, starttls(mx, verifying_context(mx)) as tls:
        assert tls.version() == "TLSv1.3"
        tls.sendall(b"EHLO client.example.net\r\n")
        assert tls.recv(4096).startswith(b"250-")
        mx.wait_for(sessions=1)
        assert (mx.sessions[0].tls or "").startswith("TLSv1.3")


@pytest.mark.parametrize("profile", sorted(CERTIFICATE_FAILURES))
def test_certificate_profile_fails_with_its_reason(profile: str) -> None:
    with FakeMX(profile) as mx:
        with pytest.raises(ssl.SSLCertVerificationError) as error:
            starttls(mx, verifying_context(mx))
        assert CERTIFICATE_FAILURES[profile] in error.value.verify_message
        mx.wait_for(ended=1)
        session = mx.sessions[0]
        assert session.outcome is Outcome.ERROR
        assert session.ended_by == "failed after STARTTLS"
        assert any(e.text.startswith("TLS handshake failed: [SSL: ") for e in session.events)


def test_missing_intermediate_verifies_once_the_client_has_the_intermediate() -> None:
    """Tells the incomplete chain from the untrusted issuer: same reason, different cure."""
    with FakeMX("4.7.320-missing-intermediate") as mx:
        files = cert_files(mx.state_dir, mx.hostname, mx.profile.tls.cert)
        assert files.intermediate is not None
        context = verifying_context(mx)
        context.load_verify_locations(cafile=str(files.intermediate))
        with starttls(mx, context) as tls:
            assert tls.version() == "TLSv1.3"


def test_revoked_is_trusted_until_the_client_checks_the_crl_fakemx_serves(tmp_path: Path) -> None:
    with FakeMX("4.7.320-revoked") as mx:
        with starttls(mx, verifying_context(mx)):  # in date, right name, trusted issuer
            pass
        leaf = served_leaf(mx)
        points = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        url = points[0].full_name[0].value  # type: ignore[index]
        crl = x509.load_der_x509_crl(fetch(url))
        assert crl.get_revoked_certificate_by_serial_number(leaf.serial_number) is not None
        context = verifying_context(mx)
        crl_file = tmp_path / "fakemx.crl.pem"  # cadata takes certificates only; a file takes CRLs
        crl_file.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        context.load_verify_locations(cafile=str(crl_file))
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
        with pytest.raises(ssl.SSLCertVerificationError) as error:
            starttls(mx, context)
        assert error.value.verify_message == "certificate revoked"
        assert mx.revocation is not None
        assert "GET /fakemx.crl" in mx.revocation.requests


def test_revoked_ocsp_responder_answers_revoked() -> None:
    with FakeMX("4.7.320-revoked") as mx:
        leaf = served_leaf(mx)
        access = leaf.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
        url = next(a.access_location.value for a in access
                   if a.access_method == x509.oid.AuthorityInformationAccessOID.OCSP)
        issuer = x509.load_pem_x509_certificate(mx.ca_pem)
        request = ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA1()).build()
        answer = ocsp.load_der_ocsp_response(post(
            url, request.public_bytes(serialization.Encoding.DER), "application/ocsp-request"))
        assert answer.response_status is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert answer.certificate_status is ocsp.OCSPCertStatus.REVOKED
        assert answer.serial_number == leaf.serial_number
        # Signed by fakemx's CA itself (RFC 6960 4.2.2.2: the issuer may sign directly).
        public_key = issuer.public_key()
        assert isinstance(public_key, ec.EllipticCurvePublicKey)
        assert answer.signature_hash_algorithm is not None
        public_key.verify(answer.signature, answer.tbs_response_bytes,
                          ec.ECDSA(answer.signature_hash_algorithm))


def test_certificates_are_cached_per_state_dir(tmp_path: Path) -> None:
    with FakeMX("4.7.320-expired", state_dir=str(tmp_path)) as first:
        leaf = served_leaf(first)
    with FakeMX("4.7.320-expired", state_dir=str(tmp_path)) as second:
        assert served_leaf(second) == leaf
        assert second.ca_pem == first.ca_pem


# region smtplib, aiosmtplib, implicit TLS ---------------------------------------


def test_smtplib_starttls_control_then_expired() -> None:
    with FakeMX("tls-valid-starttls") as mx, \
            smtplib.SMTP("localhost", mx.port, timeout=TIMEOUT) as client:
        client.starttls(context=verifying_context(mx))
        assert client.send_message(message()) == {}
        mx.wait_for(messages=1)
    expired = pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired")
    with FakeMX("4.7.320-expired") as mx, \
            smtplib.SMTP("localhost", mx.port, timeout=TIMEOUT) as client, expired:
        client.starttls(context=verifying_context(mx))


def test_aiosmtplib_starttls_control_then_wrong_host() -> None:
    async def send(mx: FakeMX) -> object:
        return await aiosmtplib.send(message(), hostname="localhost", port=mx.port,
                                     start_tls=True, tls_context=verifying_context(mx),
                                     timeout=TIMEOUT)

    with FakeMX("tls-valid-starttls") as mx:
        asyncio.run(send(mx))
        mx.wait_for(messages=1)
    mismatch = pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch")
    with FakeMX("4.7.320-wrong-host") as mx, mismatch:
        asyncio.run(send(mx))


def test_implicit_tls_control_with_smtp_ssl_and_aiosmtplib() -> None:
    with FakeMX("tls-valid-implicit") as mx:
        client = smtplib.SMTP_SSL("localhost", mx.port, context=verifying_context(mx),
                                  timeout=TIMEOUT)
        with client:
            assert client.send_message(message()) == {}
        asyncio.run(aiosmtplib.send(message(), hostname="localhost", port=mx.port,
                                    use_tls=True, tls_context=verifying_context(mx),
                                    timeout=TIMEOUT))
        mx.wait_for(messages=2)
        assert all((s.tls or "").startswith("TLSv1.3") for s in mx.sessions)


def test_implicit_tls_failed_handshake_is_journaled() -> None:
    """asyncio does an SMTPS handshake before any protocol; fakemx still records the attempt."""
    expired = Profile.model_validate({"name": "implicit-expired",
                                      "tls": {"mode": "implicit", "cert": "expired"}})
    with FakeMX(expired) as mx:
        with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
            smtplib.SMTP_SSL("localhost", mx.port, context=verifying_context(mx), timeout=TIMEOUT)
        mx.wait_for(ended=1)
        session = mx.sessions[0]
        assert session.outcome is Outcome.ERROR
        assert session.attempt == 1
        assert session.ended_by == "failed after connect"
        assert any("alert certificate expired" in e.text for e in session.events)


def test_switching_to_implicit_tls_applies_from_the_next_connection() -> None:
    with FakeMX("sink") as mx:
        mx.load("tls-valid-implicit")
        with smtplib.SMTP_SSL("localhost", mx.port, context=verifying_context(mx),
                              timeout=TIMEOUT) as client:
            assert client.noop()[0] == 250

# endregion


def test_fakemx_ca_prints_and_writes_the_root(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from fakemx.cli import main

    state = tmp_path / "state"
    assert main(["ca", "--state-dir", str(state)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("-----BEGIN CERTIFICATE-----")
    out = tmp_path / "fakemx-ca.pem"
    assert main(["ca", "--state-dir", str(state), "--out", str(out)]) == 0
    assert out.read_text() == printed == (state / "ca.pem").read_text()  # same CA, kept
    with FakeMX("tls-valid-starttls", state_dir=str(state)) as mx, \
            starttls(mx, ssl.create_default_context(cafile=str(out))):
        pass
