"""fakemx's signed zone, TLSA records and trust anchor, checked by independent clients:
BIND's ``delv`` validates every answer against the anchor, ``openssl s_client
-dane_tlsa_rrdata`` matches TLSA records against the certificate fakemx presents.

The end-to-end proof through Postfix and unbound is tests/test_dane_postfix.py.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import pytest

from fakemx import FakeMX, ProfileError, profile_from_data
from fakemx.cli import main
from fakemx.dns.dnssec import ANCHOR_FILE, ZoneKeys
from fakemx.dns.model import Dns
from fakemx.dns.server import DnsServer

DELV = shutil.which("delv")
OPENSSL = shutil.which("openssl")
TLSA_NAME = "_25._tcp.mx.fakemx.test"

ZONE = {
    "dnssec": {},
    "records": [
        {"name": "example.test", "type": "MX", "value": "10 mx.fakemx.test"},
        {"name": "mx.fakemx.test", "type": "A", "value": "{fakemx}"},
        {"name": TLSA_NAME, "type": "TLSA", "value": "3 1 1 " + "ab" * 32},
    ],
}


def delv(server: DnsServer, tmp_path: Path, name: str, rdtype: str,
         anchor: str | None = None) -> subprocess.CompletedProcess[str]:
    """``delv`` asking ``server``, trusting its anchor (or ``anchor``) for the zone apex."""
    if DELV is None:
        pytest.skip("delv is missing (Debian package bind9-dnsutils)")
    owner, _, _, key_tag, algorithm, digest_type, digest = (anchor or server.trust_anchor
                                                            or "").split()
    anchors = tmp_path / "anchors.conf"
    anchors.write_text(f'trust-anchors {{ {owner} static-ds {key_tag} {algorithm} '
                       f'{digest_type} "{digest}"; }};\n')
    return subprocess.run([DELV, "-a", str(anchors), f"+root={owner}", "-p", str(server.port),
                           f"@{server.host}", name, rdtype],
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize(("name", "rdtype", "says"), [
    ("example.test", "MX", "; fully validated"),
    (TLSA_NAME, "TLSA", "; fully validated"),
    ("nope.example.test", "A", "; negative response, fully validated"),  # NXDOMAIN
    ("mx.fakemx.test", "AAAA", "; negative response, fully validated"),  # NODATA
    ("_tcp.mx.fakemx.test", "A", "; negative response, fully validated"),  # empty non-terminal
    ("test", "DNSKEY", "; fully validated"),
])
def test_delv_validates_the_signed_zone(name: str, rdtype: str, says: str,
                                        tmp_path: Path) -> None:
    with DnsServer(Dns.model_validate(ZONE)) as server:
        result = delv(server, tmp_path, name, rdtype)
    assert result.stdout.startswith(says), (result.stdout, result.stderr)


def test_delv_finds_a_foreign_anchor_bogus(tmp_path: Path) -> None:
    """The control for the above: another key's anchor, and nothing validates."""
    other = ZoneKeys.generate().trust_anchor(dns.name.from_text("test"))
    with DnsServer(Dns.model_validate(ZONE)) as server:
        result = delv(server, tmp_path, "example.test", "MX", anchor=other)
    assert "resolution failed" in result.stderr, result


@pytest.mark.parametrize(("fault", "reason"), [
    ("expired", "RRSIG has expired"),
    ("not_yet_valid", "RRSIG validity period has not begun"),
    ("bad", "RRSIG failed to verify"),
    ("missing", "insecurity proof failed"),
])
def test_rrsig_faults_are_bogus_to_delv(fault: str, reason: str, tmp_path: Path) -> None:
    spec = Dns.model_validate({**ZONE, "faults": [
        {"name": "mx.fakemx.test", "type": "A", "rrsig": fault}]})
    with DnsServer(spec) as server:
        broken = delv(server, tmp_path, "mx.fakemx.test", "A")
        healthy = delv(server, tmp_path, "example.test", "MX")  # the rest of the zone
    assert f"resolution failed: {reason}" in broken.stderr, broken
    assert broken.stdout == ""
    assert healthy.stdout.startswith("; fully validated"), healthy


@pytest.mark.parametrize(("ds", "signed", "says"), [
    ("valid", True, "; fully validated"),
    ("missing", True, "; unsigned answer"),  # a missing DS chain: provably insecure
    ("missing", False, "; unsigned answer"),  # an unsigned delegation
    ("wrong", True, "resolution failed: broken trust chain"),
    ("valid", False, "resolution failed: insecurity proof failed"),  # a DS, no signatures
])
def test_delegations_to_delv(ds: str, signed: bool, says: str, tmp_path: Path) -> None:
    """example.test as a zone of its own below the anchor, its DS right, missing or wrong."""
    spec = Dns.model_validate({**ZONE, "dnssec": {"child": {
        "name": "example.test", "ds": ds, "signed": signed}}})
    with DnsServer(spec) as server:
        child = delv(server, tmp_path, "example.test", "MX")
        nxdomain = delv(server, tmp_path, "nope.example.test", "A")
        parent = delv(server, tmp_path, "mx.fakemx.test", "A")  # the apex's own names
    assert says in child.stdout + child.stderr, child
    if not says.startswith("resolution failed"):
        assert nxdomain.stdout.startswith("; negative response, " + says[2:]), nxdomain
    assert parent.stdout.startswith("; fully validated"), parent


