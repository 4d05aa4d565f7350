"""Fuzzing the SMTP front with hypothesis: arbitrary command sequences and bytes.

Every example opens a real connection to one running server, sends what
hypothesis drew, then ends any DATA and says QUIT. The server must answer
only RFC-shaped reply lines, close the session (no hang), never crash, and go
on serving a healthy client. ``FAKEMX_FUZZ_EXAMPLES`` sets how many examples
(CI: 150; try 5000 on demand).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wire import dialogue

from fakemx import FakeMX, profile_from_data

EXAMPLES = int(os.environ.get("FAKEMX_FUZZ_EXAMPLES", "150"))
REPLY_LINE = re.compile(rb"^[2-5][0-9][0-9]([ -].*)?$")

VERBS = ["HELO", "EHLO", "MAIL FROM:", "RCPT TO:", "DATA", "RSET", "NOOP", "QUIT", "VRFY",
         "EXPN", "HELP", "AUTH PLAIN", "AUTH LOGIN", "STARTTLS", "BDAT 10 LAST", "BDAT",
         "XCLIENT ADDR=1.2.3.4", "ETRN", "TURN"]
ADDRESSES = ["<a@b.example>", "<>", "<@route:a@b>", "a@b", "<" + "x" * 300 + "@b>",
             "<a@b> SIZE=99999999999", "<a@b> BODY=8BITMIME SMTPUTF8", "<ünïcødé@b>"]

commands = st.one_of(
    st.builds(lambda v, a: f"{v}{a}".encode(), st.sampled_from(VERBS),
              st.sampled_from(["", " ", *ADDRESSES, " host.example", " [127.0.0.1]"])),
    st.binary(max_size=200),  # NUL, invalid UTF-8, anything
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.integers(1000, 1_100_000).map(lambda n: b"X" * n),  # overlong lines, up to 1 MB
    st.just(b".\r\n..\r\n.x\r\nbare\nlf\rcr"),  # lone dots, bare LF and CR
)
sessions = st.lists(commands, max_size=12).map(lambda cmds: b"".join(c + b"\r\n" for c in cmds))
pipelined = st.lists(st.sampled_from([b"NOOP", b"RSET", b"HELP", b"EHLO x"]), min_size=50,
                     max_size=400).map(lambda cmds: b"\r\n".join(cmds) + b"\r\n")


@pytest.fixture(scope="module")
def server() -> Iterator[FakeMX]:
    # No in-band triggers: a drawn address like stall-100@x would stall on purpose.
    with FakeMX(profile_from_data({"idle_timeout_seconds": 10}, "fuzz")) as mx:
        yield mx


def exchange(mx: FakeMX, payload: bytes) -> bytes:
    """Send the payload, end any DATA, QUIT; return all the server said before closing."""
    # Longer than the server's idle timeout (10 s): a handshake that garbage left
    # waiting for the rest of a TLS record ends when that timer closes it, and the
    # client must not give up first (it did, at 10 s too: a race, not a hang).
    with socket.create_connection((mx.host, mx.port), timeout=20) as sock:
        received = bytearray(sock.recv(4096))  # the greeting
        # The server may close first (e.g. after too many unknown commands).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(payload + b"\r\n.\r\nQUIT\r\n")
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except ConnectionResetError:
            pass  # e.g. a TLS handshake that garbage broke: closed, not hung
        except TimeoutError:
            pytest.fail(f"fakemx hung; it said {bytes(received[-300:])!r}")
    return bytes(received)


def assert_rfc_shaped(output: bytes) -> None:
    lines = output.split(b"\r\n")
    assert lines[-1] == b"", f"reply not ended by CRLF: {lines[-1][:100]!r}"
    for line in lines[:-1]:
        assert REPLY_LINE.match(line), f"not an SMTP reply line: {line[:200]!r}"


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=st.one_of(sessions, pipelined))
def test_arbitrary_input_gets_rfc_replies_and_no_hang(server: FakeMX, payload: bytes) -> None:
    assert_rfc_shaped(exchange(server, payload))


def test_server_still_serves_a_healthy_client_after_the_fuzzing(server: FakeMX) -> None:
    assert dialogue(server.host, server.port).code("body") == 250
    server.check()  # raises ServerSideError if anything failed inside the server
