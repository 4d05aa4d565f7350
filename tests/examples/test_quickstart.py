"""Guide examples: the fixtures, the marker, a scoped rule, several MX hosts, asyncio.

Each test is quoted in docs/testing-your-relay.md and docs/python-api.md.
"""

from __future__ import annotations

import smtplib

import aiosmtplib
import pytest
from relay import Relay, Status

from fakemx import FakeMX, Outcome, Stage
from fakemx.pytest_plugin import FakeMXFactory, catalog_params

MESSAGE = b"Subject: hello\r\n\r\nHello.\r\n"


def test_healthy_destination(fakemx: FakeMX) -> None:
    relay = Relay(fakemx.host, fakemx.port, timeout=5)
    assert relay.send("alice@example.com", "bob@example.net", MESSAGE).status is Status.SENT
    fakemx.wait_for(messages=1, timeout=5)
    assert fakemx.messages[0].message["Subject"] == "hello"
    assert fakemx.messages[0].rcpt_tos == ("bob@example.net",)


@pytest.mark.fakemx(profile="4.4.7-greylist-attempts")
def test_greylisting_is_retried(fakemx: FakeMX) -> None:
    relay = Relay(fakemx.host, fakemx.port, timeout=5, sleep=lambda seconds: None)
    delivery = relay.send("alice@example.com", "bob@example.net", MESSAGE)
    assert (delivery.status, delivery.attempts) == (Status.SENT, 3)
    assert [s.attempt for s in fakemx.sessions] == [1, 2, 3]
    assert [s.broke_at for s in fakemx.sessions] == [Stage.RCPT, Stage.RCPT, None]


@pytest.mark.fakemx(rules=[{"stage": "rcpt", "reply": {"code": 550, "text": "5.1.1 No such user"}}])
def test_unknown_recipient_bounces_at_once(fakemx: FakeMX) -> None:
    delivery = Relay(fakemx.host, fakemx.port, timeout=5).send("a@example.com", "x@y.z", MESSAGE)
    assert (delivery.status, delivery.attempts) == (Status.BOUNCED, 1)


def test_a_fault_for_one_block_only(fakemx: FakeMX) -> None:
    relay = Relay(fakemx.host, fakemx.port, timeout=5, max_attempts=1)
    with fakemx.rule(stage="mail", drop="rst"):
        assert relay.send("a@example.com", "b@example.net", MESSAGE).status is Status.DEFERRED
    assert relay.send("a@example.com", "b@example.net", MESSAGE).status is Status.SENT
    fakemx.wait_for(ended=2, timeout=5)
    assert fakemx.sessions[0].ended_by == "fakemx reset (RST) after MAIL"
    assert fakemx.sessions[0].broke_at is Stage.MAIL
    assert str(fakemx.sessions[0].first_error) == "drop after MAIL: fakemx reset (RST) after MAIL"
    assert fakemx.sessions[1].first_error is None


def test_the_backup_mx_takes_over(fakemx_factory: FakeMXFactory) -> None:
    primary = fakemx_factory("4.4.316-connection-refused")
    backup = fakemx_factory()
    for mx in (primary, backup):  # what a relay does with the MX list, in preference order
        delivery = Relay(mx.host, mx.port, timeout=5, max_attempts=1).send(
            "a@example.com", "b@example.net", MESSAGE
        )
        if delivery.status is not Status.DEFERRED:
            break
    assert delivery.status is Status.SENT
    assert primary.sessions == []  # refused: no session ever started
    backup.wait_for(messages=1, timeout=5)


# smtplib takes a 250 cut off by the close as complete: for it that profile is "sent".
@pytest.mark.parametrize("fakemx", catalog_params(
    code="4.4.318", exclude=["4.4.318-unterminated-after-final-dot"]), indirect=True)
def test_every_abrupt_close_is_deferred(fakemx: FakeMX) -> None:
    # TLS required, as on a connector: the inspecting firewall hides STARTTLS.
    relay = Relay(fakemx.host, fakemx.port, tls="encrypt", timeout=1, max_attempts=1)
    delivery = relay.send("a@example.com", "b@example.net", MESSAGE)  # the body drops too
    assert delivery.status is Status.DEFERRED


def test_switching_at_run_time(fakemx: FakeMX) -> None:
    fakemx.set_listener("refuse")
    with pytest.raises(ConnectionRefusedError):
        smtplib.SMTP(fakemx.host, fakemx.port, timeout=5)
    fakemx.set_listener("open")
    fakemx.load("4.4.7-defer-mail")
    with smtplib.SMTP(fakemx.host, fakemx.port, timeout=5) as smtp:
        smtp.ehlo("relay.example.net")
        assert smtp.mail("a@example.com")[0] == 451


async def test_asyncio_on_the_same_loop() -> None:
    async with FakeMX("4.4.7-defer-rcpt") as mx:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
            await aiosmtplib.send(
                MESSAGE, sender="a@example.com", recipients=["b@example.net"],
                hostname=mx.host, port=mx.port, timeout=5, start_tls=False,
            )
        await mx.await_for(ended=1, timeout=5)
        assert mx.sessions[0].outcome in (Outcome.QUIT, Outcome.CLIENT_CLOSED)
        await mx.aload("sink")
