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

from collections.abc import Iterator
from pathlib import Path

import netns as ns
import pytest
from postfix import PrivatePostfix
from probing import started

from fakemx.profiles import load_profile

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
    "relayhost": ns.DOMAIN,
    "smtp_host_lookup": "dns",
    "disable_dns_lookups": "no",
    "smtp_tls_security_level": "none",
    "smtp_connect_timeout": "3s",
    "smtp_helo_timeout": "3s",
    "minimal_backoff_time": "60s",  # one attempt per test: no retry reaches the next one
    "maximal_backoff_time": "60s",
}


pytestmark = pytest.mark.skipif(ns.why_not() is not None, reason=ns.why_not() or "")
netns = pytest.fixture(scope="module", name="netns")(ns.resolving_through_fakemx)


@pytest.fixture(scope="module")
def relay(netns: str) -> Iterator[PrivatePostfix]:
    """A private Postfix whose every process lives in the namespace."""
    with started(lambda root: PrivatePostfix(root, settings=DNS_SETTINGS,
                                             prefix=ns.in_namespace(netns), routed=False),
                 "fakemx-dns-postfix-") as instance:
        yield instance


def test_healthy_mx_delivers_into_fakemx(relay: PrivatePostfix, netns: str,
                                         tmp_path: Path) -> None:
    """Positive control: the MX lookup through fakemx's DNS leads Postfix to fakemx."""
    verdict, stored = ns.healthy_verdict(relay, netns, tmp_path)
    assert (verdict.status, verdict.dsn) == ("sent", "2.0.0"), verdict
    assert verdict.relay == f"mx.{ns.DOMAIN}[{ns.FAKEMX_IP}]:25", verdict
    assert stored == 1


@pytest.mark.parametrize("name", RELAY_PROFILES)
def test_postfix_verdict_through_fakemx_dns(
    name: str, relay: PrivatePostfix, netns: str, tmp_path: Path
) -> None:
    about = load_profile(name).about
    assert about is not None
    assert about.postfix is not None, f"{name}: declare [about.postfix]"
    expected = about.postfix
    state = tmp_path / "state"
    verdict = ns.first_verdict(relay, netns, name, state)
    assert (verdict.status, verdict.dsn) == (expected.status, expected.dsn), verdict
    assert expected.reason in verdict.reason, verdict
    # Mail that was sent went to fakemx; any other verdict left nothing there.
    assert ns.stored_messages(state) == (1 if expected.status == "sent" else 0)
