"""Every catalog profile through a second real relay: Exim's verdict is the one declared.

The profile's ``[about.exim]`` says what Exim logs (the mainlog's mark for
the first attempt and a pattern in the rest of that line), as
``[about.postfix]`` says what Postfix logs: the two relays differ (Exim
bounces at once on a 554 greeting, speaks TLS 1.0, sends in clear after a
failed handshake by default), and the catalog documents both. The probe is
the one tests/e2e/test_postfix.py sends (tests/probing.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from exim import PrivateExim, Verdict
from probing import Attempt, probe, relay_profiles

from fakemx import EximVerdict, FakeMX, Profile, load_profile
from fakemx.verdicts import EximAttempt

HOST = "127.0.0.1 [127.0.0.1]"


def pattern(reason: str) -> re.Pattern[str]:
    """``[about.exim]``'s reason as a pattern: ``*`` is a run of non-spaces, ``{host}``
    Exim's name for fakemx."""
    parts = reason.replace("{host}", HOST).split("*")
    return re.compile(r"\S*".join(re.escape(part) for part in parts))


def declared(*verdicts: EximVerdict | EximAttempt) -> Callable[[Attempt], bool]:
    def accepted(first: Attempt) -> bool:
        assert isinstance(first, Verdict)
        return any(first.status == v.status and pattern(v.reason).search(first.reason)
                   for v in verdicts)
    return accepted


@pytest.mark.parametrize("profile", relay_profiles(), ids=lambda p: p.name)
def test_exim_verdict(profile: Profile, exim: PrivateExim, fakemx_state: Path) -> None:
    assert profile.about is not None
    expected = profile.about.exim
    assert expected is not None, f"{profile.name}: declare [about.exim] (what Exim logs)"
    probe(profile, exim, fakemx_state, expected, declared(expected, *expected.alternatives))


BY_DEFAULT = [p for p in relay_profiles() if p.about and p.about.exim and p.about.exim.by_default]


@pytest.mark.parametrize("profile", BY_DEFAULT, ids=lambda p: p.name)
def test_exim_default_tls_hides_the_failure(profile: Profile, exim: PrivateExim,
                                            fakemx_state: Path) -> None:
    """With its default transport (TLS when offered, verification only logged) Exim
    delivers where the profile's TLS failure would stop a stricter relay."""
    assert profile.about is not None
    assert profile.about.exim is not None
    by_default = profile.about.exim.by_default
    assert by_default is not None
    expected = profile.about.exim.model_copy(update={"tls": "may"})
    probe(profile, exim, fakemx_state, expected, declared(by_default))


@pytest.mark.parametrize("name", ["4.4.318-fin-during-body", "4.4.318-rst-during-body"])
def test_a_short_message_meets_the_body_drop(name: str, exim: PrivateExim,
                                            fakemx_state: Path) -> None:
    """The body drops fire on the first bytes: a message of a hundred bytes through Exim
    gets the declared verdict too, and nothing is stored."""
    profile = load_profile(name)
    assert profile.about is not None
    expected = profile.about.exim
    assert expected is not None
    try:
        with FakeMX(profile, state_dir=fakemx_state) as mx:
            first = exim.wait_verdict(exim.send(f"bob@p{mx.port}.test", "A short message."))[0]
            mx.wait_for(ended=1)
    finally:
        exim.drop_queue()
    assert declared(expected, *expected.alternatives)(first), (first, expected)
    assert not mx.messages
