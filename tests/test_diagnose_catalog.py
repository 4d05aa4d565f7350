"""``fakemx diagnose`` against fakemx serving each catalog profile names that profile.

fakemx's catalog is diagnose's test oracle: for every profile, a real fakemx on
loopback serves it (the 4.4.312 family behind fakemx's own DNS, reached with
``--resolver``), ``fakemx diagnose --json`` probes it through the command line,
and the verdict must name the profile's code and, where the evidence can tell,
the profile itself. A profile whose failure needs what diagnose never does
(send DATA, make traffic, use a sender) must instead be reported healthy with
that gap named under "not probed", so new profiles are classified, not skipped.
The DANE profiles are probed with ``--tls dane`` (and ``--trust-anchor``, fakemx's
anchor, for a signed zone), the MTA-STS ones with ``--mta-sts-port`` at fakemx's
policy host: each verdict names the profile, as its code or as a condition.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from fakemx import FakeMX
from fakemx.cli import main
from fakemx.diagnose.verdict import NEVER_PROBED, NO_AUTH, NO_TRAFFIC
from fakemx.model import Profile
from fakemx.profiles import catalog, load_profile
from fakemx.stages import Stage

TIMEOUT = 2.5  # each connect, reply, handshake and DNS query the probe waits for
SLOW = 0.4  # answers slower than this are reported as slow
DELAY = 1.0  # what the slow profiles' delays are scaled to: between SLOW and TIMEOUT
# Durations in profiles are minutes; scaled so a stall or a greylist window outlasts the probe.
TIME_SCALE = 0.001

# Profiles whose delay must land between SLOW and TIMEOUT: scaled to DELAY; the MX that
# changes after 60 s at real time, so the probe meets the old MX (loopback), not the new one
# (192.0.2.25: no traffic may leave loopback).
SCALES = {"4.4.312-slow": DELAY / 30.0, "4.4.7-slow-greeting": DELAY / 600.0,
          "4.4.312-mx-changed-stale-cache": 1.0,
          # the policy changes after 60 s: scaled so the probe meets the new policy
          "4.4.8-mta-sts-policy-changed": 1e-6,
          # nginx closes a silent connection after 60 s: the probe speaks first, long before
          "4.4.318-http-server-on-port": 1.0}

# Stages diagnose never reaches: it sends no DATA (and no BDAT).
NEVER_REACHED = {Stage.DATA, Stage.BODY, Stage.BDAT, Stage.END_OF_DATA}
# Conditions one probe session cannot meet: they need traffic, or a sender.
TRAFFIC = ("sessions", "messages", "recipients", "concurrent_above", "sender_domain")

# Evidence that is the same on the wire: the verdict may name the other profile.
# rst-after-greeting: the RST can overtake the end of the TCP handshake on loopback, and
# the greeting before it is then lost (RST discards unread data): the client sees what
# rst-after-connect gives.
# fin-after-greeting: when the FIN reaches the probe just after it sent EHLO, the kernel
# answers EHLO with an RST, and the probe sees what rst-after-greeting gives.
SAME_EVIDENCE = {"4.4.318-rst-after-greeting": {"4.4.318-rst-after-connect"},
                 "4.4.318-fin-after-greeting": {"4.4.318-rst-after-greeting"}}


# Profiles whose outcome depends on how the sender's client speaks (#15): the verdict is
# what a plain probe like diagnose's meets. It waits for each reply, so replies held for a
# pipelined group never come and the server's idle timer closes (4.4.318, as for smtplib);
# it speaks SMTP, so an LMTP server refuses EHLO and HELO (5.5.1, the reply says LHLO); it
# sends an ASCII address and no DSN parameter, so those profiles look healthy.
PROBE_MEETS = {"pipelining-held": "4.4.318", "lmtp-sink": "5.5.1",
               "lmtp-one-recipient-fails": "5.5.1", "5.6.7-smtputf8-not-offered": "2.0.0",
               "5.7.1-dsn-refused": "2.0.0"}


# The probe's TLS policy, where the verdict under test is a relay's that does not require TLS:
# an old server without ESMTP offers no STARTTLS (with --tls verify: 4.4.317, its condition).
TLS = {"helo-only-server": "none"}


# The DANE and MTA-STS profiles that break nothing: no condition names them.
POSITIVE_CONTROLS = {"dane-valid-ee", "dane-valid-ta", "mta-sts-valid"}


def is_dane(profile: Profile) -> bool:
    postfix = profile.about.postfix if profile.about else None
    zone = profile.dns
    return (postfix is not None and postfix.tls in ("dane", "dane-only")) or (
        zone is not None and (zone.dnssec is not None or any(r.type == "TLSA"
                                                             for r in zone.records)))


def unseen(profile: Profile) -> str | None:
    """Why diagnose cannot meet this profile's failure, or None if it can."""
    if profile.name == "4.4.312-mx-changed-stale-cache":
        return "stale cache"
    postfix = profile.about.postfix if profile.about else None
    if (postfix is not None and postfix.sasl) or any(r.stage is Stage.AUTH
                                                     for r in profile.rules):
        return NO_AUTH  # the failure, or the success, needs a login
    failing = [r for r in profile.rules if r.action_key not in ("accept", "mask_banner")]
    if failing and all(rule.stage in NEVER_REACHED for rule in failing):
        return NEVER_PROBED
    if failing and all(any(getattr(rule.when, key) is not None for key in TRAFFIC)
                       for rule in failing):
        return NO_TRAFFIC
    return None


