"""Rule language v2 (issue #14) on the wire: counts, rates, negation, times/after.

Every example in docs/profiles.md "Counting, rates and negation" is loaded from
the document itself and run here against a real FakeMX with smtplib, so the
guide cannot drift from what works. Windows are driven by a fake clock the
test advances: no sleeping.
"""

from __future__ import annotations

import re
import smtplib
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from wire import connect, dialogue, read_reply, wait_closed

from fakemx import FakeMX, Profile, profile_from_data
from fakemx.control import rule_from_spec, scaled_rule
from fakemx.journal import Outcome

DOCS = Path(__file__).resolve().parent.parent / "docs" / "profiles.md"
MESSAGE = b"Subject: probe\r\n\r\nhello\r\n"
TIMEOUT = 5


class FakeClock:
    """A monotonic clock the test moves by hand (FakeMX(clock=...))."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def example(name: str) -> Profile:
    """The TOML block in docs/profiles.md that starts with ``# example: NAME``."""
    blocks = dict(re.findall(r"```toml\n# example: (\S+)\n(.*?)```", DOCS.read_text(),
                             re.DOTALL))
    assert name in blocks, f"docs/profiles.md has no example {name!r} ({sorted(blocks)})"
    return profile_from_data(tomllib.loads(blocks[name]), f"docs example {name}")


@contextmanager
def client(mx: FakeMX) -> Iterator[smtplib.SMTP]:
    with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as smtp:
        yield smtp


def mail_code(smtp: smtplib.SMTP, sender: str = "a@sender.example") -> int:
    smtp.ehlo_or_helo_if_needed()
    code, _ = smtp.mail(sender)
    if code == 250:
        smtp.rset()
    return code


def test_docs_first_3_messages_then_452() -> None:
    with FakeMX(example("first-3-messages")) as mx:
        with client(mx) as smtp:
            for _ in range(3):  # positive control: the first three go through
                assert smtp.sendmail("a@sender.example", ["b@dest.example"], MESSAGE) == {}
            with pytest.raises(smtplib.SMTPSenderRefused) as refused:
                smtp.sendmail("a@sender.example", ["b@dest.example"], MESSAGE)
            assert refused.value.smtp_code == 452
            assert b"4.3.1 Insufficient system storage" in refused.value.smtp_error
        with client(mx) as smtp:  # per client: a new connection does not start again
            assert mail_code(smtp) == 452
        mx.wait_for(messages=3)
        mx.reset()  # reset() forgets the counts
        with client(mx) as smtp:
            assert smtp.sendmail("a@sender.example", ["b@dest.example"], MESSAGE) == {}


def test_docs_421_after_2_rcpts() -> None:
    with FakeMX(example("421-after-2-rcpts")) as mx:
        with client(mx) as smtp:
            assert smtp.sendmail("a@sender.example", ["b1@d.example", "b2@d.example"],
                                 MESSAGE) == {}
        with client(mx) as smtp:  # per session: a new connection starts at 0
            smtp.ehlo()
            smtp.mail("a@sender.example")
            assert smtp.rcpt("b1@d.example")[0] == 250
            assert smtp.rcpt("b2@d.example")[0] == 250
            code, text = smtp.rcpt("b3@d.example")
            assert (code, text) == (421, b"4.7.0 Too many recipients, closing connection")
            assert smtp.sock is not None
            assert smtp.sock.recv(1) == b""  # closed (FIN) after the 421
        mx.wait_for(ended=2)
        assert mx.sessions[-1].outcome is Outcome.CLOSED_AFTER_REPLY


