"""In-band triggers: the recipient address picks the reply for one message."""

from __future__ import annotations

import smtplib

import pytest
from wire import dialogue

from fakemx import FakeMX, Outcome, Stage, profile_from_data
from fakemx.smtp.inband import parse


@pytest.mark.parametrize(
    ("address", "stage", "key"),
    [
        ("451-4.4.0@dest.example", Stage.RCPT, "reply"),
        ("550@dest.example", Stage.RCPT, "reply"),
        ("552-5.3.4+end_of_data@dest.example", Stage.END_OF_DATA, "reply"),
        ("DROP-RST+data@dest.example", Stage.DATA, "drop"),
        ("stall-0.5@dest.example", Stage.RCPT, "stall"),
    ],
)
def test_grammar(address: str, stage: Stage, key: str) -> None:
    rule = parse(address)
    assert rule is not None
    assert (rule.stage, rule.action_key) == (stage, key)


@pytest.mark.parametrize(
    "address", ["bob@dest.example", "451x@d", "199@d", "drop-maybe@d", "451+quit@d"]
)
def test_ordinary_addresses_are_left_alone(address: str) -> None:
    assert parse(address) is None


def test_reply_at_rcpt(sink: FakeMX) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail("a@sender.example", ["451-4.4.0@dest.example"], b"x")
        code, text = refused.value.recipients["451-4.4.0@dest.example"]
        assert (code, text) == (451, b"4.4.0 Requested by in-band trigger 451-4.4.0")
        # The next message on the same connection is untouched.
        assert client.sendmail("a@sender.example", ["bob@dest.example"], b"x") == {}


def test_reply_after_the_final_dot(sink: FakeMX) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=5) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@sender.example", ["552-5.3.4+end_of_data@d.example"], b"x")
        assert refused.value.smtp_code == 552
    assert sink.messages == []


def test_drop_on_data(sink: FakeMX) -> None:
    transcript = dialogue(sink.host, sink.port, recipient="drop-rst+data@dest.example")
    sink.wait_for(ended=1)
    assert (transcript.ended_at, transcript.how) == ("data", "rst")
    assert (sink.sessions[0].outcome, sink.sessions[0].stage) == (Outcome.DROPPED_RST, Stage.DATA)


def test_off_unless_the_profile_enables_it() -> None:
    with FakeMX(profile_from_data({}, "test")) as mx:
        transcript = dialogue(mx.host, mx.port, recipient="451-4.4.0@dest.example")
    assert transcript.code("rcpt") == 250
