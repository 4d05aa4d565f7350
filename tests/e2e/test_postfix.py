"""Every catalog profile through a real relay: Postfix's verdict is the one the profile declares.

The profile's ``[about.postfix]`` says what Postfix logs (status, DSN, reason),
so the catalog documents what a relay will say and this test holds it to that
(the probe itself: tests/probing.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from postfix import PrivatePostfix, Verdict
from probing import Attempt, probe, relay_profiles

from fakemx import PostfixVerdict, Profile
from fakemx.verdicts import PostfixAttempt

HOST = "127.0.0.1[127.0.0.1]"


@pytest.mark.parametrize("profile", relay_profiles(), ids=lambda p: p.name)
def test_postfix_verdict(profile: Profile, relay: PrivatePostfix, fakemx_state: Path) -> None:
    assert profile.about is not None
    expected = profile.about.postfix
    assert expected is not None, f"{profile.name}: declare [about.postfix] (what Postfix logs)"
    accepted: list[PostfixVerdict | PostfixAttempt] = [expected, *expected.alternatives]

    def declared(first: Attempt) -> bool:
        assert isinstance(first, Verdict)
        return any(matches(first, v.status, v.dsn, v.reason) for v in accepted)

    probe(profile, relay, fakemx_state, expected, declared)


def matches(verdict: Verdict, status: str, dsn: str, reason: str) -> bool:
    wanted = reason.replace("{host}", HOST)
    return (verdict.status, verdict.dsn) == (status, dsn) and wanted in verdict.reason
