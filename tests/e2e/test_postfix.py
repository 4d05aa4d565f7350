"""Every catalog profile through a real relay: Postfix's verdict is the one the profile declares.

The profile's ``[about.postfix]`` says what Postfix logs (status, DSN, reason),
so the catalog documents what a relay will say and this test holds it to that.
fakemx runs every profile at time_scale 0.01 and the relay's timeouts are
scaled the same way (300 s -> 3 s), so "slower than the relay's timeout" keeps
its meaning.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from postfix import PrivatePostfix, Verdict
from wire import connect, read_reply

from fakemx import FakeMX, PostfixVerdict, Profile
from fakemx.profiles import catalog

TIME_SCALE = 0.01
HOST = "127.0.0.1[127.0.0.1]"
BODY = "\n".join(f"line {n:04d} " + "x" * 60 for n in range(64))  # ~4.5 KB


def relay_profiles() -> list[Profile]:
    # DNS profiles need the relay to resolve through fakemx: tests/test_dns_postfix.py.
    return [p for p in catalog() if getattr(p, "dns", None) is None]


def domain(expected: PostfixVerdict, port: int) -> str:
    prefix = "h" if expected.bad_helo else {
        "may": "p", "verify": "v", "encrypt": "e", "implicit": "w"
    }[expected.tls]
    return f"{prefix}{port}.test"


@pytest.mark.parametrize("profile", relay_profiles(), ids=lambda p: p.name)
def test_postfix_verdict(profile: Profile, relay: PrivatePostfix, fakemx_state: Path) -> None:
    assert profile.about is not None
    expected = profile.about.postfix
    assert expected is not None, f"{profile.name}: declare [about.postfix] (what Postfix logs)"
    with FakeMX(profile, state_dir=fakemx_state, time_scale=TIME_SCALE) as mx, \
            contextlib.ExitStack() as held:
        for _ in range(expected.hold_connections):
            sock = held.enter_context(connect(mx.host, mx.port))
            assert read_reply(sock).startswith(b"220")
        recipient = f"{expected.local_part}@{domain(expected, mx.port)}"
        message_id = relay.send(recipient, BODY, sender=expected.sender)
        first = relay.wait_verdict(message_id)[0]
        accepted = [expected, *expected.alternatives]
        assert any(matches(first, v.status, v.dsn, v.reason) for v in accepted), (first, accepted)
        if expected.log:
            about_fakemx = relay.lines_about(mx.port)
            assert any(expected.log in line for line in about_fakemx), about_fakemx
        if expected.sent_on_attempt is None and not expected.eventually_sent:
            return
        attempts = relay.wait_verdict(message_id, count=expected.sent_on_attempt or 2)
        while attempts[-1].status != "sent" and len(attempts) < 10:
            attempts = relay.wait_verdict(message_id, count=len(attempts) + 1)
        assert attempts[-1].status == "sent", attempts
        assert all(v.status == "deferred" for v in attempts[:-1]), attempts
        # fakemx saw every attempt: one session each, counted per client address.
        mx.wait_for(messages=1)
        assert [s.attempt for s in mx.sessions] == list(range(1, len(attempts) + 1))


def matches(verdict: Verdict, status: str, dsn: str, reason: str) -> bool:
    wanted = reason.replace("{host}", HOST)
    return (verdict.status, verdict.dsn) == (status, dsn) and wanted in verdict.reason
