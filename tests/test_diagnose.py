"""``fakemx diagnose`` in detail: what it sends (never a message), how it reads what it
gets, the verdict as a pure function, and the command line's one-line errors.

The catalog-wide proof is tests/test_diagnose_catalog.py; these are the promises around it.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from tlshelp import served_leaf

from fakemx import FakeMX
from fakemx.cli import main
from fakemx.diagnose import Finding, Options, Severity, Step, Target, Verdict, diagnose
from fakemx.diagnose.certcheck import read_leaf, revocation
from fakemx.diagnose.model import Reply
from fakemx.diagnose.verdict import NO_RCPT, decide
from fakemx.explain import codes
from fakemx.profiles import catalog

QUICK = ("--timeout", "2", "--dns-timeout", "2", "--slow", "1")


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main(["diagnose", *args, *QUICK])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def against(capsys: pytest.CaptureFixture[str], profile: str, *args: str) -> tuple[int, str]:
    """``fakemx diagnose`` against fakemx serving ``profile``: the status and the output."""
    with FakeMX(profile) as mx:
        status, out, _ = run(capsys, f"127.0.0.1:{mx.port}", *args)
    return status, out


# region what goes on the wire ----------------------------------------------------------


def test_it_sends_no_message_and_no_mail_from_unless_asked(
        capsys: pytest.CaptureFixture[str]) -> None:
    with FakeMX() as mx:
        status, out, _ = run(capsys, f"127.0.0.1:{mx.port}", "--ca", str(mx.ca_path))
        assert status == 0, out
        mx.wait_for(sessions=1)
        commands = [e.text.split()[0] for s in mx.sessions for e in s.events
                    if e.kind == "client"]
        assert "MAIL" not in commands, commands
        assert "DATA" not in commands, commands
        assert "sends: EHLO, STARTTLS, QUIT; never DATA, never a message" in out
        assert mx.messages == []


def test_with_rcpt_it_sends_the_null_sender_and_the_recipient_then_quit(
        capsys: pytest.CaptureFixture[str]) -> None:
    with FakeMX() as mx:
        status, out, _ = run(capsys, f"127.0.0.1:{mx.port}", "--ca", str(mx.ca_path),
                             "--rcpt", "bob@example.test", "--helo", "relay.example.net")
        assert status == 0, out
        first = mx.sessions[0]
        sent = [e.text for e in first.events if e.kind == "client"]
        assert sent == ["EHLO relay.example.net", "STARTTLS", "EHLO relay.example.net",
                        "MAIL FROM:<>", "RCPT TO:<bob@example.test>", "QUIT"]
        assert all("DATA" not in e.text for s in mx.sessions for e in s.events)
        assert mx.messages == []


def test_every_step_is_one_line_and_the_timeouts_are_stated(
        capsys: pytest.CaptureFixture[str]) -> None:
    status, out = against(capsys, "4.4.317-greeting-421")
    assert status == 1
    assert "timeouts: DNS 2 s per query, connect 2 s, each reply 2 s" in out
    assert "FAIL greeting  421 4.3.2 mx.fakemx.test Service not available" in out
    assert "verdict: 4.4.317 " in out
    assert "  like catalog profiles: 4.4.317-greeting-421" in out
    assert f"    - {NO_RCPT}" in out


def test_tls_none_skips_starttls_and_require_reports_the_certificate_without_failing(
        capsys: pytest.CaptureFixture[str]) -> None:
    with FakeMX("4.7.320-expired") as mx:
        where = f"127.0.0.1:{mx.port}"
        status, out, _ = run(capsys, where, "--ca", str(mx.ca_path), "--tls", "none")
        assert status == 0, out
        assert "skip starttls" in out
        assert "sends: EHLO, QUIT; never DATA" in out
        status, out, _ = run(capsys, where, "--ca", str(mx.ca_path), "--tls", "require")
        assert status == 0, out
        assert "warn tls" in out
        assert "certificate has expired" in out
        assert "4.7.320 for a relay that verifies the certificate" in out
        status, out, _ = run(capsys, where, "--ca", str(mx.ca_path))
        assert status == 1
        assert "verdict: 4.7.320 " in out


def test_a_server_without_esmtp_gets_helo_and_offers_no_starttls(
        capsys: pytest.CaptureFixture[str]) -> None:
    with FakeMX("helo-only-server") as mx:
        status, out, _ = run(capsys, f"127.0.0.1:{mx.port}", "--ca", str(mx.ca_path))
        sent = [e.text.split()[0] for e in mx.sessions[0].events if e.kind == "client"]
    assert sent == ["EHLO", "HELO"], sent  # then it stops: --tls verify needs STARTTLS
    assert status == 1
    assert "warn ehlo      EHLO " in out
    assert "ok   ehlo      HELO " in out
    assert "verdict: 4.4.317 An old server: 502 5.5.1 to EHLO, 250 to HELO" in out


def test_another_protocols_server_is_named_after_the_probe_speaks_first(
        capsys: pytest.CaptureFixture[str]) -> None:
    status, out = against(capsys, "4.4.318-http-server-on-port")
    assert status == 1
    assert "the answer to EHLO is not SMTP: not an SMTP reply line: b'HTTP/1.1 400" in out
    assert "like catalog profiles: 4.4.318-http-server-on-port, 4.4.318-ssh-server" in out


def test_a_refused_port_exits_1_and_json_carries_the_steps(
        capsys: pytest.CaptureFixture[str]) -> None:
    with FakeMX("4.4.316-connection-refused") as mx:
        status, out, _ = run(capsys, f"127.0.0.1:{mx.port}", "--json")
    report = json.loads(out)
    assert status == 1
    assert report["verdict"]["code"] == "4.4.316"
    assert report["verdict"]["healthy"] is False
    assert [s["name"] for s in report["steps"]] == ["dns", "connect"]
    assert report["steps"][-1]["finding"] == "connect_refused"


def test_the_command_runs_as_a_process_over_ipv6() -> None:
    with FakeMX(host="::1") as mx:
        done = subprocess.run(
            [sys.executable, "-m", "fakemx", "diagnose", f"[::1]:{mx.port}", "--ca",
             str(mx.ca_path), "--json", *QUICK], capture_output=True, text=True, timeout=60,
            check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["target"] == {"name": "::1", "port": mx.port, "mx_lookup": False}
    assert report["verdict"]["code"] == "2.0.0"


@contextmanager
def raw_server(script: bytes) -> Iterator[int]:
    """A loopback server that sends ``script`` to the first client, then waits for it to go."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(script)
            conn.settimeout(5)
            try:
                while conn.recv(4096):
                    pass
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        listener.close()
        thread.join(timeout=5)


