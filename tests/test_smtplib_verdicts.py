"""The third column: what Python's smtplib (OpenSSL underneath) sees of each profile.

Every profile a client can reach without DNS declares ``[about.smtplib]``:
the result (``sent``, ``refused`` or the exception's class), the SMTP code and
a piece of the message, for ``smtplib.SMTP`` with
``ssl.create_default_context()`` trusting fakemx's CA (tests/smtpclient.py).
This test sends the probe once to the profile at time_scale 0.01 and holds
the outcome to it. The DNS profiles have none: smtplib looks up no MX.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from probing import TIME_SCALE, PausedClock
from smtpclient import Outcome, send

from fakemx import FakeMX, Profile
from fakemx.profiles import catalog
from fakemx.tls.certs import CA_FILE, load_or_create_ca

CLIENT_PROFILES = [p for p in catalog() if p.dns is None]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fakemx-smtplib")
    load_or_create_ca(path)
    return path


def test_dns_profiles_declare_no_smtplib_verdict() -> None:
    for profile in catalog():
        if profile.dns is not None:
            assert profile.about is not None
            assert profile.about.smtplib is None, f"{profile.name}: smtplib looks up no MX"


@pytest.mark.parametrize("profile", CLIENT_PROFILES, ids=lambda p: p.name)
def test_smtplib_verdict(profile: Profile, state: Path) -> None:
    assert profile.about is not None
    expected = profile.about.smtplib
    assert expected is not None, f"{profile.name}: declare [about.smtplib] (what smtplib sees)"
    with FakeMX(profile, state_dir=state, time_scale=TIME_SCALE, clock=PausedClock()) as mx:
        outcome = send(mx.host, mx.port, state / CA_FILE, expected)
    declared = Outcome(expected.result, expected.code, expected.message)
    alternatives = [a.split(": ", 1) for a in expected.alternatives]
    assert matches(outcome, declared) or any(
        outcome.result == result and message in outcome.message
        for result, message in alternatives), (outcome, expected)


def matches(outcome: Outcome, declared: Outcome) -> bool:
    return (outcome.result, outcome.code) == (declared.result, declared.code) and \
        declared.message in outcome.message
