"""MTA-STS (RFC 8461) against fakemx: the policy host on the wire, and what a sender makes of it.

Beside the real relay (tests/test_mtasts_postfix.py: Postfix with
postfix-mta-sts-resolver), a sender that follows RFC 8461 5.1 is written out
below with real clients: dnspython for the _mta-sts TXT
record through fakemx's DNS, http.client over ssl for the policy (trusting
fakemx's CA, SNI mta-sts.example.test, no redirects), smtplib with STARTTLS
verified against the policy for the MX. Its verdict is the RFC 8460 (TLS-RPT)
result type; curl is the second client for every policy fetch.
"""

from __future__ import annotations

import http.client
import shutil
import smtplib
import socket
import ssl
import subprocess
from pathlib import Path

import dns.resolver
import pytest

from fakemx import FakeMX
from fakemx.mtasts.policy import POLICY_PATH
from fakemx.tls.certs import CA_FILE

DOMAIN = "example.test"
MX_HOST = "mx.fakemx.test"
FETCH_TIMEOUT_SECONDS = 2.0
CURL = shutil.which("curl")

# profile -> (what the sender reports, whether it delivered)
OUTCOMES: dict[str, tuple[str, bool]] = {
    "mta-sts-valid": ("success", True),
    "4.4.8-mta-sts-mx-mismatch": ("validation-failure", False),
    "4.7.5-mta-sts-certificate-invalid": ("certificate-not-trusted", False),
    "mta-sts-policy-host-down": ("sts-policy-fetch-error", True),
    "mta-sts-policy-host-timeout": ("sts-policy-fetch-error", True),
    "mta-sts-policy-not-found": ("sts-policy-fetch-error", True),
    "mta-sts-policy-server-error": ("sts-policy-fetch-error", True),
    "mta-sts-policy-invalid": ("sts-policy-invalid", True),
    "mta-sts-policy-host-untrusted": ("sts-webpki-invalid", True),
}


class NoPolicy(Exception):
    """Why no valid policy was fetched: its TLS-RPT result type."""


def resolver_of(mx: FakeMX) -> dns.resolver.Resolver:
    assert mx.dns is not None
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers, resolver.port = [mx.dns.host], mx.dns.port
    resolver.cache = None
    return resolver


def policy_id(mx: FakeMX) -> str:
    """The id in the _mta-sts TXT record (RFC 8461 3.1)."""
    txt = b"".join(resolver_of(mx).resolve(f"_mta-sts.{DOMAIN}", "TXT")[0].strings).decode()
    fields = dict(part.strip().split("=", 1) for part in txt.split(";") if "=" in part)
    assert fields["v"] == "STSv1", txt
    return fields["id"]


def fetch_policy(mx: FakeMX) -> dict[str, list[str]]:
    """The policy over HTTPS (RFC 8461 3.3); NoPolicy if there is none to use."""
    assert mx.mta_sts is not None
    resolver = resolver_of(mx)
    context = ssl.create_default_context(cafile=str(mx.state_dir / CA_FILE))
    address = resolver.resolve(f"mta-sts.{DOMAIN}", "A")[0].to_text()
    connection = http.client.HTTPConnection(address, mx.mta_sts.port,
                                            timeout=FETCH_TIMEOUT_SECONDS)
    try:
        # SNI and the name checked are the policy host's, not the address connected to.
        raw = socket.create_connection((address, mx.mta_sts.port), timeout=FETCH_TIMEOUT_SECONDS)
        connection.sock = context.wrap_socket(raw, server_hostname=f"mta-sts.{DOMAIN}")
        connection.request("GET", POLICY_PATH, headers={"Host": f"mta-sts.{DOMAIN}"})
        answer = connection.getresponse()
        body = answer.read()
    except ssl.SSLCertVerificationError as exc:
        raise NoPolicy("sts-webpki-invalid") from exc
    except OSError as exc:  # refused, timed out, reset
        raise NoPolicy("sts-policy-fetch-error") from exc
    finally:
        connection.close()
    if answer.status != 200:  # RFC 8461 3.3: no redirects, only 200
        raise NoPolicy("sts-policy-fetch-error")
    return parse_policy(body)


def parse_policy(body: bytes) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for line in body.decode().splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), []).append(value.strip())
    valid = (fields.get("version") == ["STSv1"]
             and fields.get("mode", [""])[0] in ("enforce", "testing", "none")
             and fields.get("max_age", [""])[0].isdigit()
             and (fields.get("mode") == ["none"] or fields.get("mx")))
    if not valid:
        raise NoPolicy("sts-policy-invalid")
    return fields


def mx_matches(pattern: str, host: str) -> bool:
    """RFC 8461 4.1: exact, or ``*.`` matching one label."""
    if pattern.startswith("*."):
        return host.split(".", 1)[-1] == pattern[2:] and host.count(".") == pattern.count(".")
    return pattern == host


class Sender:
    """RFC 8461 5.1: with an enforce policy, only listed MX hosts over validated TLS;
    without a usable policy, as if the domain had none (opportunistic TLS).

    It keeps the policy it fetched with the TXT record's id, and fetches again
    when the id changes (3.3) or, with ``honours_id = False``, never (the bug).
    """

    def __init__(self, *, honours_id: bool = True) -> None:
        self.honours_id = honours_id
        self.cached: tuple[str, dict[str, list[str]]] | None = None
        self.fetches = 0

    def policy(self, mx: FakeMX) -> dict[str, list[str]]:
        current = policy_id(mx)
        if self.cached is not None and (self.cached[0] == current or not self.honours_id):
            return self.cached[1]
        self.fetches += 1
        policy = fetch_policy(mx)
        self.cached = (current, policy)
        return policy

    def send(self, mx: FakeMX) -> tuple[str, bool]:
        return deliver(mx, self)