def diagnose_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    status = main(["diagnose", *args, "--json", "--timeout", str(TIMEOUT),
                   "--dns-timeout", str(TIMEOUT), "--slow", str(SLOW)])
    out = capsys.readouterr().out
    return status, json.loads(out)


def run_against(profile: Profile, capsys: pytest.CaptureFixture[str]
                ) -> tuple[int, dict[str, Any]]:
    scale = SCALES.get(profile.name, TIME_SCALE)
    postfix = profile.about.postfix if profile.about else None
    local = (postfix.local_part if postfix and postfix.local_part else "bob")
    helo = "localhost" if postfix is not None and postfix.bad_helo else "relay.example.net"
    with FakeMX(profile, time_scale=scale) as mx:
        common = ("--rcpt", f"{local}@example.test", "--helo", helo, "--ca", str(mx.ca_path))
        if mx.dns is not None:
            # The zone's MX hosts are not the name in fakemx's certificate: encrypt only
            # (an enforced MTA-STS policy makes the probe verify, as it makes relays).
            tls: tuple[str, ...] = ("--tls", "require")
            anchor = mx.state_dir / "dnssec-anchor.ds"  # written when the zone is signed
            if is_dane(profile):
                tls = ("--tls", "dane") + (("--trust-anchor", str(anchor))
                                           if anchor.exists() else ())
            if mx.mta_sts is not None:
                tls += ("--mta-sts-port", str(mx.mta_sts.port))
            return diagnose_json(capsys, f"example.test:{mx.port}", "--mx-lookup",
                                 "--resolver", f"{mx.dns.host}:{mx.dns.port}", *tls, *common)
        return diagnose_json(capsys, f"127.0.0.1:{mx.port}", "--tls",
                             TLS.get(profile.name, "verify"), *common)


def named(verdict: dict[str, Any]) -> tuple[set[str], set[str]]:
    """Every code and every catalog profile the verdict names."""
    advice = verdict["also"] + verdict["conditions"]
    codes = {verdict["code"], *(a["code"] for a in advice)}
    profiles = {*verdict["profiles"], *(n for a in advice for n in a["profiles"])}
    return codes, profiles


@pytest.mark.parametrize("name", [p.name for p in catalog()])
def test_diagnose_names_each_catalog_profile(name: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    profile = load_profile(name)
    assert profile.about is not None
    status, report = run_against(profile, capsys)
    verdict = report["verdict"]
    codes, profiles = named(verdict)
    if name in PROBE_MEETS:
        assert verdict["code"] == PROBE_MEETS[name], (verdict["code"], verdict["evidence"])
        return
    gap = unseen(profile)
    if gap == "stale cache":
        # A stale cache lives in the relay's resolver; a fresh probe sees the new answer's
        # TTL, which is how long a change takes to reach relays.
        assert verdict["code"] == "2.0.0"
        assert any("TTL 3600 s" in step["line"] for step in report["steps"]), report["steps"]
        return
    if gap == NO_AUTH:  # without a login, a server that requires one refuses MAIL
        assert gap in verdict["not_probed"]
        if profile.auth is not None and profile.auth.required and profile.tls.mode != "none":
            assert verdict["code"] == "5.7.0", verdict
        return
    if gap is not None:
        assert (status, verdict["code"]) == (0, "2.0.0"), verdict
        assert gap in verdict["not_probed"]
        return
    assert profile.about.code in codes, (verdict["code"], verdict["evidence"])
    if profile.about.code.startswith("2"):  # the positive controls: nothing failed
        assert (status, verdict["code"]) == (0, "2.0.0")
        assert not [s for s in report["steps"] if s["severity"] == "fail"]
        if (is_dane(profile) or profile.mta_sts is not None) \
                and name not in POSITIVE_CONTROLS:  # relays deliver; the condition is named
            assert name in profiles, (verdict["conditions"], report["steps"])
        return
    allowed = {name} | SAME_EVIDENCE.get(name, set())
    assert allowed & profiles, (profiles, verdict["evidence"])
    assert status == (0 if verdict["code"] == "2.0.0" else 1)


def test_the_positive_control_is_healthy_with_every_step_ok(
        capsys: pytest.CaptureFixture[str]) -> None:
    status, report = run_against(load_profile("sink"), capsys)
    assert (status, report["verdict"]["code"]) == (0, "2.0.0")
    assert [s["name"] for s in report["steps"] if s["severity"] == "ok"] == [
        "connect", "greeting", "ehlo", "starttls", "tls", "certificate", "mail", "rcpt", "quit"]
