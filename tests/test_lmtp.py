"""LMTP (RFC 2033): LHLO, and one reply per recipient after the message (smtplib.LMTP,
swaks --protocol LMTP, raw sockets, `fakemx serve --lmtp`; Postfix's lmtp(8) in tests/e2e)."""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_rules_v2 import example
from wire import TIMEOUT, command, connect, read_reply, serve_process

from fakemx import FakeMX, load_profile

MESSAGE = b"Subject: lmtp\r\n\r\nhello\r\n"
SWAKS = shutil.which("swaks")


@pytest.fixture
def lmtp_sink() -> Iterator[FakeMX]:
    with FakeMX("lmtp-sink") as mx:
        yield mx


def lhlo(sock: socket.socket) -> bytes:
    assert read_reply(sock).startswith(b"220 mx.fakemx.test LMTP fakemx")
    reply = command(sock, "LHLO client.example.net")
    assert reply.startswith(b"250-mx.fakemx.test")
    return reply


def replies(sock: socket.socket, count: int) -> list[bytes]:
    data = b""
    while data.count(b"\r\n") < count:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data.split(b"\r\n")[:count]


def deliver(sock: socket.socket, recipients: list[str], body: bytes = MESSAGE) -> list[bytes]:
    """MAIL, RCPT each, DATA and the body; the replies after the final dot."""
    assert command(sock, "MAIL FROM:<alice@example.net>").startswith(b"250")
    for recipient in recipients:
        assert command(sock, f"RCPT TO:<{recipient}>").startswith(b"250")
    assert command(sock, "DATA").startswith(b"354")
    sock.sendall(body + b".\r\n")
    return replies(sock, len(recipients))


def test_lhlo_offers_pipelining_and_enhanced_codes_and_ehlo_is_refused(lmtp_sink: FakeMX
                                                                        ) -> None:
    with connect(lmtp_sink.host, lmtp_sink.port) as sock:
        reply = lhlo(sock)
        # RFC 2033 5: an LMTP server must offer both
        assert b"250-PIPELINING" in reply
        assert b"250-ENHANCEDSTATUSCODES" in reply
        assert command(sock, "EHLO client.example.net").startswith(b"500 5.5.1 Error: this is"
                                                                  b" an LMTP server")
        assert command(sock, "HELO client.example.net").startswith(b"500 5.5.1")


def test_an_smtp_server_does_not_know_lhlo(sink: FakeMX) -> None:
    with connect(sink.host, sink.port) as sock:
        assert read_reply(sock).startswith(b"220 mx.fakemx.test ESMTP")
        assert command(sock, "LHLO client.example.net") == (
            b'500 Error: command "LHLO" not recognized\r\n')


def test_smtplib_lmtp_delivers_to_the_sink(lmtp_sink: FakeMX) -> None:
    with smtplib.LMTP(lmtp_sink.host, lmtp_sink.port, timeout=TIMEOUT) as client:
        assert client.sendmail("alice@example.net", ["bob@example.test"], MESSAGE) == {}
    lmtp_sink.wait_for(messages=1)
    assert lmtp_sink.messages[0].content == MESSAGE


def test_one_reply_per_recipient_in_rcpt_order(lmtp_sink: FakeMX) -> None:
    with connect(lmtp_sink.host, lmtp_sink.port) as sock:
        lhlo(sock)
        after_dot = deliver(sock, ["bob@example.test", "552-5.2.2+end_of_data@example.test",
                                   "carol@example.test"])
        stored = lmtp_sink.messages  # before the first 250 went out: no waiting
    assert [r[:3] for r in after_dot] == [b"250", b"552", b"250"]
    assert after_dot[1].startswith(b"552 5.2.2 Requested by in-band trigger")
    assert len(stored) == 1
    assert stored[0].rcpt_tos == ("bob@example.test", "carol@example.test")


def test_one_recipient_fails_profile() -> None:
    with FakeMX("lmtp-one-recipient-fails") as mx, connect(mx.host, mx.port) as sock:
        lhlo(sock)
        assert deliver(sock, ["bob1@example.test"])[0].startswith(b"250 2.0.0 OK")  # control
        after_dot = deliver(sock, ["bob1@example.test", "bob2@example.test"])
        assert after_dot[0].startswith(b"250 2.0.0 OK: queued as")
        assert after_dot[1] == (b"552 5.2.2 <bob2@example.test> Quota exceeded (mailbox for"
                                b" user is full)")
        assert [m.rcpt_tos for m in mx.messages] == [("bob1@example.test",)] * 2


def test_no_recipient_taken_means_nothing_stored() -> None:
    with FakeMX("lmtp-one-recipient-fails") as mx, connect(mx.host, mx.port) as sock:
        lhlo(sock)
        assert deliver(sock, ["bob2@example.test", "bob2@example.net"])[1].startswith(
            b"552 5.2.2 <bob2@example.net>")
        assert command(sock, "NOOP") == b"250 2.0.0 OK\r\n"
        assert mx.messages == []


def test_bdat_last_gets_a_reply_per_recipient_too() -> None:
    profile = load_profile("lmtp-one-recipient-fails")
    profile = profile.model_copy(update={"extensions": profile.extensions.model_copy(
        update={"chunking": True})})
    with FakeMX(profile) as mx, connect(mx.host, mx.port) as sock:
        assert b"CHUNKING" in lhlo(sock)
        command(sock, "MAIL FROM:<alice@example.net>")
        command(sock, "RCPT TO:<bob2@example.test>")
        command(sock, "RCPT TO:<bob1@example.test>")
        sock.sendall(b"BDAT %d LAST\r\n" % len(MESSAGE) + MESSAGE)
        assert [r[:3] for r in replies(sock, 2)] == [b"552", b"250"]
        assert mx.messages[0].content == MESSAGE


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed")
def test_swaks_reads_each_recipients_reply() -> None:
    with FakeMX("lmtp-one-recipient-fails") as mx:
        done = subprocess.run(
            [str(SWAKS), "--server", f"{mx.host}:{mx.port}", "--protocol", "LMTP",
             "--to", "bob1@example.test,bob2@example.test", "--from", "alice@example.net",
             "--timeout", "5"], capture_output=True, text=True, timeout=30)
        out = done.stdout
        assert "LHLO" in out, out
        assert "<-  250 2.0.0 OK: queued as 1" in out, out
        assert "<** 552 5.2.2 <bob2@example.test> Quota exceeded" in out, out
        mx.wait_for(messages=1)
        assert mx.messages[0].rcpt_tos == ("bob1@example.test",)


@pytest.mark.parametrize("flag", [["--lmtp"], ["--protocol", "lmtp"]])
def test_serve_lmtp(tmp_path: Path, flag: list[str]) -> None:
    process, port = serve_process(tmp_path, *flag)
    with process:
        try:
            with smtplib.LMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
                assert client.sendmail("alice@example.net", ["bob@example.test"], MESSAGE) == {}
        finally:
            process.terminate()
        assert process.wait(timeout=TIMEOUT) == 0


def test_docs_example_fails_bob2_alone() -> None:
    with FakeMX(example("lmtp-bob2-over-quota")) as mx, connect(mx.host, mx.port) as sock:
        lhlo(sock)
        after_dot = deliver(sock, ["bob1@example.test", "bob2@example.test"])
        assert [r[:3] for r in after_dot] == [b"250", b"552"]