def deliver(mx: FakeMX, sender: Sender) -> tuple[str, bool]:
    try:
        policy: dict[str, list[str]] | None = sender.policy(mx)
        result = "success"
    except NoPolicy as failure:
        result, policy = str(failure), None
    enforce = policy is not None and policy["mode"] == ["enforce"]
    if enforce and policy is not None and not any(mx_matches(p, MX_HOST) for p in policy["mx"]):
        return "validation-failure", False
    context = ssl.create_default_context(cafile=str(mx.state_dir / CA_FILE))
    if not enforce:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with smtplib.SMTP(mx.host, mx.port, timeout=10) as client:
        client.ehlo("sender.fakemx.test")
        assert client.has_extn("starttls")
        assert client.docmd("STARTTLS")[0] == 220
        try:  # the certificate is checked against the MX host's name, not the address
            client.sock = context.wrap_socket(client.sock, server_hostname=MX_HOST)
        except ssl.SSLCertVerificationError:
            return "certificate-not-trusted", False
        client.file = None  # smtplib reads replies through a file made from the new socket
        client.ehlo("sender.fakemx.test")
        client.sendmail("alice@sender.fakemx.test", [f"bob@{DOMAIN}"], b"Subject: sts\r\n\r\nx\r\n")
    return result, True


@pytest.mark.parametrize("name", sorted(OUTCOMES))
def test_sender_verdict(name: str, tmp_path: Path) -> None:
    with FakeMX(name, state_dir=tmp_path) as mx:
        outcome = Sender().send(mx)
        delivered = len(mx.messages)
        assert mx.mta_sts is not None
        fetched = [r.status for r in mx.mta_sts.requests]
    assert outcome == OUTCOMES[name]
    assert delivered == (1 if OUTCOMES[name][1] else 0)
    if name in ("mta-sts-valid", "mta-sts-policy-invalid", "4.4.8-mta-sts-mx-mismatch"):
        assert fetched == [200]
    if name in ("mta-sts-policy-not-found", "mta-sts-policy-server-error"):
        assert fetched in ([404], [500])


class Clock:
    """fakemx's clock, moved by the test (the DNS windows and the policy change on it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("honours_id", "later"), [
    (True, ("validation-failure", False)),  # fetched again: the new policy lacks the MX
    (False, ("success", True)),  # the cached policy, never fetched again: the bug it catches
])
def test_a_changed_policy_id_is_fetched_again(honours_id: bool, later: tuple[str, bool],
                                              tmp_path: Path) -> None:
    clock = Clock()
    sender = Sender(honours_id=honours_id)
    with FakeMX("4.4.8-mta-sts-policy-changed", state_dir=tmp_path, clock=clock) as mx:
        assert policy_id(mx) == "1"
        assert sender.send(mx) == ("success", True)
        assert sender.send(mx) == ("success", True)  # the same id: the cached policy
        clock.now += 61
        assert policy_id(mx) == "2"
        assert sender.send(mx) == later
        delivered = len(mx.messages)
    assert sender.fetches == (2 if honours_id else 1)
    assert delivered == (2 if honours_id else 3)


def test_loading_profiles_starts_and_stops_the_policy_host(tmp_path: Path) -> None:
    """A run-time switch (mx.load, the API's PUT /profile) brings the policy host along."""
    with FakeMX("sink", state_dir=tmp_path) as mx:
        assert mx.mta_sts is None
        mx.load("mta-sts-valid")
        assert mx.mta_sts is not None
        port = mx.mta_sts.port
        assert Sender().send(mx) == ("success", True)
        mx.load("mta-sts-policy-not-found")  # another policy: the same port
        assert mx.mta_sts is not None
        assert mx.mta_sts.port == port
        assert Sender().send(mx) == ("sts-policy-fetch-error", True)
        mx.load("sink")
        assert mx.mta_sts is None
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((mx.host, port), timeout=2)


# profile -> (curl's exit code, what its output shows)
CURL_SEES = {
    "mta-sts-valid": (0, "mode: enforce"),
    "mta-sts-policy-host-down": (7, ""),  # couldn't connect
    "mta-sts-policy-host-timeout": (28, ""),  # operation timed out
    "mta-sts-policy-not-found": (22, "404"),  # --fail: HTTP error
    "mta-sts-policy-server-error": (22, "500"),
    "mta-sts-policy-invalid": (0, "mode: enforced"),
    "mta-sts-policy-host-untrusted": (60, ""),  # peer certificate cannot be authenticated
}


@pytest.mark.parametrize("name", sorted(CURL_SEES))
def test_curl_fetches_the_policy(name: str, tmp_path: Path) -> None:
    if CURL is None:
        pytest.skip("curl is missing")
    with FakeMX(name, state_dir=tmp_path) as mx:
        assert mx.mta_sts is not None
        url = f"https://mta-sts.{DOMAIN}:{mx.mta_sts.port}{POLICY_PATH}"
        result = subprocess.run(
            [CURL, "--silent", "--show-error", "--fail", "--max-time", "2",
             "--cacert", str(mx.state_dir / CA_FILE),
             "--resolve", f"mta-sts.{DOMAIN}:{mx.mta_sts.port}:{mx.host}", url],
            capture_output=True, text=True, timeout=30, check=False)
    code, shows = CURL_SEES[name]
    assert result.returncode == code, result
    assert shows in result.stdout + result.stderr
