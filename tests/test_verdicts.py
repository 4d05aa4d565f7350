"""The per-relay verdicts and the settings a conditional profile needs agree.

``[about] needs`` names what a sender must be set to do for the profile to
fail (fakemx.verdicts.NEEDS says what Postfix, Exim and smtplib do without
it); each claim there is checked here against the verdicts the relay and
client tests hold every profile to, so the text cannot drift from the proof.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fakemx import Profile
from fakemx.cli import main
from fakemx.explain import relays_table
from fakemx.profiles import catalog
from fakemx.verdicts import NEEDS, EximVerdict, PostfixVerdict, SmtplibVerdict


def verdicts(profile: Profile) -> tuple[PostfixVerdict, EximVerdict, SmtplibVerdict | None]:
    about = profile.about
    assert about is not None
    assert about.postfix is not None, profile.name
    assert about.exim is not None, f"{profile.name}: declare [about.exim]"
    return about.postfix, about.exim, about.smtplib


ROOT = Path(__file__).resolve().parent.parent

def relayed() -> list[Profile]:
    """The profiles both relay harnesses prove without DANE. Not: those without a Postfix
    verdict (the stale cache needs a caching resolver, tests/test_dns.py), the DANE
    profiles (a validating resolver and a DANE-enforcing relay: tests/test_dane_postfix.py,
    tests/test_dane_exim.py) and the MTA-STS ones (a policy fetcher:
    tests/test_mtasts_postfix.py has Postfix with postfix-mta-sts-resolver; Exim fetches
    no policy)."""
    return [p for p in catalog() if p.about is not None and p.about.postfix is not None
            and p.about.postfix.tls not in (*DANE_LEVELS, "mta-sts")]


DANE_LEVELS = ("dane", "dane-only")


def dane_profiles() -> list[Profile]:
    return [p for p in catalog() if p.about is not None and p.about.postfix is not None
            and p.about.postfix.tls in DANE_LEVELS]


def needing(need: str) -> list[Profile]:
    return [p for p in relayed() if p.about is not None and need in p.about.needs]


def test_every_profile_declares_every_verdict() -> None:
    for profile in relayed():
        _, _, smtplib = verdicts(profile)
        assert (smtplib is None) == (profile.dns is not None), profile.name


def test_every_dane_profile_has_both_relays_enforcing_dane() -> None:
    """Postfix and Exim each prove every DANE profile at the same level (dane, dane-only)."""
    assert len(dane_profiles()) >= 19
    for profile in dane_profiles():
        postfix, exim, smtplib = verdicts(profile)
        assert exim.tls == postfix.tls, profile.name
        assert smtplib is None, profile.name


@pytest.mark.parametrize("need", ["tls-required", "tls-verified"])
def test_exims_default_transport_delivers_what_a_strict_relay_refuses(need: str) -> None:
    assert needing(need)
    for profile in needing(need):
        postfix, exim, smtplib = verdicts(profile)
        assert exim.tls != "may", profile.name
        if exim.status == "sent":  # Exim delivers even when strict (a TLS floor, ...)
            continue
        assert postfix.status != "sent", profile.name
        assert exim.by_default is not None, profile.name
        assert exim.by_default.status == "sent", profile.name
        assert smtplib is not None
        assert smtplib.result != "sent", profile.name
    # and the other way round: where Exim hides a TLS failure, the profile says so
    for profile in relayed():
        _, exim, _ = verdicts(profile)
        if exim.by_default is not None:
            assert profile.about is not None
            assert {"tls-required", "tls-verified"} & set(profile.about.needs), profile.name


def test_tls_floor_only_openssl_refuses() -> None:
    for profile in needing("tls-1.2-floor"):
        postfix, exim, smtplib = verdicts(profile)
        assert (postfix.status, exim.status) == ("deferred", "sent"), profile.name
        assert smtplib is not None
        assert smtplib.result not in ("sent", "refused"), profile.name


@pytest.mark.parametrize("need", ["tls-1.2-ceiling", "revocation-checking"])
def test_no_default_sender_refuses(need: str) -> None:
    assert needing(need)
    for profile in needing(need):
        postfix, exim, smtplib = verdicts(profile)
        assert smtplib is not None
        assert (postfix.status, exim.status, smtplib.result) == ("sent", "sent", "sent"), \
            profile.name


def test_key_size_only_smtplib_refuses() -> None:
    assert needing("key-size-policy")
    for profile in needing("key-size-policy"):
        postfix, exim, smtplib = verdicts(profile)
        assert (postfix.status, exim.status) == ("sent", "sent"), profile.name
        assert smtplib is not None
        assert smtplib.result == "SSLCertVerificationError", profile.name


def test_mx_lookup_is_where_exim_bounces_and_postfix_defers() -> None:
    assert [p.name for p in needing("mx-lookup")] == [
        p.name for p in relayed() if p.dns is not None]
    assert all(p.name.startswith("4.4.312-") for p in needing("mx-lookup"))
    bounced = [p for p in needing("mx-lookup") if verdicts(p)[1].status == "bounced"]
    assert bounced
    for profile in bounced:
        postfix, _, _ = verdicts(profile)
        assert (postfix.status, postfix.dsn) == ("deferred", "4.3.5"), profile.name


def test_every_need_is_explained() -> None:
    used = {need for p in catalog() if p.about is not None for need in p.about.needs}
    assert used == set(NEEDS)


def test_docs_relay_table_is_generated_from_profiles() -> None:
    text = (ROOT / "docs" / "real-relay.md").read_text()
    start, end = "<!-- relays:start -->\n", "<!-- relays:end -->"
    assert start in text, "docs/real-relay.md lacks the relays markers"
    assert end in text, "docs/real-relay.md lacks the relays markers"
    table = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert table == relays_table(), "regenerate it: fakemx list --relays"
    for need, explained in NEEDS.items():
        assert explained in text, f"docs/real-relay.md: explain {need} as NEEDS does"


def test_the_doors_show_every_senders_report(capsys: pytest.CaptureFixture[str]) -> None:
    """fakemx explain, list --json and list --relays show the three verdicts and the needs."""
    assert main(["explain", "4.7.320-weak-rsa-1024"]) == 0
    text = capsys.readouterr().out
    assert "Postfix (smtp_tls_security_level = verify): sent 2.0.0" in text
    assert "Exim (hosts_require_tls, tls_verify_hosts): sent: X=TLS1.3:... CV=yes" in text
    assert "smtplib (starttls()): SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED]" \
        in text
    assert f"key-size policy: {NEEDS['key-size-policy']}" in text
    assert main(["list", "--json"]) == 0
    entries = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    greeting = entries["4.4.317-greeting-554"]
    assert [r["sender"] for r in greeting["reports"]] == ["Postfix", "Exim", "smtplib"]
    assert greeting["reports"][1]["says"].startswith("bounced: ")
    assert entries["4.4.317-tls-1.0-1.1-only"]["needs"] == ["tls-1.2-floor", "tls-required"]
    assert main(["list", "--relays"]) == 0
    assert capsys.readouterr().out.strip() == relays_table()
