"""What a client sees when fakemx hangs up during the body or after a FIN, as it keeps writing.

The ``*-during-body`` profiles fire on the first block of the body, so a
message of a hundred bytes meets them as a large one does; ``when.after_bytes``
keeps a threshold available. A FIN is what fakemx sends, but what a client
then sees depends on what it does next: one that reads gets end of file; one
that writes again gets EPIPE (fakemx's kernel answers the first write to the
closed socket with RST); and when fakemx closes with client bytes still unread
in its kernel (a large body), the kernel sends RST instead of FIN (RFC 2525
2.17), so the client gets ECONNRESET.
"""

from __future__ import annotations

import smtplib
import socket

import pytest
from wire import TIMEOUT, connect, read_reply, until, wait_closed

from fakemx import FakeMX, Outcome, Stage, profile_from_data

SMALL_BODY = b"Subject: small\r\n\r\nhello\r\n"  # most test messages are this size
LARGE_BODY = b"Subject: large\r\n\r\n" + (b"y" * 70 + b"\r\n") * (16 * 2**20 // 72)  # 16 MiB


def open_data(mx: FakeMX, *, data: bool = True) -> socket.socket:
    """A raw client that has had its 354 (or, ``data=False``, its RCPT's 250): the next
    bytes it sends are the body (or ``DATA`` and the body)."""
    sock = connect(mx.host, mx.port)
    assert read_reply(sock).startswith(b"220")
    for line in (b"EHLO client.example.net", b"MAIL FROM:<alice@sender.example>",
                 b"RCPT TO:<bob@dest.example>", b"DATA")[:None if data else 3]:
        sock.sendall(line + b"\r\n")
        assert read_reply(sock)[:1] in (b"2", b"3"), line
    return sock


def send_then_read(sock: socket.socket, data: bytes) -> bytes:
    sock.sendall(data)
    return sock.recv(1)  # in case the whole of it fitted in the buffers


@pytest.mark.usefixtures("control")
@pytest.mark.parametrize(("profile", "outcome"), [
    ("4.4.318-fin-during-body", Outcome.DROPPED_FIN),
    ("4.4.318-rst-during-body", Outcome.DROPPED_RST),
])
def test_body_drop_fires_on_a_small_message(profile: str, outcome: Outcome) -> None:
    with FakeMX(profile) as mx, smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as client:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail("alice@sender.example", ["bob@dest.example"], SMALL_BODY)
        mx.wait_for(ended=1)
    (session,) = mx.sessions
    assert (session.stage, session.outcome) == (Stage.BODY, outcome)
    assert not session.message_ids  # nothing accepted, nothing stored
    assert not mx.messages


@pytest.mark.usefixtures("control")
def test_fin_during_a_small_body_is_end_of_file_after_the_final_dot() -> None:
    # The whole message arrived in one read: the client has sent its final dot
    # and waits for the reply when the FIN comes (Postfix: "while sending end of data").
    with FakeMX("4.4.318-fin-during-body") as mx, open_data(mx) as sock:
        sock.sendall(SMALL_BODY + b".\r\n")
        closed = wait_closed(sock)
        mx.wait_for(ended=1)
    assert (closed.how, closed.data) == ("fin", b"")
    assert mx.sessions[0].outcome is Outcome.DROPPED_FIN
    assert not [e for e in mx.sessions[0].events if "unread" in e.text]  # a real FIN


@pytest.mark.usefixtures("control")
def test_fin_during_a_large_body_reaches_the_client_as_a_reset() -> None:
    # fakemx closes after the first block with megabytes unread in its kernel:
    # the kernel sends RST, not FIN, and the writing client gets ECONNRESET
    # (or EPIPE, had the reset already arrived before this write).
    # DATA and the body in one write: the body is already queued in fakemx's kernel
    # when it reads the first block, however the two threads are scheduled.
    with FakeMX("4.4.318-fin-during-body") as mx, open_data(mx, data=False) as sock:
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            send_then_read(sock, b"DATA\r\n" + LARGE_BODY + b".\r\n")
        mx.wait_for(ended=1)
    session = mx.sessions[0]
    assert session.outcome is Outcome.DROPPED_FIN  # fakemx closed; its kernel reset
    assert any(e.text.endswith("bytes from the client unread: the kernel resets (RST)")
               for e in session.events), session.events


def test_after_bytes_keeps_a_threshold() -> None:
    rules = [{"stage": "body", "when": {"after_bytes": 4096}, "drop": "fin"}]
    with FakeMX(profile_from_data({"rules": rules}, "test")) as mx, \
            smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as client:
        client.sendmail("alice@sender.example", ["bob@dest.example"], SMALL_BODY)  # under it
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.sendmail("alice@sender.example", ["bob@dest.example"],
                            SMALL_BODY + b"z" * 70 * 100)
        mx.wait_for(ended=1)
    assert len(mx.messages) == 1
    assert (mx.sessions[0].stage, mx.sessions[0].outcome) == (Stage.BODY, Outcome.DROPPED_FIN)


@pytest.mark.usefixtures("control")
def test_a_client_that_keeps_writing_after_the_fin_gets_epipe_or_econnreset() -> None:
    with FakeMX("4.4.318-fin-after-greeting") as mx, connect(mx.host, mx.port) as sock:
        closed = wait_closed(sock)  # the greeting, then end of file: a FIN
        assert (closed.how, closed.data[:4]) == ("fin", b"220 ")
        broken: list[OSError] = []

        def write_fails() -> bool:
            try:  # the first write is accepted; fakemx's kernel answers it with RST
                sock.sendall(b"EHLO client.example.net\r\n")
            except OSError as error:
                broken.append(error)
            return bool(broken)

        until(write_fails)
        mx.wait_for(ended=1)
    # EPIPE, or ECONNRESET when this write is the first to learn of the reset.
    assert isinstance(broken[0], (BrokenPipeError, ConnectionResetError)), broken
