"""The catalog checks itself: every scenario has a profile, every profile a wire test,
and the README's table is generated from profiles/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fakemx.explain import codes, markdown_table
from fakemx.profiles import catalog

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS_MD = ROOT.parent / "shared" / "SCENARIOS.md"

# Every scenario SCENARIOS.md lists, by code, and the profiles that produce it.
SCENARIOS: dict[str, dict[str, list[str]]] = {
    "4.4.312": {
        "DNS server answering SERVFAIL": ["4.4.312-servfail"],
        "NXDOMAIN (the domain expired)": ["4.4.312-nxdomain"],
        "REFUSED": ["4.4.312-refused"],
        "no answer at all (query times out)": ["4.4.312-no-answer"],
        "answers slower than the resolver's timeout": ["4.4.312-slow"],
        "a domain with no MX (implicit MX, RFC 5321 5.1)": ["4.4.312-no-mx-implicit-a"],
        "a null MX (RFC 7505)": ["4.4.312-null-mx"],
        "MX whose target has no address": ["4.4.312-mx-target-no-address"],
        "CNAME loop": ["4.4.312-cname-loop"],
        "truncated UDP answer with TCP refused": ["4.4.312-truncated-tcp-refused"],
        "an answer that changes while the old TTL runs (stale cache)": [
            "4.4.312-mx-changed-stale-cache"
        ],
    },
    "4.4.315": {
        "TCP connect never completes (SYNs unanswered)": ["4.4.315-connect-timeout"],
        "TCP connects but no greeting ever comes": ["4.4.315-no-greeting"],
    },
    "4.4.316": {
        "nothing listens (RST on SYN)": ["4.4.316-connection-refused"],
        # A user-space server cannot refuse a SYN per source address; to the relay whose
        # address a firewall rejects, a refusal is all there is (docs/profiles.md).
        "a firewall that rejects the relay's address (RST on its SYN)": [
            "4.4.316-connection-refused"
        ],
    },
    "4.4.317": {
        "421 greeting": ["4.4.317-greeting-421"],
        "554 greeting": ["4.4.317-greeting-554"],
        "STARTTLS not advertised": ["4.4.317-starttls-not-offered"],
        "STARTTLS advertised but refused (454 4.7.0)": ["4.4.317-starttls-454"],
        "handshake fails: the server aborts": [
            "4.4.317-handshake-alert", "4.4.317-handshake-reset", "4.4.317-handshake-stall"
        ],
        "handshake fails: no shared protocol version": [
            "4.4.317-tls-1.0-1.1-only", "4.4.317-tls-1.3-only"
        ],
        "handshake fails: no shared cipher": ["4.4.317-no-shared-cipher"],
        "a client certificate required and refused": ["4.4.317-client-cert-required"],
    },
    "4.7.320": {
        "certificate expired": ["4.7.320-expired"],
        "not yet valid": ["4.7.320-not-yet-valid"],
        "host name mismatch": ["4.7.320-wrong-host"],
        "self-signed": ["4.7.320-self-signed"],
        "signed by an untrusted CA": ["4.7.320-untrusted-ca"],
        "chain missing its intermediate": ["4.7.320-missing-intermediate"],
        "revoked (CRL and OCSP published by fakemx)": ["4.7.320-revoked"],
        "weak signature or key": ["4.7.320-weak-sha1", "4.7.320-weak-rsa-1024"],
        "positive controls": ["tls-valid-starttls", "tls-valid-implicit"],
    },
    "4.4.318": {
        "close or reset after connect": ["4.4.318-fin-after-connect", "4.4.318-rst-after-connect"],
        "after the greeting": ["4.4.318-fin-after-greeting", "4.4.318-rst-after-greeting"],
        "after EHLO": ["4.4.318-fin-after-ehlo", "4.4.318-rst-after-ehlo"],
        "after MAIL": ["4.4.318-fin-after-mail", "4.4.318-rst-after-mail"],
        "after RCPT": ["4.4.318-fin-after-rcpt", "4.4.318-rst-after-rcpt"],
        "during DATA after N bytes": ["4.4.318-fin-during-body", "4.4.318-rst-during-body"],
        "on DATA": ["4.4.318-fin-on-data", "4.4.318-rst-on-data"],
        "after the final dot before the reply": [
            "4.4.318-fin-after-final-dot", "4.4.318-rst-after-final-dot"
        ],
        "a server that stalls mid-session then closes": ["4.4.318-stall-then-close"],
        # SCENARIOS.md files it under 4.4.316; relays report the reset as a lost connection.
        "a firewall that resets clients outside an allow-list after the handshake": [
            "4.4.318-firewall-allow-list"
        ],
        "an inspecting firewall that masks the banner and strips EHLO extensions": [
            "4.4.318-firewall-smtp-inspection"
        ],
    },
    "4.4.7": {
        "4xx at the greeting": ["4.4.7-defer-greeting"],
        "4xx at MAIL": ["4.4.7-defer-mail"],
        "4xx at RCPT": ["4.4.7-defer-rcpt"],
        "4xx at DATA": ["4.4.7-defer-data"],
        "4xx at end of data": ["4.4.7-defer-end-of-data"],
        "greylisting for the first N attempts": ["4.4.7-greylist-attempts"],
        "greylisting for T seconds": ["4.4.7-greylist-time"],
        "slower than the relay's timeouts": ["4.4.7-slow-greeting", "4.4.7-slow-end-of-data"],
        "intermittent failure with a set probability": ["4.4.7-intermittent"],
    },
    "5.x.x": {
        "reject by client IP": ["5.7.1-reject-client-ip"],
        "reject by EHLO name": ["5.7.1-reject-helo"],
        "reject by sender domain": ["5.7.1-reject-sender-domain"],
        "reject by recipient": ["5.7.1-reject-recipient"],
        "recipient unknown (550 5.1.1)": ["5.1.1-unknown-recipient"],
        "message too large (552 5.3.4)": ["5.3.4-message-too-large"],
        "too many connections (421 4.7.0)": ["4.7.0-too-many-connections"],
        # Throttling (#14): counts, rates and a limit on recipients per message.
        "too many connections in a short time (421 4.7.0 at EHLO)": ["4.7.0-connection-rate"],
        "too many recipients in one message (452 4.5.3)": ["4.5.3-too-many-recipients"],
        "421 after 2 recipients in a connection (421 4.7.0 at RCPT)": [
            "4.7.0-421-after-2-recipients"
        ],
        "the first 3 messages, then storage full (452 4.3.1 at MAIL)": [
            "4.3.1-storage-full-after-3-messages"
        ],
        "too many messages a minute from one client (450 4.7.1)": ["4.7.1-message-rate-limit"],
        "a new sending IP throttled (451 4.7.500, Exchange Online)": ["4.7.500-server-busy"],
        "a sending IP rate limited (421 4.7.28, Gmail)": ["4.7.28-ip-rate-limited"],
    },
    # SMTP AUTH (#15): a relay that logs in to a smarthost or submission server.
    "AUTH": {
        "the right login accepted (positive control)": ["auth-required-ok"],
        "wrong credentials (535 5.7.8)": ["5.7.8-auth-wrong-credentials"],
        "temporary failure (454 4.7.0)": ["4.7.0-auth-temporary-failure"],
        "mechanism too weak (534 5.7.9)": ["5.7.9-auth-mechanism-too-weak"],
        "authentication required (530 5.7.0)": ["5.7.0-auth-required"],
        "encryption required (538 5.7.11)": ["5.7.11-auth-encryption-required"],
        "Exchange Online: 535 5.7.3, 535 5.7.139, 530 5.7.57": [
            "5.7.3-auth-unsuccessful-exchange", "5.7.139-auth-disabled-for-tenant",
            "5.7.57-client-not-authenticated"
        ],
    },
}


def test_every_scenario_has_an_existing_profile() -> None:
    names = {p.name for p in catalog()}
    for code, scenarios in SCENARIOS.items():
        for scenario, profiles in scenarios.items():
            missing = [p for p in profiles if p not in names]
            assert not missing, f"{code} '{scenario}': no profile {missing}"


def test_every_code_in_scenarios_md_is_covered() -> None:
    if not SCENARIOS_MD.is_file():
        pytest.skip(f"{SCENARIOS_MD} is not beside the checkout")
    documented = set(re.findall(r"^\| (?:\d{3} )?(\d\.\d+\.\d+|5\.x\.x) ", SCENARIOS_MD.read_text(),
                                re.MULTILINE))
    assert documented >= {"4.4.312", "4.4.315", "4.4.316", "4.4.317", "4.4.318", "4.7.320",
                          "4.4.7", "5.x.x"}
    assert documented <= set(SCENARIOS)


def test_every_code_a_profile_uses_is_explained() -> None:
    for profile in catalog():
        assert profile.about is not None
        code = profile.about.code
        assert code in codes(), f"{profile.name}: add {code} to fakemx/codes.toml"


def test_every_profile_is_named_in_a_wire_test() -> None:
    sources = "\n".join(
        path.read_text() for path in (ROOT / "tests").rglob("test_*.py")
        if path.name != Path(__file__).name
    )
    untested = [p.name for p in catalog() if f'"{p.name}"' not in sources]
    assert not untested, f"profiles without a wire test: {untested}"


def test_readme_catalog_table_is_generated_from_profiles() -> None:
    readme = (ROOT / "README.md").read_text()
    start, end = "<!-- catalog:start -->\n", "<!-- catalog:end -->"
    assert start in readme, "README.md lacks the catalog markers"
    assert end in readme, "README.md lacks the catalog markers"
    table = readme.split(start, 1)[1].split(end, 1)[0].strip()
    assert table == markdown_table(), "regenerate it: fakemx list --markdown"