def test_server_bytes_are_shown_escaped(capsys: pytest.CaptureFixture[str]) -> None:
    with raw_server(b"554 5.7.1 \x1b[31mgo away\x07\r\n") as port:
        status, out, _ = run(capsys, f"127.0.0.1:{port}")
    assert status == 1
    assert "\x1b" not in out
    assert "\x07" not in out
    assert "\\x1b[31mgo away\\x07" in out


def test_something_that_is_not_smtp_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with raw_server(b"HTTP/1.1 400 Bad Request\r\n\r\n") as port:
        status, out, _ = run(capsys, f"127.0.0.1:{port}")
    assert status == 1
    assert "not SMTP: not an SMTP reply line: b'HTTP/1.1 400 Bad Request'" in out


def test_ocsp_is_asked_when_there_is_no_crl() -> None:
    with FakeMX("4.7.320-revoked") as mx:
        report = diagnose(Options(Target("127.0.0.1", mx.port, False), ca_file=mx.ca_path))
        assert report.verdict.code == "4.7.320"
        assert "(CRL http://127.0.0.1:" in report.verdict.evidence
        # The same certificate with its CRL taken away: the OCSP responder says revoked.
        cert = served_leaf(mx)
        leaf, _ = read_leaf(cert.public_bytes(Encoding.DER), None)
        leaf.crl_urls = []
        status = revocation(leaf, cert, mx.ca_path, timeout=5)
        assert status.revoked is True
        assert "(OCSP http://127.0.0.1:" in status.text


