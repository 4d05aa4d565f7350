"""Guide example: the tiny relay (relay.py) against every profile of the catalog.

Each profile says what a correct relay ends up doing with it: sent, deferred
(and retried), sent on a later retry, or bounced. The expectation comes from
the profile's own data, so a profile added to the catalog is tested without
touching this file:

1. ``[about.postfix]``: what a real relay (Postfix) does with it; the catalog's
   end-to-end test holds every profile to that verdict.
2. otherwise the class of ``about.code``: 2.x.x sent, 4.x.x deferred, 5.x.x
   bounced, with the relay's TLS policy read from the code too (4.7.320 is a
   certificate that fails validation, so the relay verifies; 4.4.317 is TLS
   that cannot be set up, so the relay requires TLS).
3. ``BY_HAND`` below, for the few profiles whose outcome depends on what the
   relay can do (here: accept a 1024-bit RSA key).
"""

from __future__ import annotations

import contextlib
import socket
from dataclasses import dataclass

import pytest
from relay import Relay, Status

from fakemx import Profile, Protocol, TlsMode
from fakemx.pytest_plugin import FakeMXFactory, catalog_params

# Profiles run 500 times faster: a 300 s greylist window lasts 0.6 s, a 600 s
# slow greeting 1.2 s. The relay's timeout is 200 s on the same scale, below
# every "slower than the relay's timeout" profile and far above a healthy reply.
TIME_SCALE = 0.002
RELAY_TIMEOUT = 200 * TIME_SCALE
BODY = "\r\n".join(f"line {n:04d} " + "x" * 60 for n in range(64))  # ~4.5 KB, over 1024


@dataclass(frozen=True)
class Expected:
    status: Status
    attempts: int | None = None  # None: any number; "sent" after a retry says "more than 1"
    after_retries: bool = False


# Profiles whose outcome depends on what the relay can do, beyond the data.
BY_HAND: dict[str, Expected] = {
    # Postfix verifies at OpenSSL security level 1 and sends; Python's default
    # context (level 2) refuses the 1024-bit key, so this relay keeps deferring.
    "4.7.320-weak-rsa-1024": Expected(Status.DEFERRED, 3),
    # smtplib takes a reply line cut off by the close as complete, so the 250 without
    # its CRLF counts and the message is sent once; Postfix defers and sends it again.
    "4.4.318-unterminated-after-final-dot": Expected(Status.SENT, 1),
    # Postfix sends ORCPT once DSN is advertised and is refused; this relay asks for no
    # delivery report, sends no DSN parameter, and its message goes through.
    "5.7.1-dsn-refused": Expected(Status.SENT, 1),
    # Postfix pipelines MAIL, RCPT and DATA; this relay (smtplib) waits for the reply to
    # MAIL FROM, which the profile holds back, and times out at every attempt.
    "pipelining-held": Expected(Status.DEFERRED, 3),
}


def expected(profile: Profile, max_attempts: int) -> Expected:
    if profile.name in BY_HAND:
        return BY_HAND[profile.name]
    verdict = profile.about.postfix if profile.about else None
    if verdict is not None and (verdict.warm_up_messages or verdict.recipients > 1):
        # A rate or a recipient limit: one message to one recipient stays under it.
        return Expected(Status.SENT, 1)
    if verdict is not None:
        if verdict.sent_on_attempt is not None:
            return Expected(Status.SENT, verdict.sent_on_attempt, after_retries=True)
        if verdict.eventually_sent:
            return Expected(Status.SENT, after_retries=True)
        status = Status(verdict.status)
    else:
        assert profile.about is not None, f"{profile.name}: no [about]: add it or use BY_HAND"
        by_class = {"2": Status.SENT, "4": Status.DEFERRED, "5": Status.BOUNCED}
        status = by_class[profile.about.code[0]]
    return Expected(status, max_attempts if status is Status.DEFERRED else 1)


def tls_policy(profile: Profile) -> str:
    """How the relay treats TLS for this profile: as Postfix was set up, else by the code."""
    verdict = profile.about.postfix if profile.about else None
    if verdict is not None:
        return verdict.tls
    code = profile.about.code if profile.about else ""
    if code == "4.7.320" or (code.startswith("2.") and profile.name.startswith("tls-")):
        return "verify"
    return "encrypt" if code == "4.4.317" else "may"


def login_and_password(sasl: str) -> tuple[str, str]:
    """``[about.postfix] sasl`` (``login:password``) as the relay's credentials."""
    login, _, password = sasl.partition(":")
    return login, password


class FakeClock:
    """Time for fakemx's greylist windows that the relay's back-off moves on: no waiting."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def relay_profiles() -> list[object]:
    # DNS profiles need the relay to resolve through fakemx's DNS: another example. LMTP
    # profiles are for a relay's LMTP client (Postfix's lmtp), not this SMTP relay.
    return catalog_params(where=lambda profile: getattr(profile, "dns", None) is None
                          and profile.protocol is Protocol.SMTP)


@pytest.mark.parametrize("profile", relay_profiles())
def test_relay_outcome(profile: Profile, fakemx_factory: FakeMXFactory) -> None:
    clock = FakeClock()
    mx = fakemx_factory(profile, time_scale=TIME_SCALE, clock=clock.monotonic)
    verdict = profile.about.postfix if profile.about else None
    relay = Relay(
        mx.host,
        mx.port,
        helo="localhost.localdomain" if verdict and verdict.bad_helo else "relay.example.net",
        tls=tls_policy(profile),
        ca_file=mx.ca_path,
        implicit_tls=profile.tls.mode is TlsMode.IMPLICIT,
        credentials=login_and_password(verdict.sasl) if verdict and verdict.sasl else None,
        timeout=RELAY_TIMEOUT,
        first_retry=120 * TIME_SCALE,
        sleep=clock.sleep,
    )
    want = expected(profile, relay.max_attempts)
    sender = (verdict.sender if verdict else "") or "alice@sender.example"
    recipient = f"{verdict.local_part if verdict else 'bob'}@dest.example"
    message = f"From: {sender}\r\nTo: {recipient}\r\nSubject: probe\r\n\r\n{BODY}\r\n".encode()

    with contextlib.ExitStack() as held:
        for _ in range(verdict.hold_connections if verdict else 0):  # other clients, still open
            sock = held.enter_context(socket.create_connection((mx.host, mx.port), timeout=5))
            assert sock.recv(512).startswith(b"220")
        delivery = relay.send(sender, recipient, message)

    assert delivery.status is want.status, delivery
    if want.attempts is not None:
        assert delivery.attempts == want.attempts, delivery
    if want.after_retries:
        assert delivery.attempts > 1, delivery
    if delivery.status is Status.SENT:
        # fakemx stored it, once, and saw every attempt as a session of its own.
        mx.wait_for(messages=1, timeout=5)
        assert [m.message["Subject"] for m in mx.messages] == ["probe"]
        assert [s.attempt for s in mx.sessions] == list(range(1, delivery.attempts + 1))
