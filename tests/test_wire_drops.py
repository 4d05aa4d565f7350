"""4.4.318: fakemx ends the session at a chosen point with a real FIN or RST.

The client tells them apart as the kernel reports them: a FIN is end of file
(recv returns b""), an RST is ECONNRESET.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket

import aiosmtplib
import pytest
from wire import connect, dialogue, read_reply, wait_closed

from fakemx import FakeMX, Outcome, Stage, profile_from_data

# profile -> (FIN or RST, the client's step during which it ends, the stage fakemx journals)
DROPS = {
    "4.4.318-fin-after-connect": ("fin", "greeting", Stage.CONNECT),
    "4.4.318-rst-after-connect": ("rst", "greeting", Stage.CONNECT),
    "4.4.318-fin-after-ehlo": ("fin", "ehlo", Stage.EHLO),
    "4.4.318-rst-after-ehlo": ("rst", "ehlo", Stage.EHLO),
    "4.4.318-fin-after-mail": ("fin", "mail", Stage.MAIL),
    "4.4.318-rst-after-mail": ("rst", "mail", Stage.MAIL),
    "4.4.318-fin-after-rcpt": ("fin", "rcpt", Stage.RCPT),
    "4.4.318-rst-after-rcpt": ("rst", "rcpt", Stage.RCPT),
    "4.4.318-fin-on-data": ("fin", "data", Stage.DATA),
    "4.4.318-rst-on-data": ("rst", "data", Stage.DATA),
    "4.4.318-fin-during-body": ("fin", "body", Stage.BODY),
    "4.4.318-rst-during-body": ("rst", "body", Stage.BODY),
    "4.4.318-fin-after-final-dot": ("fin", "body", Stage.END_OF_DATA),
    "4.4.318-rst-after-final-dot": ("rst", "body", Stage.END_OF_DATA),
}


@pytest.mark.usefixtures("control")
@pytest.mark.parametrize("profile", list(DROPS))
def test_drop_point(profile: str) -> None:
    how, step, stage = DROPS[profile]
    with FakeMX(profile) as mx:
        transcript = dialogue(mx.host, mx.port)
        assert (transcript.ended_at, transcript.how) == (step, how), transcript
        mx.wait_for(ended=1)
        (session,) = mx.sessions
    assert session.stage is stage
    assert session.outcome is (Outcome.DROPPED_FIN if how == "fin" else Outcome.DROPPED_RST)
    assert not session.message_ids  # nothing was accepted, nothing stored


@pytest.mark.usefixtures("control")
def test_fin_right_after_greeting() -> None:
    # A client that only listens sees the greeting and then end of file. (One that
    # writes EHLO into the closed socket gets an RST back from fakemx's kernel.)
    with FakeMX("4.4.318-fin-after-greeting") as mx, socket_to(mx) as sock:
        closed = wait_closed(sock)
        mx.wait_for(ended=1)
    assert closed.how == "fin"
    assert closed.data == b"220 mx.fakemx.test ESMTP fakemx\r\n"
    assert mx.sessions[0].outcome is Outcome.CLOSED_AFTER_REPLY
    assert mx.sessions[0].stage is Stage.GREETING


@pytest.mark.usefixtures("control")
def test_rst_right_after_greeting() -> None:
    with FakeMX("4.4.318-rst-after-greeting") as mx:
        transcript = dialogue(mx.host, mx.port)
        mx.wait_for(ended=1)
    # The reset overtakes the greeting: a real RST discards what the client had not read.
    assert transcript.how == "rst"
    assert transcript.ended_at in ("greeting", "ehlo")
    assert mx.sessions[0].outcome is Outcome.RESET_AFTER_REPLY
    assert mx.sessions[0].replies == ["220 mx.fakemx.test ESMTP fakemx"]


def test_smtplib_sees_rst_as_reset_and_fin_as_close() -> None:
    with FakeMX("4.4.318-rst-after-mail") as mx, smtplib.SMTP(mx.host, mx.port, timeout=5) as c:
        c.ehlo("client.example.net")
        with pytest.raises(smtplib.SMTPServerDisconnected, match="reset by peer"):
            c.mail("alice@sender.example")
    with FakeMX("4.4.318-fin-after-mail") as mx, smtplib.SMTP(mx.host, mx.port, timeout=5) as c:
        c.ehlo("client.example.net")
        closed = r"^Connection unexpectedly closed$"  # no errno: a clean end of file
        with pytest.raises(smtplib.SMTPServerDisconnected, match=closed):
            c.mail("alice@sender.example")


async def test_aiosmtplib_sees_the_drop_after_rcpt() -> None:
    async with FakeMX("4.4.318-rst-after-rcpt") as mx:
        client = aiosmtplib.SMTP(hostname=mx.host, port=mx.port, timeout=5, start_tls=False)
        await client.connect()
        await client.ehlo(hostname="client.example.net")
        await client.mail("alice@sender.example")
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await client.rcpt("bob@dest.example")
        await wait_until_ended(mx)
        assert mx.sessions[0].outcome is Outcome.DROPPED_RST
        assert mx.sessions[0].stage is Stage.RCPT


def test_stall_then_close_is_silent_then_fin() -> None:
    # 30 s in the profile; time_scale makes it 0.3 s here.
    with FakeMX("4.4.318-stall-then-close", time_scale=0.01) as mx, socket_to(mx) as sock:
        read_reply(sock)
        sock.sendall(b"EHLO client.example.net\r\n")
        read_reply(sock)
        sock.sendall(b"MAIL FROM:<alice@sender.example>\r\n")
        sock.settimeout(0.1)
        with pytest.raises(TimeoutError):  # the hung server says nothing ...
            sock.recv(1)
        closed = wait_closed(sock)  # ... and then closes
        mx.wait_for(ended=1)
    assert (closed.how, closed.data) == ("fin", b"")
    session = mx.sessions[0]
    assert (session.outcome, session.stage) == (Outcome.DROPPED_FIN, Stage.MAIL)
    assert "stall 0.3 s" in [e.text for e in session.events]


def test_firewall_allow_list_resets_outsiders_before_the_greeting() -> None:
    with FakeMX("4.4.318-firewall-allow-list") as mx:
        transcript = dialogue(mx.host, mx.port)
        mx.wait_for(ended=1)
    assert (transcript.ended_at, transcript.how) == ("greeting", "rst")
    assert mx.sessions[0].outcome is Outcome.DROPPED_RST
    assert mx.sessions[0].stage is Stage.CONNECT


def test_allow_list_lets_listed_sources_in() -> None:
    rules = [{"stage": "connect", "when": {"client_ip_not": ["127.0.0.2"]}, "drop": "rst"}]
    with FakeMX(profile_from_data({"rules": rules}, "test")) as mx:
        allowed = dialogue(mx.host, mx.port, source="127.0.0.2")
        outsider = dialogue(mx.host, mx.port, source="127.0.0.3")
    assert allowed.ended_at is None
    assert allowed.code("body") == 250
    assert (outsider.ended_at, outsider.how) == ("greeting", "rst")


# helpers ------------------------------------------------------------------------


def socket_to(mx: FakeMX) -> socket.socket:
    return connect(mx.host, mx.port)


async def wait_until_ended(mx: FakeMX) -> None:
    # In async mode the server runs on this loop: wait_for would block it, so hand off.
    await asyncio.to_thread(mx.wait_for, ended=1)
