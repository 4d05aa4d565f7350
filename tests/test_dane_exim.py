"""DANE through Exim: Debian's Exim 4.96 (GnuTLS, built with DANE) enforcing DANE,
resolving through the validating unbound that trusts only fakemx's anchor, in a
network namespace (tests/dane.py, shared with tests/test_dane_postfix.py).

A private Exim (tests/exim.py) runs in the namespace with one router, a
``dnslookup`` of ``example.test``'s MX with ``dnssec_request_domains = *``, to
the ``mx_dane`` transport (``hosts_try_dane = *``: DANE when the TLSA records are
DNSSEC-secure, Postfix's ``dane`` level) or ``mx_dane_only``
(``hosts_require_dane = *``: Postfix's ``dane-only``). Exim takes the AD bit
from glibc's resolver, which passes it on only with ``options trust-ad`` in
resolv.conf (the namespace has it).

Each DANE profile is held to its ``[about.exim]`` verdict, and the resolver's
verdict on the record that matters to the table in tests/test_dane_postfix.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import netns as ns
import pytest
from dane import DOMAIN, first_attempt, validating_namespace, why_no_unbound
from exim import PrivateExim, why_no_exim
from probing import started
from test_dane_postfix import RESOLVER_VERDICTS

from fakemx.profiles import load_profile
from fakemx.tls.certs import CA_FILE, load_or_create_ca

# The only route: the MX of example.test, looked up through the validating resolver
# with the DNSSEC OK bit (dnssec_request_domains), so Exim knows which answers are secure.
DANE_ROUTER = f"""\
mx:
  driver = dnslookup
  domains = {DOMAIN}
  dnssec_request_domains = *
  transport = {{transport}}
  self = send
  no_more

"""
TRANSPORT_BY_LEVEL = {"dane": "mx_dane", "dane-only": "mx_dane_only"}


def _why_not() -> str | None:
    return why_no_exim() or ns.why_no_namespace() or why_no_unbound()


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


netns = pytest.fixture(scope="module", name="netns")(validating_namespace)


@pytest.fixture(scope="module")
def relays(netns: str) -> Iterator[Callable[[str], PrivateExim]]:
    """The private Exim for a DANE level (dane, dane-only), started on first use."""
    instances: dict[str, PrivateExim] = {}
    with ExitStack() as stack:

        def relay(level: str) -> PrivateExim:
            if level not in instances:
                router = DANE_ROUTER.format(transport=TRANSPORT_BY_LEVEL[level])

                def make(root: Path) -> PrivateExim:
                    load_or_create_ca(root / "fakemx")
                    return PrivateExim(root, root / "fakemx" / CA_FILE,
                                       prefix=ns.in_namespace(netns), router=router)

                instances[level] = stack.enter_context(
                    started(make, f"fakemx-dane-exim-{level}-"))
            return instances[level]

        yield relay


def _pattern(reason: str) -> str:
    """An [about.exim] reason as a regular expression: ``*`` matches anything."""
    return ".*".join(map(re.escape, reason.split("*")))


@pytest.mark.parametrize("name", sorted(RESOLVER_VERDICTS))
def test_dane_verdicts_through_exim(name: str, relays: Callable[[str], PrivateExim],
                                    netns: str, tmp_path: Path) -> None:
    about = load_profile(name).about
    assert about is not None
    expected = about.exim
    assert expected is not None, f"{name}: declare [about.exim]"
    assert expected.tls in TRANSPORT_BY_LEVEL, f"{name}: [about.exim] tls is dane or dane-only"
    state = tmp_path / "state"
    verdict, about_mx = first_attempt(relays(expected.tls), netns, name, state,
                                      RESOLVER_VERDICTS[name])
    assert verdict.status == expected.status, (verdict, about_mx)
    assert re.search(_pattern(expected.reason), verdict.reason), (verdict, about_mx)
    if expected.log:
        assert any(expected.log in line for line in about_mx), about_mx
    assert ns.stored_messages(state) == (1 if expected.status == "sent" else 0)