def test_docs_452_too_many_recipients_per_message() -> None:
    with FakeMX(example("too-many-recipients")) as mx, client(mx) as smtp:
        refused = smtp.sendmail("a@sender.example",
                                ["b1@d.example", "b2@d.example", "b3@d.example"], MESSAGE)
        assert refused == {"b3@d.example": (452, b"4.5.3 Too many recipients")}
        # RFC 5321 4.5.3.1.10: the rest goes in another transaction, which starts at 0.
        assert smtp.sendmail("a@sender.example", ["b3@d.example"], MESSAGE) == {}
        mx.wait_for(messages=2)
        assert [m.rcpt_tos for m in mx.messages] == [("b1@d.example", "b2@d.example"),
                                                     ("b3@d.example",)]


def test_docs_rate_per_client_with_a_fake_clock() -> None:
    clock = FakeClock()
    with FakeMX(example("rate-per-client"), clock=clock) as mx, client(mx) as smtp:
        smtp.ehlo()
        for _ in range(5):
            assert mail_code(smtp) == 250
            clock.advance(10)  # 5 messages in 40 s
        assert mail_code(smtp) == 451  # the 6th within 60 s
        clock.advance(11)  # the first has left the window, but the refused one counts
        assert mail_code(smtp) == 451
        clock.advance(60)  # a whole window without trying
        assert mail_code(smtp) == 250


def test_docs_rate_window_scales_with_time_scale() -> None:
    clock = FakeClock()
    with FakeMX(example("rate-per-client"), clock=clock, time_scale=0.01) as mx, \
            client(mx) as smtp:
        rule = mx.profile.rules[0]
        assert rule.when.messages is not None
        assert rule.when.messages.rate == "5/0.6s"
        smtp.ehlo()
        for _ in range(5):
            assert mail_code(smtp) == 250
        assert mail_code(smtp) == 451
        clock.advance(0.61)  # 60 s at 0.01
        assert mail_code(smtp) == 250


def test_docs_greylist_only_unknown_senders() -> None:
    with FakeMX(example("greylist-unknown-senders")) as mx:
        partner = dialogue(mx.host, mx.port, sender="news@partner.example")
        assert partner.code("body") == 250  # the exception: never greylisted
        first = dialogue(mx.host, mx.port, sender="alice@new.example")
        assert first.code("rcpt") == 451
        assert "Greylisted" in first.text("rcpt")
        assert dialogue(mx.host, mx.port, sender="alice@new.example").code("body") == 250
        assert dialogue(mx.host, mx.port, sender="ALICE@new.example").code("body") == 250
        assert dialogue(mx.host, mx.port, sender="bob@new.example").code("rcpt") == 451


def test_docs_times_and_after() -> None:
    with FakeMX(example("times-and-after")) as mx:
        codes = [dialogue(mx.host, mx.port) for _ in range(6)]
        assert [t.code("mail") for t in codes] == [451, 451, 250, 250, 250, 250]
        assert [t.code("data") for t in codes[2:]] == [354, 354, 554, 554]
        mx.reset()  # forgets how often each rule matched and fired
        assert dialogue(mx.host, mx.port).code("mail") == 451


def test_a_run_time_rate_rule_is_scaled_like_the_profile() -> None:
    rule = rule_from_spec({"stage": "mail", "when": {"recipients": {
        "rate": "2/1m", "per": "sender"}, "not": {"within_seconds": 100}},
        "reply": {"code": 451}}, "test")
    scaled = scaled_rule(rule, 0.5)
    assert scaled.when.recipients is not None
    assert scaled.when.recipients.rate == "2/30.0s"
    assert scaled.when.not_ is not None
    assert scaled.when.not_.within_seconds == 50
    clock = FakeClock()
    with FakeMX(clock=clock, time_scale=0.01) as mx:
        mx.add_rule(stage="mail", when={"messages": {"rate": "1/100s", "per": "server"}},
                    reply={"code": 451, "text": "4.7.1 later"})
        with client(mx) as smtp:
            smtp.ehlo()
            assert mail_code(smtp) == 250
            assert mail_code(smtp) == 451
            clock.advance(1.01)  # 100 s at 0.01
            assert mail_code(smtp) == 250