def test_signatures_only_for_a_client_that_sets_do() -> None:
    """RFC 3225: no RRSIGs without the DO bit; the DNSKEY RRset is the zone's either way."""
    with DnsServer(Dns.model_validate(ZONE)) as server:
        plain = dns.query.udp(dns.message.make_query("example.test", "MX", use_edns=0),
                              server.host, port=server.port, timeout=5)
        keys = dns.query.udp(dns.message.make_query("test", "DNSKEY"), server.host,
                             port=server.port, timeout=5)
        signed = dns.query.udp(dns.message.make_query("example.test", "MX", want_dnssec=True),
                               server.host, port=server.port, timeout=5)
    assert [r.rdtype for r in plain.answer] == [dns.rdatatype.MX]
    assert not plain.ednsflags & dns.flags.DO
    assert [r.rdtype for r in keys.answer] == [dns.rdatatype.DNSKEY]
    assert sorted(r.flags for r in keys.answer[0]) == [256, 257]  # ZSK, KSK
    assert [r.rdtype for r in signed.answer] == [dns.rdatatype.MX, dns.rdatatype.RRSIG]
    assert signed.ednsflags & dns.flags.DO


def test_keys_and_anchor_outlive_a_restart(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    assert main(["dns", "dane-valid-ee", "--trust-anchor", "--state-dir", str(state)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("test. IN DS ")
    assert (state / ANCHOR_FILE).read_text() == printed
    assert main(["dns", "dane-valid-ee", "--trust-anchor", "--state-dir", str(state)]) == 0
    assert capsys.readouterr().out == printed
    # The anchor is what the running server's zone validates with.
    with FakeMX("dane-valid-ee", state_dir=state) as mx:
        assert mx.dns is not None
        assert mx.dns.trust_anchor == printed
        assert delv(mx.dns, tmp_path, "example.test", "MX").stdout.startswith(
            "; fully validated")


def test_trust_anchor_of_an_unsigned_zone_is_one_line(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dns", "4.4.312-servfail", "--trust-anchor",
                 "--state-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "fakemx: profile '4.4.312-servfail': the zone is not signed, so it has no trust"
        " anchor (add [dns.dnssec] to sign it)\n")


@pytest.mark.parametrize(("data", "message"), [
    ({"records": [{"name": "a.test", "type": "A", "value": "{fakemx}"}],
      "faults": [{"name": "a.test", "rrsig": "expired"}]},
     "dns: an rrsig fault needs a signed zone: add [dns.dnssec]"),
    ({"records": [{"name": TLSA_NAME, "type": "TLSA", "value": "3 1 {leaf-spki-sha256}"}]},
     "must be 'USAGE SELECTOR MATCHING-TYPE DATA'"),
    ({"records": [{"name": TLSA_NAME, "type": "TLSA", "value": "3 1 1 {leaf-sha256}"}]},
     "TLSA data '{leaf-sha256}' is not one of {leaf-spki-sha256}"),
    ({"records": [{"name": TLSA_NAME, "type": "TLSA", "value": "3 1 1 xyz"}]},
     "TLSA data 'xyz' is neither hex nor one of"),
])
def test_bad_dnssec_and_tlsa_settings_are_one_line(data: dict[str, object],
                                                   message: str) -> None:
    with pytest.raises(ProfileError) as caught:
        profile_from_data({"dns": data}, "test")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def s_client(mx: FakeMX, rrdata: str) -> subprocess.CompletedProcess[str]:
    """``openssl s_client`` over STARTTLS, authenticating fakemx by ``rrdata`` alone."""
    if OPENSSL is None:
        pytest.skip("openssl is missing")
    return subprocess.run([OPENSSL, "s_client", "-starttls", "smtp", "-brief",
                           "-connect", f"{mx.host}:{mx.port}", "-verify_return_error",
                           "-dane_tlsa_domain", "mx.fakemx.test", "-dane_tlsa_rrdata", rrdata],
                          input="QUIT\n", capture_output=True, text=True, timeout=30,
                          check=False)


def zone_tlsa(mx: FakeMX) -> str:
    assert mx.dns is not None
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = [mx.dns.host], mx.dns.port
    return str(resolver.resolve(TLSA_NAME, "TLSA")[0])


NO_MATCH = "verify error:num=65:no matching DANE TLSA records"


@pytest.mark.parametrize(("profile", "openssl_says"), [
    ("dane-valid-ee", "DANE TLSA 3 1 1 "),
    ("dane-valid-ta", "DANE TLSA 2 0 1 "),
    ("4.7.323-tlsa-other-key", NO_MATCH),
    ("4.7.323-tlsa-wrong-selector", NO_MATCH),
    ("4.7.323-tlsa-wrong-usage", NO_MATCH),
    ("4.7.323-tlsa-ta-not-in-chain", NO_MATCH),
    # DANE-TA validates the chain: dates and the name count (RFC 7672 3.1.2, 3.2.3)
    ("4.7.322-dane-certificate-expired", "verify error:num=10:certificate has expired"),
    ("4.7.325-dane-certificate-host-mismatch", "verify error:num=62:hostname mismatch"),
    # A record that matches, and no handshake to match it against: the server's alert.
    ("4.7.5-dane-handshake-failure", "alert handshake failure"),
])
def test_openssl_matches_the_zone_tlsa_record(profile: str, openssl_says: str,
                                              tmp_path: Path) -> None:
    """The record the zone serves, against the certificate fakemx presents."""
    with FakeMX(profile, state_dir=tmp_path) as mx:
        result = s_client(mx, zone_tlsa(mx))
    assert openssl_says in result.stderr, result.stderr
    verified = openssl_says.startswith("DANE TLSA")
    assert ("Verification: OK" in result.stderr) is verified
    assert (result.returncode == 0) is verified
