"""Garbage on the connection gets an RFC reply, is journaled, and never stops the server."""

from __future__ import annotations

import ssl

import pytest
from wire import command, connect, dialogue, read_reply

from fakemx import FakeMX


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        (b"\x00\x01\x02\xff\xfe", b"500 "),
        (b"\xc3\x28 invalid utf-8", b"500 "),
        (b"X" * 5000, b"500 Command line too long"),
        (b"FROBNICATE now", b'500 Error: command "FROBNICATE" not recognized'),
        (b"MAIL FROM:", b"503 Error: send HELO first"),
        (b"EHLO", b"501 Syntax: EHLO hostname"),
        (b"", b"500 Error: bad syntax"),
        (b"BDAT 10 LAST", b'500 Error: command "BDAT" not recognized'),
    ],
)
def test_garbage_gets_a_reply_and_the_session_goes_on(line: bytes, reply: bytes) -> None:
    with FakeMX() as mx:
        with connect(mx.host, mx.port) as sock:
            read_reply(sock)
            sock.sendall(line + b"\r\n")
            assert read_reply(sock).startswith(reply)
            assert command(sock, "NOOP").startswith(b"250")
        # ... and the server still serves a healthy client afterwards.
        assert dialogue(mx.host, mx.port).code("body") == 250
        mx.wait_for(ended=2)
        assert reply.decode("ascii") in " ".join(mx.sessions[0].replies)


def test_dot_stuffing_and_bare_lf_in_the_body() -> None:
    body = b"Subject: dots\r\n\r\n..leading dot\r\nbare\nlf\r\n.\r\n"
    with FakeMX() as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        for line in ("EHLO relay.example.net", "MAIL FROM:<a@s.example>", "RCPT TO:<b@d.example>"):
            command(sock, line)
        assert command(sock, "DATA").startswith(b"354")
        sock.sendall(body)
        assert read_reply(sock).startswith(b"250 2.0.0")
        mx.wait_for(messages=1)
    assert mx.messages[0].content == b"Subject: dots\r\n\r\n.leading dot\r\nbare\nlf\r\n"


def test_auth_without_auth_in_the_profile_is_refused() -> None:
    with FakeMX() as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        command(sock, "EHLO relay.example.net")
        assert command(sock, "AUTH PLAIN AGFsaWNlAHNlY3JldA==").startswith(b"503 5.5.1")
        mx.wait_for(sessions=1)
        # Credentials never reach the journal (tests/test_auth.py: nor the store).
        assert "AUTH PLAIN ********" in mx.sessions[0].commands


def test_starttls_twice_is_refused_not_a_crash() -> None:
    # Found by tests/test_fuzz.py: aiosmtpd would stack a second TLS layer and crash.
    with FakeMX() as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        command(sock, "EHLO relay.example.net")
        assert command(sock, "STARTTLS").startswith(b"220")
        context = ssl.create_default_context(cafile=str(mx.ca_path))
        with context.wrap_socket(sock, server_hostname="mx.fakemx.test") as tls:
            command(tls, "EHLO relay.example.net")
            assert command(tls, "STARTTLS") == b"554 5.5.1 Error: TLS already active\r\n"
            assert command(tls, "NOOP").startswith(b"250")
        mx.wait_for(ended=1)
        mx.check()  # nothing went wrong inside the server


def test_help_lists_every_command() -> None:
    with FakeMX() as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        assert command(sock, "HELP") == (
            b"250 Supported commands: AUTH DATA EHLO HELO HELP MAIL NOOP QUIT RCPT RSET"
            b" STARTTLS VRFY\r\n"
        )
        assert command(sock, "HELP MAIL") == b"250 Syntax: MAIL FROM: <address>\r\n"
