"""A second real relay resolving through fakemx's DNS: Exim in a network namespace.

The namespace (tests/netns.py) has only loopback and its own resolv.conf
pointing at fakemx's DNS on 127.0.0.2:53. A private Exim (tests/exim.py) runs
in it with one router, Exim's ``dnslookup``: it looks up the MX of
``example.test`` itself, as a relay without a smart host does. Where Postfix's
verdicts (tests/test_dns_postfix.py) come from a relayhost looked up through
DNS, Exim's show what MX routing does: a missing domain bounces at once.

Each DNS profile that declares ``[about.exim]`` is held to it here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import netns as ns
import pytest
from exim import PrivateExim, why_no_exim
from probing import started

from fakemx.profiles import catalog, load_profile
from fakemx.tls.certs import CA_FILE, load_or_create_ca

# The stale cache needs a caching resolver, which Exim is not (tests/test_dns.py).
# The 4.4.312 family (the DANE profiles need a validating resolver, tests/test_dane_exim.py;
# the MTA-STS ones a policy fetcher, which Exim lacks: tests/test_mtasts.py).
RELAY_PROFILES = [p.name for p in catalog() if p.name.startswith("4.4.312-")
                  and p.name != "4.4.312-mx-changed-stale-cache"]

# The only route: the MX of example.test, looked up through fakemx's DNS (no_more: a
# domain it cannot route is not passed on, as in Debian's default configuration).
MX_ROUTER = f"""\
mx:
  driver = dnslookup
  domains = {ns.DOMAIN}
  transport = mx_smtp
  self = send
  no_more

"""


def _why_not() -> str | None:
    return why_no_exim() or ns.why_no_namespace()


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")
netns = pytest.fixture(scope="module", name="netns")(ns.resolving_through_fakemx)


@pytest.fixture(scope="module")
def relay(netns: str) -> Iterator[PrivateExim]:
    """A private Exim whose every process lives in the namespace."""
    def make(root: Path) -> PrivateExim:
        load_or_create_ca(root / "fakemx")
        return PrivateExim(root, root / "fakemx" / CA_FILE, prefix=ns.in_namespace(netns),
                           router=MX_ROUTER)

    with started(make, "fakemx-dns-exim-") as instance:
        yield instance


def test_healthy_mx_delivers_into_fakemx(relay: PrivateExim, netns: str, tmp_path: Path) -> None:
    """Positive control: Exim's MX lookup through fakemx's DNS leads it to fakemx."""
    verdict, stored = ns.healthy_verdict(relay, netns, tmp_path)
    assert verdict.status == "sent", verdict
    assert f"R=mx T=mx_smtp H=mx.{ns.DOMAIN} [{ns.FAKEMX_IP}]" in verdict.reason, verdict
    assert stored == 1


@pytest.mark.parametrize("name", RELAY_PROFILES)
def test_exim_verdict_through_fakemx_dns(
    name: str, relay: PrivateExim, netns: str, tmp_path: Path
) -> None:
    about = load_profile(name).about
    assert about is not None
    assert about.exim is not None, f"{name}: declare [about.exim]"
    expected = about.exim
    state = tmp_path / "state"
    verdict = ns.first_verdict(relay, netns, name, state)
    assert verdict.status == expected.status, verdict
    assert re.search(r"\S*".join(map(re.escape, expected.reason.split("*"))), verdict.reason), (
        verdict, expected.reason)
    # Mail that was sent went to fakemx; any other verdict left nothing there.
    assert ns.stored_messages(state) == (1 if expected.status == "sent" else 0)
