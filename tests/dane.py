"""What the DANE tests share: a namespace whose resolver is a validating unbound in front
of fakemx's signed zone, and fakemx serving a profile there. tests/test_dane_postfix.py
sends through Postfix (and holds the resolver's verdicts), tests/test_dane_exim.py
through Exim.

In the namespace: fakemx's SMTP on 127.0.0.2:25 and its DNS on 127.0.0.3:53, a
private unbound on 127.0.0.1:53 (tests/unbound.py: fakemx's zone apex is its only
trust anchor, so no chain to the real root is needed). glibc passes the resolver's
AD bit on to a program only with ``options trust-ad`` in resolv.conf.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import netns as ns
from probing import AttemptT, LoggedRelay
from unbound import UNBOUND, PrivateUnbound

from fakemx.dns.dnssec import ANCHOR_FILE

FAKEMX_IP = "127.0.0.2"
DNS_IP = "127.0.0.3"
RESOLVER_IP = "127.0.0.1"
DOMAIN = "example.test"
TLSA_NAME = "_25._tcp.mx.fakemx.test"
VERDICT_SECONDS = 30.0


def why_no_unbound() -> str | None:
    return None if UNBOUND else ("unbound is missing (Debian package unbound; scripts/test"
                                 " installs it)")


def validating_namespace() -> Iterator[str]:
    """A namespace whose resolver is the validating unbound (trust-ad: keep its AD bit). A
    DANE test module makes it its fixture:
    ``netns = pytest.fixture(scope="module", name="netns")(validating_namespace)``."""
    with ns.namespace(f"nameserver {RESOLVER_IP}\noptions timeout:2 attempts:1 trust-ad\n") \
            as name:
        yield name


@contextmanager
def served(netns: str, profile: str, state_dir: Path) -> Iterator[PrivateUnbound]:
    """fakemx serving ``profile`` in the namespace, and a fresh unbound trusting its anchor."""
    assert ns.IP is not None
    with ns.fakemx_in(netns, profile, state_dir, FAKEMX_IP, "--dns-host", DNS_IP):
        anchor = state_dir / ANCHOR_FILE
        root = Path(tempfile.mkdtemp(prefix="fakemx-unbound-", dir="/tmp"))
        resolver = PrivateUnbound(root, listen=RESOLVER_IP, upstream=DNS_IP,
                                  anchor=anchor if anchor.is_file() else None,
                                  prefix=[ns.IP, "netns", "exec", netns])
        try:
            resolver.start()
            yield resolver
        finally:
            resolver.stop()
            shutil.rmtree(root, ignore_errors=True)


def first_attempt(relay: LoggedRelay[AttemptT], netns: str, profile: str, state_dir: Path,
                  resolver_expects: tuple[str, str, str]) -> tuple[AttemptT, list[str]]:
    """fakemx serving ``profile``; the relay's first attempt to deliver to bob@example.test,
    and the relay's log lines about the MX host (TLS and DANE details are on lines of their
    own). ``resolver_expects``: (name, type, verdict) of the record that matters, checked
    through the same unbound. The queue is emptied after: no retry reaches the next test."""
    qname, qtype, resolver_verdict = resolver_expects
    with served(netns, profile, state_dir) as resolver:
        seen_by_resolver = resolver.verdict(qname, qtype)
        try:
            verdict = relay.wait_verdict(relay.send(f"bob@{DOMAIN}"),
                                         timeout=VERDICT_SECONDS)[0]
        finally:
            relay.drop_queue()
    assert seen_by_resolver == resolver_verdict, (qname, qtype, resolver.log_text()[-2000:])
    about_mx = [line for line in relay.log.read_text(errors="replace").splitlines()
                if f"[{FAKEMX_IP}]" in line]
    return verdict, about_mx