# region the catalog's throttling profiles ------------------------------------


def test_connection_rate_profile_counts_connections_that_already_ended() -> None:
    clock = FakeClock()
    with FakeMX("4.7.0-connection-rate", clock=clock) as mx:
        for _ in range(3):  # positive control: 3 connections in 10 minutes are fine
            assert dialogue(mx.host, mx.port).code("body") == 250
        # Not concurrency: those three have ended, and the 4th is still refused.
        fourth = dialogue(mx.host, mx.port)
        assert fourth.code("ehlo") == 421
        assert fourth.text("ehlo").startswith("421 4.7.0 Try again later, closing connection.")
        mx.wait_for(ended=4)
        assert mx.sessions[-1].outcome is Outcome.CLOSED_AFTER_REPLY
        clock.advance(601)  # the window has passed
        assert dialogue(mx.host, mx.port).code("body") == 250


def test_server_busy_profile_defers_a_new_clients_first_two_messages() -> None:
    with FakeMX("4.7.500-server-busy") as mx:
        for _ in range(2):
            with client(mx) as smtp, pytest.raises(smtplib.SMTPDataError) as deferred:
                smtp.sendmail("a@sender.example", ["b@dest.example"], MESSAGE)
            assert deferred.value.smtp_code == 451
            error = deferred.value.smtp_error  # bytes at run time, typed bytes | str
            assert isinstance(error, bytes)
            assert error.startswith(
                b"4.7.500 Server busy. Please try again later from [127.0.0.1]. (AS77712344)")
        with client(mx) as smtp:  # the 3rd message from this address goes through
            assert smtp.sendmail("a@sender.example", ["b@dest.example"], MESSAGE) == {}
        # Another address is new to the server: deferred again (negation of a count).
        other = dialogue(mx.host, mx.port, source="127.0.0.2")
        assert other.code("body") == 451
        mx.wait_for(messages=1)


def test_ip_rate_limited_profile_limits_the_sixth_message_in_five_minutes() -> None:
    clock = FakeClock()
    with FakeMX("4.7.28-ip-rate-limited", clock=clock) as mx:
        for _ in range(5):  # positive control: 5 in 5 minutes go through
            assert dialogue(mx.host, mx.port).code("body") == 250
            clock.advance(30)
        limited = dialogue(mx.host, mx.port)
        reply = limited.text("body")
        assert reply.startswith("421-4.7.28 [127.0.0.1] Our system has detected an unusual"
                                " rate of\r\n421-4.7.28 unsolicited mail")
        assert "421 4.7.28 review our Bulk Email Senders Guidelines." in reply
        mx.wait_for(ended=6)
        assert mx.sessions[-1].outcome is Outcome.CLOSED_AFTER_REPLY
        # Per client: another address has sent nothing yet.
        assert dialogue(mx.host, mx.port, source="127.0.0.2").code("body") == 250
        clock.advance(300)  # 5 minutes after the refused one: the window is empty again
        assert dialogue(mx.host, mx.port).code("body") == 250


def test_too_many_recipients_profile_defers_those_over_three_per_message() -> None:
    with FakeMX("4.5.3-too-many-recipients") as mx, client(mx) as smtp:
        recipients = [f"bob{n}@dest.example" for n in range(1, 6)]
        assert smtp.sendmail("a@sender.example", recipients[:3], MESSAGE) == {}  # control
        refused = smtp.sendmail("a@sender.example", recipients, MESSAGE)
        assert refused == {r: (452, b"4.5.3 Error: too many recipients") for r in recipients[3:]}
        # The relay sends the rest in another transaction, which starts at 0 (RFC 3463 X.5.3).
        assert smtp.sendmail("a@sender.example", recipients[3:], MESSAGE) == {}
        mx.wait_for(messages=3)
        assert [m.rcpt_tos for m in mx.messages] == [
            tuple(recipients[:3]), tuple(recipients[:3]), tuple(recipients[3:])]