# region the verdict: a pure function -----------------------------------------------------


def verdict_of(*steps: Step, rcpt: str | None = None) -> Verdict:
    options = Options(Target("mx.example.test"), rcpt=rcpt)
    return decide(list(steps), options, catalog(), codes())


def refused(name: str, code: int, text: str) -> Step:
    reply = Reply(code, (text,))
    return Step(name, Severity.FAIL, f"{reply}", Finding.REPLY_REFUSED, reply)


def test_a_masked_banner_and_no_starttls_is_the_inspecting_firewall() -> None:
    masked = Step("greeting", Severity.WARN, "banner masked", Finding.BANNER_MASKED)
    missing = Step("starttls", Severity.FAIL, "not offered", Finding.STARTTLS_NOT_OFFERED)
    assert verdict_of(missing).profiles == ("4.4.317-starttls-not-offered",)
    both = verdict_of(masked, missing)
    assert (both.code, both.profiles) == ("4.4.318", ("4.4.318-firewall-smtp-inspection",))


def test_a_reply_the_catalog_sends_is_explained_by_that_profile() -> None:
    verdict = verdict_of(refused("rcpt", 451, "4.7.1 <a@b.test>: Recipient address rejected:"
                                              " Greylisted for 300 seconds"), rcpt="a@b.test")
    assert verdict.code == "4.4.7"
    assert verdict.profiles == ("4.4.7-greylist-time",)
    assert "the destination greylists" in " ".join(verdict.causes)
    assert NO_RCPT not in verdict.not_probed


def test_an_unknown_reply_falls_back_to_its_enhanced_code_or_its_stage() -> None:
    known = verdict_of(refused("rcpt", 550, "5.1.1 mailbox unavailable here"))
    assert (known.code, known.profiles) == ("5.1.1", ())
    assert known.causes == tuple(codes()["5.1.1"]["causes"])
    greeting = verdict_of(refused("greeting", 421, "go away"))
    assert greeting.code == "4.4.317"
    assert "4.4.7" in {a.code for a in greeting.also}  # a 4xx retried for days
    permanent = verdict_of(refused("mail", 553, "5.7.27 sender domain has no MX"))
    assert (permanent.code, permanent.also) == ("5.7.27", ())


def test_no_failure_is_2_0_0_with_what_was_not_probed() -> None:
    verdict = verdict_of(Step("connect", Severity.OK, "connected"))
    assert verdict.healthy
    assert verdict.code == "2.0.0"
    assert NO_RCPT in verdict.not_probed


# region the command line -------------------------------------------------------------------


@pytest.mark.parametrize(("args", "says"), [
    (["example.test", "--rcpt", "<bob@x>"], "--rcpt '<bob@x>': not a mail address"),
    (["example.test", "--resolver", "dns.example"], "--resolver 'dns.example': give the DNS"),
    (["example.test", "--ca", "/nonexistent.pem"], "--ca /nonexistent.pem: no such file"),
    (["example.test", "--tls", "dane", "--trust-anchor", "/nonexistent.ds"],
     "--trust-anchor /nonexistent.ds: no such file"),
    (["example.test", "--trust-anchor", __file__], "--trust-anchor: only --tls dane"),
    (["127.0.0.1", "--mx-lookup"], "--mx-lookup 127.0.0.1: an address has no MX"),
    (["example.test:99999"], "target 'example.test:99999': '99999' is not a port"),
    (["example.test", "--timeout", "0"], "argument --timeout: '0' is not a number of seconds"),
])
def test_usage_errors_are_one_line(args: list[str], says: str,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["diagnose", *args]) == 2
    err = capsys.readouterr().err
    assert says in err
    assert err.count("\n") == 1
    assert "Traceback" not in err
