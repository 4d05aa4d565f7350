"""A real relay resolving through fakemx's DNS: Postfix in a network namespace.

The namespace has only a loopback interface and its own /etc/resolv.conf
(``/etc/netns/NAME/resolv.conf``, which ``ip netns exec`` mounts over
/etc/resolv.conf for the processes it starts), so the machine's resolver
is never touched. Inside it run fakemx (``fakemx serve``: SMTP on
127.0.0.2:25, DNS on 127.0.0.2:53, the ports an MX lookup implies) and a
private Postfix instance (own config and queue, no smtpd listening) whose
relayhost is ``example.test`` *without* brackets, so Postfix looks up its MX
(``smtp_host_lookup = dns``). fakemx is on 127.0.0.2 because Postfix treats
its own addresses (127.0.0.1 with ``inet_interfaces = loopback-only``) as
"mail loops back to myself".

Each DNS profile that declares ``[about.postfix]`` is held to it here.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import netns as ns
import pytest
from postfix import PrivatePostfix

from fakemx.profiles import load_profile

FAKEMX_IP = "127.0.0.2"
DOMAIN = "example.test"
VERDICT_SECONDS = 30.0

# The profiles a relay is held to (each declares [about.postfix]); the stale-cache
# profile needs a caching resolver, which Postfix is not: tests/test_dns.py.
RELAY_PROFILES = [
    "4.4.312-servfail",
    "4.4.312-nxdomain",
    "4.4.312-refused",
    "4.4.312-no-answer",
    "4.4.312-slow",
    "4.4.312-no-mx-implicit-a",
    "4.4.312-null-mx",
    "4.4.312-mx-target-no-address",
    "4.4.312-cname-loop",
    "4.4.312-truncated-tcp-refused",
]

# The relay's only route is its relayhost, looked up as an MX through fakemx's DNS.
DNS_SETTINGS = {
    "relayhost": DOMAIN,
    "smtp_host_lookup": "dns",
    "disable_dns_lookups": "no",
    "smtp_tls_security_level": "none",
    "smtp_connect_timeout": "3s",
    "smtp_helo_timeout": "3s",
    "minimal_backoff_time": "60s",  # one attempt per test: no retry reaches the next one
    "maximal_backoff_time": "60s",
}


pytestmark = pytest.mark.skipif(ns.why_not() is not None, reason=ns.why_not() or "")


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """A namespace whose resolver is fakemx's DNS server."""
    # One try of one second: resolver failures show up fast (glibc's default is 5 s x 2).
    with ns.namespace(f"nameserver {FAKEMX_IP}\noptions timeout:1 attempts:1\n") as name:
        yield name


@pytest.fixture(scope="module")
def relay(netns: str) -> Iterator[PrivatePostfix]:
    """A private Postfix whose every process lives in the namespace."""
    assert ns.IP is not None
    root = Path(tempfile.mkdtemp(prefix="fakemx-dns-postfix-", dir="/tmp"))
    instance = PrivatePostfix(root, settings=DNS_SETTINGS, prefix=[ns.IP, "netns", "exec", netns],
                              routed=False)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def fakemx_in(netns: str, profile: str, state_dir: Path) -> Iterator[None]:
    """``fakemx serve PROFILE`` inside the namespace: SMTP on :25, DNS on :53."""
    with ns.fakemx_in(netns, profile, state_dir, FAKEMX_IP):
        yield



def test_healthy_mx_delivers_into_fakemx(relay: PrivatePostfix, netns: str,
                                         tmp_path: Path) -> None:
    """Positive control: the MX lookup through fakemx's DNS leads Postfix to fakemx."""
    profile = tmp_path / "dns-healthy.toml"
    profile.write_text(ns.HEALTHY_PROFILE)
    state = tmp_path / "state"
    with fakemx_in(netns, str(profile), state):
        verdict = relay.wait_verdict(relay.send(f"bob@{DOMAIN}"), timeout=VERDICT_SECONDS)[0]
    assert (verdict.status, verdict.dsn) == ("sent", "2.0.0"), verdict
    assert verdict.relay == f"mx.{DOMAIN}[{FAKEMX_IP}]:25", verdict
    assert ns.stored_messages(state) == 1


@pytest.mark.parametrize("name", RELAY_PROFILES)
def test_postfix_verdict_through_fakemx_dns(
    name: str, relay: PrivatePostfix, netns: str, tmp_path: Path
) -> None:
    about = load_profile(name).about
    assert about is not None
    assert about.postfix is not None, f"{name}: declare [about.postfix]"
    expected = about.postfix
    state = tmp_path / "state"
    try:
        with fakemx_in(netns, name, state):
            verdict = relay.wait_verdict(relay.send(f"bob@{DOMAIN}"),
                                         timeout=VERDICT_SECONDS)[0]
    finally:
        relay.drop_queue()
    assert (verdict.status, verdict.dsn) == (expected.status, expected.dsn), verdict
    assert expected.reason in verdict.reason, verdict
    # Mail that was sent went to fakemx; any other verdict left nothing there.
    assert ns.stored_messages(state) == (1 if expected.status == "sent" else 0)
