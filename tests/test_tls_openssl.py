"""A second, independent client: `openssl s_client -starttls smtp` and `openssl verify`
against fakemx's CA, for the positive control and every certificate profile."""

from __future__ import annotations

from pathlib import Path

import pytest
from tlshelp import HOSTNAME, needs_openssl, openssl, pem_blocks, s_client, write_pems

from fakemx import FakeMX

pytestmark = needs_openssl

# profile -> OpenSSL's verify code and text, as s_client ("verify error:num=N:text") and
# verify ("error N at 0 depth lookup: text") print them.
# -auth_level 2 asks for what Debian's openssl.cnf (SECLEVEL=2) and Python apply.
VERIFY_FAILURES = {
    "4.7.320-expired": "10 (certificate has expired)",
    "4.7.320-not-yet-valid": "9 (certificate is not yet valid)",
    "4.7.320-wrong-host": "62 (hostname mismatch)",
    "4.7.320-self-signed": "18 (self-signed certificate)",
    "4.7.320-untrusted-ca": "20 (unable to get local issuer certificate)",
    "4.7.320-missing-intermediate": "20 (unable to get local issuer certificate)",
    "4.7.320-weak-sha1": "68 (CA signature digest algorithm too weak)",
    "4.7.320-weak-rsa-1024": "66 (EE certificate key too weak)",
}
AUTH = ("-auth_level", "2")


def verify(mx: FakeMX, directory: Path, *extra: str) -> str:
    """`openssl verify` on the chain fakemx served (leaf; the rest as untrusted)."""
    served = pem_blocks(s_client(mx, "-auth_level", "0"))
    assert served, "fakemx served no certificate"
    leaf = write_pems(directory, "leaf.pem", served[:1])
    args = ["verify", "-CAfile", str(mx.ca_path), "-verify_hostname", HOSTNAME, *AUTH, *extra]
    if served[1:]:
        args += ["-untrusted", str(write_pems(directory, "chain.pem", served[1:]))]
    return openssl(*args, str(leaf))


def test_positive_control(tmp_path: Path) -> None:
    for profile in ("tls-valid-starttls", "tls-valid-implicit"):
        with FakeMX(profile) as mx:
            output = s_client(mx, *AUTH, starttls_smtp=profile.endswith("starttls"))
            assert "verify return:1" in output
            assert "verify error" not in output
            assert "Cipher is TLS_" in output
    with FakeMX("tls-valid-starttls") as mx:
        assert ": OK" in verify(mx, tmp_path)


@pytest.mark.parametrize("profile", sorted(VERIFY_FAILURES))
def test_certificate_profile_s_client_and_verify(profile: str, tmp_path: Path) -> None:
    code, reason = VERIFY_FAILURES[profile].split(" ", 1)
    with FakeMX(profile) as mx:
        assert f"verify error:num={code}:{reason[1:-1]}" in s_client(mx, *AUTH)
        assert f"error {code} at 0 depth lookup: {reason[1:-1]}" in verify(mx, tmp_path)


def test_missing_intermediate_verifies_with_the_intermediate(tmp_path: Path) -> None:
    from fakemx.tls.certs import cert_files

    with FakeMX("4.7.320-missing-intermediate") as mx:
        files = cert_files(mx.state_dir, mx.hostname, mx.profile.tls.cert)
        assert files.intermediate is not None
        assert ": OK" in verify(mx, tmp_path, "-untrusted", str(files.intermediate))


def test_revoked_by_crl_download_and_ocsp(tmp_path: Path) -> None:
    with FakeMX("4.7.320-revoked") as mx:
        assert "verify error" not in s_client(mx, *AUTH)  # without a revocation check
        checked = s_client(mx, *AUTH, "-crl_check", "-crl_download")
        assert "verify error:num=23:certificate revoked" in checked
        assert "error 23 at 0 depth lookup: certificate revoked" in verify(
            mx, tmp_path, "-crl_check", "-crl_download")
        leaf = tmp_path / "leaf.pem"
        url = openssl("x509", "-noout", "-ocsp_uri", "-in", str(leaf)).strip()
        assert url.startswith("http://127.0.0.1:")
        answer = openssl("ocsp", "-issuer", str(mx.ca_path), "-cert", str(leaf), "-url", url,
                         "-CAfile", str(mx.ca_path))
        assert "Response verify OK" in answer
        assert f"{leaf}: revoked" in answer
        assert mx.revocation is not None
        assert {"GET /fakemx.crl", "POST /ocsp revoked"} <= set(mx.revocation.requests)


def test_protocol_and_cipher_profiles() -> None:
    with FakeMX("4.4.317-tls-1.0-1.1-only") as mx:
        # OpenSSL 3 at level 2 refuses the SHA-1 handshake signature TLS 1.1 needs.
        refused = s_client(mx)
        assert "Cipher is (NONE)" in refused
        assert "legacy sigalg disallowed" in refused
        old = s_client(mx, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
        assert "Cipher is ECDHE-ECDSA-" in old
        assert "Protocol  : TLSv1.1" in old
    with FakeMX("4.4.317-no-shared-cipher") as mx:
        assert "sslv3 alert handshake failure" in s_client(mx)
    with FakeMX("4.4.317-handshake-alert") as mx:
        assert "SSL alert number 40" in s_client(mx)
