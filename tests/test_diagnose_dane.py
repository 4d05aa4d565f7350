"""``fakemx diagnose --tls dane`` and its MTA-STS check, beyond the catalog-wide proof.

tests/test_diagnose_catalog.py shows every DANE and MTA-STS profile named; these
are the promises around it: the DNSSEC judgement is real (a foreign anchor is
bogus, a non-validating resolver is not trusted), the match is shown, the
policy host sees exactly one GET, and bad input is one line. Everything goes
through fakemx's own DNS (``--resolver``) and policy host on loopback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.message
import dns.rdatatype
import dns.rrset
import netns as ns
import pytest
from api_harness import running_api
from unbound import UNBOUND, PrivateUnbound

from fakemx import FakeMX
from fakemx.cli import main
from fakemx.diagnose.dnssec import Security, Validator
from fakemx.diagnose.mtasts import Invalid, Policy, parse
from fakemx.diagnose.verdict import NO_DANE, NO_STS
from fakemx.profiles import load_profile

WAIT = "2.5"  # each connect, reply, handshake and DNS query


def probe(capsys: pytest.CaptureFixture[str], mx: FakeMX, *args: str) -> dict[str, Any]:
    assert mx.dns is not None
    capsys.readouterr()
    main(["diagnose", f"example.test:{mx.port}", "--resolver", f"{mx.dns.host}:{mx.dns.port}",
          "--ca", str(mx.ca_path), "--timeout", WAIT, "--dns-timeout", WAIT, "--json", *args])
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    return report


def lines(report: dict[str, Any], name: str) -> list[str]:
    return [f"{s['severity']} {s['line']}" for s in report["steps"] if s["name"] == name]


def anchor_of(mx: FakeMX) -> str:
    path = mx.state_dir / "dnssec-anchor.ds"
    assert path.exists()
    return str(path)


@pytest.mark.parametrize(("profile", "says"), [
    ("dane-valid-ee", "ok DANE-EE: TLSA 3 1 1 "),
    ("dane-valid-ta", "ok DANE-TA: TLSA 2 0 1 "),
])
def test_a_matching_tlsa_record_is_shown(profile: str, says: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    with FakeMX(load_profile(profile)) as mx:
        report = probe(capsys, mx, "--tls", "dane", "--trust-anchor", anchor_of(mx))
    dane = lines(report, "dane")
    assert dane[0] == "ok MX example.test: DNSSEC secure (validated against the trust anchor" \
                      " test.)"
    assert "(DNSSEC secure" in dane[1]
    assert "STARTTLS is mandatory" in dane[1]
    assert dane[2].startswith(says), dane
    assert report["verdict"]["code"] == "2.0.0"
    assert NO_DANE not in report["verdict"]["not_probed"]


def test_a_foreign_trust_anchor_makes_the_zone_bogus(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "foreign.ds"  # the right name and key tag, another key's digest
    with FakeMX(load_profile("dane-valid-ee")) as mx:
        ours = Path(anchor_of(mx)).read_text().split()
        foreign.write_text(" ".join([*ours[:-1], "00" * 32]) + "\n")
        report = probe(capsys, mx, "--tls", "dane", "--trust-anchor", str(foreign))
    assert report["verdict"]["code"] == "4.7.324"
    assert "the DS for test. names no key of the zone" in report["verdict"]["evidence"]
    assert not lines(report, "connect")  # a DANE relay meeting bogus DNSSEC does not connect


def test_without_an_anchor_a_resolver_that_sets_no_ad_is_not_trusted(
        capsys: pytest.CaptureFixture[str]) -> None:
    # fakemx's DNS is authoritative, not validating: it never sets AD, so a signed zone
    # asked through it is insecure to the probe, as it would be to a relay.
    with FakeMX(load_profile("dane-valid-ee")) as mx:
        report = probe(capsys, mx, "--tls", "dane")
    verdict = report["verdict"]
    assert verdict["code"] == "2.0.0"
    assert "give --trust-anchor" in lines(report, "dane")[0]
    assert ("4.7.5", ["4.7.5-dane-required"]) in [(c["code"], c["profiles"])
                                                   for c in verdict["conditions"]]


def test_the_policy_host_sees_one_get(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeMX(load_profile("mta-sts-valid")) as mx:
        assert mx.mta_sts is not None
        port = mx.mta_sts.port
        report = probe(capsys, mx, "--tls", "require", "--mta-sts-port", str(port))
        requests = [(r.method, r.path, r.status) for r in mx.mta_sts.requests]
    assert requests == [("GET", "/.well-known/mta-sts.txt", 200)]
    sts = lines(report, "mta-sts")
    assert sts == [f"ok https://mta-sts.example.test:{port}/.well-known/mta-sts.txt:"
                   " id=20261130T000000, mode enforce, mx mx.fakemx.test, max_age 86400 s; the"
                   " MX mx.fakemx.test is in it; so its certificate must verify"]
    # enforce: the probe verified the certificate although --tls require only asked to encrypt
    assert any("certificate verified" in line for line in lines(report, "tls"))


def test_mta_sts_is_for_domains_only(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeMX(load_profile("mta-sts-valid")) as mx:
        assert mx.mta_sts is not None
        assert mx.dns is not None
        capsys.readouterr()
        main(["diagnose", f"mx.fakemx.test:{mx.port}", "--host", "--resolver",
              f"{mx.dns.host}:{mx.dns.port}", "--ca", str(mx.ca_path), "--json",
              "--timeout", WAIT, "--dns-timeout", WAIT])
        report = json.loads(capsys.readouterr().out)
        assert not mx.mta_sts.requests
    assert NO_STS in report["verdict"]["not_probed"]


def test_no_mta_sts_record_is_one_info_line(capsys: pytest.CaptureFixture[str]) -> None:
    with FakeMX(load_profile("dane-valid-ee")) as mx:
        report = probe(capsys, mx, "--tls", "require")
    assert lines(report, "mta-sts") == [
        "info TXT _mta-sts.example.test: none (NXDOMAIN): no MTA-STS policy"]


@pytest.mark.parametrize(("text", "policy"), [
    ("version: STSv1\r\nmode: enforce\r\nmx: mx.example.test\r\nmx: *.example.net\r\n"
     "max_age: 86400\r\n", Policy("enforce", ("mx.example.test", "*.example.net"), 86400)),
    ("version: STSv1\nmode: none\nmax_age: 0\n", Policy("none", (), 0)),
])
def test_policies_parse(text: str, policy: Policy) -> None:
    assert parse(text) == policy


@pytest.mark.parametrize(("text", "says"), [
    ("version: STSv1\nmode: enforced\nmx: a.test\nmax_age: 1\n", "mode: enforced"),
    ("version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n", "not STSv1"),
    ("version: STSv1\nmode: enforce\nmax_age: 1\n", "no mx: line"),
    ("version: STSv1\nmode: testing\nmx: a.test\nmax_age: 99999999999\n", "max_age"),
    ("<html>not a policy</html>\n", "is not 'key: value'"),
])
def test_bad_policies_say_why(text: str, says: str) -> None:
    with pytest.raises(Invalid, match=says):
        parse(text)


def test_a_wildcard_covers_one_label() -> None:
    policy = Policy("enforce", ("*.example.test",), 1)
    assert policy.covers("mx.example.test")
    assert not policy.covers("a.mx.example.test")
    assert not policy.covers("example.test")


def test_an_anchor_without_ds_is_one_line(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.ds"
    empty.write_text("; nothing here\n")
    assert main(["diagnose", "127.0.0.1:2", "--tls", "dane", "--trust-anchor", str(empty),
                 "--timeout", WAIT]) == 2
    err = capsys.readouterr().err
    assert f"--trust-anchor {empty}: no DS record in it" in err
    assert err.count("\n") == 1


def test_the_lab_endpoint_probes_dane_and_the_policy_host(tmp_path: Path) -> None:
    # The API passes the server's own trust anchor and policy host port (not 443).
    names = ["4.7.323-tlsa-other-key", "4.7.5-mta-sts-certificate-invalid"]
    with running_api(tmp_path / "state", names, names=names) as lab:
        http = lab.http()
        dane = http.post(f"/api/servers/{names[0]}/diagnose", json={"tls": "dane"}).json()
        sts = http.post(f"/api/servers/{names[1]}/diagnose").json()
    assert (dane["verdict"]["code"], dane["verdict"]["profiles"]) == ("4.7.323", [names[0]])
    assert "validated against the trust anchor test." in dane["text"]
    assert (sts["verdict"]["code"], sts["verdict"]["profiles"]) == ("4.7.5", [names[1]])


@contextmanager
def self_signing_dns() -> Iterator[tuple[str, int]]:
    """A hostile DNS server on loopback: every answer is signed by the name asked itself."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(4096)
            except TimeoutError:
                continue
            query = dns.message.from_wire(data)
            question = query.question[0]
            response = dns.message.make_response(query)
            rdtype = dns.rdatatype.to_text(question.rdtype)
            value = {"DS": "1 13 2 " + "00" * 32, "DNSKEY": "257 3 13 " + "A" * 88}.get(
                rdtype, "3 1 1 " + "00" * 32)
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", rdtype, value))
            response.answer.append(dns.rrset.from_text(
                question.name, 60, "IN", "RRSIG", f"{rdtype} 13 3 60 20990101000000"
                f" 20000101000000 1 {question.name} {'A' * 88}"))
            sock.sendto(response.to_wire(), peer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()
    finally:
        stop.set()
        thread.join()
        sock.close()


def test_a_server_signing_with_the_names_it_answers_is_bogus_not_a_loop() -> None:
    anchor = dns.rrset.from_text("test.", 0, "IN", "DS", "1 13 2 " + "11" * 32)
    with self_signing_dns() as (host, port):
        validator = Validator(host, port, 2.0, anchor)
        tlsa = validator.ask("_25._tcp.mx.fakemx.test", "TLSA")
        ds = validator.ask("example.test", "DS")
    assert (tlsa.security, ds.security) == (Security.BOGUS, Security.BOGUS)
    assert "not a zone above it" in ds.why


# region through a validating resolver: unbound's AD bit, in a network namespace --------------

VALIDATING = {"dane-valid-ee": ("2.0.0", "DNSSEC secure (the AD bit of 127.0.0.1#53)"),
              "4.7.324-tlsa-rrsig-expired": ("4.7.324", "SERVFAIL"),
              "dane-missing-ds-insecure": ("2.0.0", "DNSSEC insecure (the resolver did not set AD")}


@pytest.mark.skipif(ns.why_not() is not None or UNBOUND is None,
                    reason=ns.why_not() or "unbound is missing (Debian package unbound)")
@pytest.mark.parametrize("name", sorted(VALIDATING))
def test_without_an_anchor_a_validating_resolver_decides(name: str, tmp_path: Path) -> None:
    # fakemx (SMTP 127.0.0.2:25, DNS 127.0.0.3:53) and unbound trusting its anchor
    # (127.0.0.1:53) in a namespace; the probe asks unbound and believes its AD bit.
    state = tmp_path / "state"
    with ns.namespace("nameserver 127.0.0.1\n") as netns, \
            ns.fakemx_in(netns, name, state, "127.0.0.2", "--dns-host", "127.0.0.3"):
        (tmp_path / "unbound").mkdir()
        resolver = PrivateUnbound(tmp_path / "unbound", listen="127.0.0.1",
                                  upstream="127.0.0.3", anchor=state / "dnssec-anchor.ds",
                                  prefix=ns.in_namespace(netns))
        resolver.start()
        try:
            probe = subprocess.run(
                [*ns.in_namespace(netns), sys.executable, "-m", "fakemx", "diagnose",
                 "example.test", "--tls", "dane", "--resolver", "127.0.0.1",
                 "--ca", str(state / "ca.pem"), "--timeout", "5", "--dns-timeout", "5",
                 "--json"], capture_output=True, text=True, timeout=60,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
        finally:
            resolver.stop()
    report = json.loads(probe.stdout)
    code, says = VALIDATING[name]
    assert report["verdict"]["code"] == code, report["verdict"]
    assert any(says in line for line in lines(report, "dane")), lines(report, "dane")
    if code != "2.0.0":  # SERVFAIL hides which fault: the profile is among those named
        assert name in report["verdict"]["profiles"], report["verdict"]["profiles"]