def test_storage_full_profile_refuses_mail_from_the_fourth_message_on() -> None:
    with FakeMX("4.3.1-storage-full-after-3-messages") as mx:
        for _ in range(3):  # positive control: 3 messages, each in its own connection
            with client(mx) as smtp:
                assert smtp.sendmail("a@sender.example", ["b@dest.example"], MESSAGE) == {}
        for _ in range(2):  # the 4th and later, in a new connection or not
            with client(mx) as smtp, pytest.raises(smtplib.SMTPSenderRefused) as refused:
                smtp.sendmail("a@sender.example", ["b@dest.example"], MESSAGE)
            assert (refused.value.smtp_code, refused.value.smtp_error) == (
                452, b"4.3.1 Insufficient system storage")
        # Per client: another address has sent nothing yet.
        assert dialogue(mx.host, mx.port, source="127.0.0.2").code("body") == 250
        mx.wait_for(messages=4)


def test_421_after_2_recipients_profile_closes_at_the_third_rcpt() -> None:
    with FakeMX("4.7.0-421-after-2-recipients") as mx:
        with client(mx) as smtp:  # positive control: 2 recipients go through
            assert smtp.sendmail("a@sender.example", ["b1@d.example", "b2@d.example"],
                                 MESSAGE) == {}
        with client(mx) as smtp:  # a new connection starts at 0
            smtp.ehlo()
            smtp.mail("a@sender.example")
            assert smtp.rcpt("b1@d.example")[0] == 250
            assert smtp.rcpt("b2@d.example")[0] == 250
            assert smtp.rcpt("b3@d.example") == (
                421, b"4.7.0 Too many recipients, closing connection")
            assert smtp.sock is not None
            assert smtp.sock.recv(1) == b""  # closed (FIN) after the 421
        mx.wait_for(ended=2)
        assert mx.sessions[-1].outcome is Outcome.CLOSED_AFTER_REPLY
        assert [m.rcpt_tos for m in mx.messages] == [("b1@d.example", "b2@d.example")]


def test_message_rate_profile_refuses_the_sixth_message_in_a_minute() -> None:
    clock = FakeClock()
    with FakeMX("4.7.1-message-rate-limit", clock=clock) as mx:
        for _ in range(5):  # positive control: 5 in a minute, each in its own connection
            with client(mx) as smtp:
                assert smtp.sendmail("a@sender.example", ["b@dest.example"], MESSAGE) == {}
            clock.advance(10)
        with client(mx) as smtp, pytest.raises(smtplib.SMTPSenderRefused) as refused:
            smtp.sendmail("other@sender.example", ["b@dest.example"], MESSAGE)
        assert (refused.value.smtp_code, refused.value.smtp_error) == (
            450, b"4.7.1 Error: too much mail from 127.0.0.1")
        # Per client: another address has its own count.
        assert dialogue(mx.host, mx.port, source="127.0.0.2").code("body") == 250
        clock.advance(60)  # a minute without trying: the window is empty again
        with client(mx) as smtp:
            assert smtp.sendmail("a@sender.example", ["b@dest.example"], MESSAGE) == {}
        mx.wait_for(messages=7)


def test_reset_forgets_counts_per_client_sender_and_server() -> None:
    profile = profile_from_data({"rules": [
        {"stage": "greeting", "when": {"sessions": {"above": 1, "per": "server"}},
         "reply": {"code": 421, "text": "4.7.0 busy", "close": True}},
    ]}, "test")
    with FakeMX(profile) as mx:
        assert dialogue(mx.host, mx.port).code("greeting") == 220
        with connect(mx.host, mx.port) as sock:
            assert read_reply(sock).startswith(b"421 4.7.0 busy")
            assert wait_closed(sock).how == "fin"
        mx.reset()
        assert dialogue(mx.host, mx.port).code("greeting") == 220
