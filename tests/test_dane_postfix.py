"""DANE through real peers: Postfix enforcing DANE, resolving through a validating unbound
that trusts only fakemx's anchor, all in a network namespace.

In the namespace: fakemx's SMTP on 127.0.0.2:25 and its DNS on 127.0.0.3:53,
a private unbound on 127.0.0.1:53 (tests/unbound.py: fakemx's zone apex is its
only trust anchor, so no chain to the real root is needed), and a private
Postfix with ``smtp_dns_support_level = dnssec`` and ``smtp_tls_security_level
= dane`` (or ``dane-only``) whose relayhost is ``example.test``. glibc passes
the resolver's AD bit on only with ``options trust-ad`` in resolv.conf.

Each DANE profile is held to its ``[about.postfix]`` verdict, and the
resolver's verdict on the record that matters (secure, insecure, or bogus:
SERVFAIL) to the table below; delv and ``openssl s_client -dane_tlsa_rrdata``
are the second clients (tests/test_dnssec.py).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import netns as ns
import pytest
from dane import (
    DOMAIN,
    TLSA_NAME,
    first_attempt,
    validating_namespace,
    why_no_unbound,
)
from postfix import PrivatePostfix

from fakemx.profiles import catalog, load_profile

# profile -> (name, type, what the validating resolver makes of it)
RESOLVER_VERDICTS: dict[str, tuple[str, str, str]] = {
    "dane-valid-ee": (TLSA_NAME, "TLSA", "secure"),
    "dane-valid-ta": (TLSA_NAME, "TLSA", "secure"),
    "4.7.321-dane-starttls-not-offered": (TLSA_NAME, "TLSA", "secure"),
    "4.7.321-tlsa-unusable-no-starttls": (TLSA_NAME, "TLSA", "secure"),
    "4.7.322-dane-certificate-expired": (TLSA_NAME, "TLSA", "secure"),
    "4.7.323-tlsa-other-key": (TLSA_NAME, "TLSA", "secure"),
    "4.7.323-tlsa-wrong-selector": (TLSA_NAME, "TLSA", "secure"),
    "4.7.323-tlsa-wrong-usage": (TLSA_NAME, "TLSA", "secure"),
    "4.7.323-tlsa-ta-not-in-chain": (TLSA_NAME, "TLSA", "secure"),
    "4.7.324-tlsa-rrsig-expired": (TLSA_NAME, "TLSA", "bogus"),
    "4.7.324-tlsa-rrsig-not-yet-valid": (TLSA_NAME, "TLSA", "bogus"),
    "4.7.324-tlsa-bad-signature": (TLSA_NAME, "TLSA", "bogus"),
    "4.7.324-tlsa-servfail": (TLSA_NAME, "TLSA", "servfail"),
    "4.7.324-mx-rrsig-expired": (DOMAIN, "MX", "bogus"),
    "4.7.324-ds-mismatch": (DOMAIN, "MX", "bogus"),
    "4.7.324-ds-to-unsigned-zone": (DOMAIN, "MX", "bogus"),
    "dane-missing-ds-insecure": (DOMAIN, "MX", "insecure"),
    "4.7.325-dane-certificate-host-mismatch": (TLSA_NAME, "TLSA", "secure"),
    "4.7.5-dane-required": (TLSA_NAME, "TLSA", "insecure"),
    "4.7.5-dane-handshake-failure": (TLSA_NAME, "TLSA", "secure"),
}

DANE_SETTINGS = {
    "relayhost": DOMAIN,
    "smtp_host_lookup": "dns",
    "disable_dns_lookups": "no",
    "smtp_dns_support_level": "dnssec",
    "smtp_tls_security_level": "dane",
    "smtp_tls_loglevel": "1",
    **{f"smtp_{stage}_timeout": "3s" for stage in ("connect", "helo", "starttls")},
    "minimal_backoff_time": "60s",  # one attempt per test: no retry reaches the next one
    "maximal_backoff_time": "60s",
    # A fresh smtp(8) per delivery: each caches TLSA records for their TTL, and the
    # next test's fakemx has other keys under the same names.
    "max_use": "1",
}


def _why_not() -> str | None:
    return ns.why_not() or why_no_unbound()


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


netns = pytest.fixture(scope="module", name="netns")(validating_namespace)


@pytest.fixture(scope="module")
def relays(netns: str) -> Iterator[Callable[[str], PrivatePostfix]]:
    """The private Postfix for a security level (dane, dane-only), started on first use."""
    assert ns.IP is not None
    started: dict[str, PrivatePostfix] = {}
    roots: list[Path] = []

    def relay(level: str) -> PrivatePostfix:
        if level not in started:
            root = Path(tempfile.mkdtemp(prefix="fakemx-dane-postfix-", dir="/tmp"))
            roots.append(root)
            instance = PrivatePostfix(root, settings={**DANE_SETTINGS,
                                                      "smtp_tls_security_level": level},
                                      prefix=[ns.IP, "netns", "exec", netns], routed=False)
            instance.start()
            started[level] = instance
        return started[level]

    try:
        yield relay
    finally:
        for instance in started.values():
            instance.stop()
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


def test_every_dane_profile_is_here() -> None:
    """A new DANE profile (an [about.postfix] at level dane or dane-only) gets a row above."""
    dane = {p.name for p in catalog()
            if p.about is not None and p.about.postfix is not None
            and p.about.postfix.tls in ("dane", "dane-only")}
    assert dane == set(RESOLVER_VERDICTS)


@pytest.mark.parametrize("name", sorted(RESOLVER_VERDICTS))
def test_dane_verdicts(name: str, relays: Callable[[str], PrivatePostfix], netns: str,
                       tmp_path: Path) -> None:
    about = load_profile(name).about
    assert about is not None
    expected = about.postfix
    assert expected is not None, f"{name}: declare [about.postfix]"
    state = tmp_path / "state"
    verdict, about_mx = first_attempt(relays(expected.tls), netns, name, state,
                                      RESOLVER_VERDICTS[name])
    assert (verdict.status, verdict.dsn) == (expected.status, expected.dsn), (verdict, about_mx)
    assert expected.reason in verdict.reason, (verdict, about_mx)
    if expected.log:
        assert any(expected.log in line for line in about_mx), about_mx
    assert ns.stored_messages(state) == (1 if expected.status == "sent" else 0)
