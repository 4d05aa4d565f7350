"""Profiles that answer with a code: greetings (4.4.317), deferrals (4.4.7), policy (5.x.x)."""

from __future__ import annotations

import smtplib

import pytest
from wire import command, connect, dialogue, read_reply, wait_closed

from fakemx import FakeMX, Outcome, Stage

# profile -> (step, code, text fragment, stage journaled)
DEFERRALS = {
    "4.4.7-defer-greeting": ("greeting", 421, "4.3.2 System not accepting", Stage.GREETING),
    "4.4.7-defer-mail": ("mail", 451, "4.3.0 Mail server temporarily", Stage.MAIL),
    "4.4.7-defer-rcpt": ("rcpt", 450, "4.2.0 <bob@dest.example>: Recipient", Stage.RCPT),
    "4.4.7-defer-data": ("data", 451, "4.3.0 Error: queue file write", Stage.DATA),
    "4.4.7-defer-end-of-data": ("body", 451, "4.3.0 Temporary failure", Stage.END_OF_DATA),
    "5.1.1-unknown-recipient": ("rcpt", 550, "5.1.1 <bob@dest.example>: Recipient", Stage.RCPT),
    "5.7.1-reject-client-ip": ("rcpt", 554, "5.7.1 Service unavailable; Client host [127.0.0.1]",
                               Stage.RCPT),
}


@pytest.mark.usefixtures("control")
@pytest.mark.parametrize("profile", list(DEFERRALS))
def test_code_at_stage(profile: str) -> None:
    step, code, text, stage = DEFERRALS[profile]
    with FakeMX(profile) as mx:
        transcript = dialogue(mx.host, mx.port)
        mx.wait_for(ended=1)
    assert transcript.code(step) == code, transcript
    assert text in transcript.text(step)
    assert list(transcript.replies)[-1] == step  # nothing went further
    assert mx.sessions[0].stage is stage
    assert f"{code} {text}" in " ".join(mx.sessions[0].replies)
    assert mx.messages == []


@pytest.mark.usefixtures("control")
def test_greeting_421_then_close() -> None:
    with FakeMX("4.4.317-greeting-421") as mx, connect(mx.host, mx.port) as sock:
        closed = wait_closed(sock)
        mx.wait_for(ended=1)
    assert closed.how == "fin"
    assert closed.data.startswith(b"421 4.3.2 mx.fakemx.test Service not available")
    assert mx.sessions[0].outcome is Outcome.CLOSED_AFTER_REPLY


@pytest.mark.usefixtures("control")
def test_greeting_554_then_only_quit() -> None:
    # RFC 5321 3.1: after a 554 greeting the server answers 503 to everything but QUIT.
    with FakeMX("4.4.317-greeting-554") as mx, connect(mx.host, mx.port) as sock:
        assert read_reply(sock).startswith(b"554 5.3.2 mx.fakemx.test No SMTP service here")
        assert command(sock, "EHLO client.example.net").startswith(b"503 5.5.1")
        assert command(sock, "QUIT").startswith(b"221")
    with FakeMX("4.4.317-greeting-554") as mx:
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP(mx.host, mx.port, timeout=5)
        assert refused.value.smtp_code == 554


def test_helo_policy_rejects_bad_names_only() -> None:
    with FakeMX("5.7.1-reject-helo") as mx:
        good = dialogue(mx.host, mx.port, helo="relay.example.net")
        bad = dialogue(mx.host, mx.port, helo="localhost")
        literal = dialogue(mx.host, mx.port, helo="[127.0.0.1]")
    assert good.code("body") == 250
    assert bad.code("ehlo") == 550
    assert "5.7.1 <localhost>: Helo command rejected" in bad.text("ehlo")
    assert literal.code("ehlo") == 550


def test_sender_domain_policy() -> None:
    with FakeMX("5.7.1-reject-sender-domain") as mx:
        blocked = dialogue(mx.host, mx.port, sender="alice@contoso.onmicrosoft.com")
        other = dialogue(mx.host, mx.port, sender="alice@sender.example")
    assert blocked.code("mail") == 550
    assert "5.7.1 <alice@contoso.onmicrosoft.com>: Sender address rejected" in blocked.text("mail")
    assert other.code("body") == 250


def test_recipient_policy() -> None:
    with FakeMX("5.7.1-reject-recipient") as mx, smtplib.SMTP(mx.host, mx.port, timeout=5) as c:
        c.ehlo("relay.example.net")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            c.sendmail("a@sender.example", ["blocked-user@dest.example"], b"Subject: x\r\n\r\nx")
        assert refused.value.recipients["blocked-user@dest.example"][0] == 550
        assert c.sendmail("a@sender.example", ["bob@dest.example"], b"Subject: x\r\n\r\nx") == {}


def test_message_too_large() -> None:
    big = b"Subject: big\r\n\r\n" + (b"x" * 70 + b"\r\n") * 30
    with FakeMX("5.3.4-message-too-large") as mx, smtplib.SMTP(mx.host, mx.port, timeout=5) as c:
        c.ehlo("relay.example.net")
        assert c.esmtp_features["size"] == "1024"
        # smtplib declares SIZE= on MAIL (RFC 1870), so the refusal comes at MAIL ...
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            c.sendmail("a@sender.example", ["bob@dest.example"], big)
        assert refused.value.smtp_code == 552
        assert b"5.3.4" in refused.value.smtp_error
        c.rset()
        # ... and a client that does not declare it is refused after the final dot.
        c.mail("a@sender.example")
        c.rcpt("bob@dest.example")
        code, text = c.data(big)
        assert (code, text[:5]) == (552, b"5.3.4")
        assert c.sendmail("a@sender.example", ["bob@dest.example"], b"small") == {}
    assert len(mx.messages) == 1


def lines_of(size: int) -> bytes:
    """A message of exactly ``size`` bytes as sent (its last CRLF counted), in short lines."""
    whole, rest = divmod(size, 70)
    return (b"x" * 68 + b"\r\n") * whole + (b"y" * (rest - 2) + b"\r\n" if rest else b"")


@pytest.mark.parametrize(("size", "code"), [(1024, 250), (1025, 552)])
def test_size_limit_at_the_last_byte_without_size_declared(size: int, code: int) -> None:
    # The body arrives in one read: the limit is still the limit (RFC 1870 6.1, 552).
    with FakeMX("5.3.4-message-too-large") as mx, smtplib.SMTP(mx.host, mx.port, timeout=5) as c:
        c.ehlo("relay.example.net")
        c.mail("a@sender.example")
        c.rcpt("bob@dest.example")
        message = lines_of(size)
        assert len(message) == size
        code_seen, _ = c.data(message)
        assert code_seen == code


def test_firewall_masks_banner_and_strips_starttls() -> None:
    with FakeMX() as healthy, smtplib.SMTP(healthy.host, healthy.port, timeout=5) as c:
        c.ehlo("relay.example.net")
        assert c.has_extn("starttls")  # positive control: the healthy server offers it
    with FakeMX("4.4.318-firewall-smtp-inspection") as mx, connect(mx.host, mx.port) as sock:
        assert read_reply(sock) == b"220 *****\r\n"
        ehlo = command(sock, "EHLO relay.example.net")
        assert ehlo.startswith(b"250-mx.fakemx.test\r\n")
        assert b"STARTTLS" not in ehlo
        assert ehlo.endswith(b"250 HELP\r\n")
        # The firewall blanks the command too, so the server does not recognise it.
        assert command(sock, "STARTTLS").startswith(b"500 5.5.2")
        assert command(sock, "QUIT").startswith(b"221")
