"""BDAT (RFC 3030 CHUNKING) on the wire: no client library sends it (smtplib, aiosmtplib,
swaks, Postfix 3.7's smtp(8) all send DATA), so these tests write it on raw sockets."""

from __future__ import annotations

import smtplib
import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz import assert_rfc_shaped, exchange
from test_rules_v2 import example
from wire import command, connect, dialogue, read_reply, until, wait_closed

from fakemx import FakeMX, load_profile, profile_from_data

MESSAGE = b"From: a@example.net\r\nTo: b@example.test\r\nSubject: chunks\r\n\r\nhello\r\n"
# Bytes DATA could not carry as they are: NUL, a bare LF, a lone dot line, a long line.
BINARY = b"\x00\x01\xff\n.\r\n.\r\n" + b"y" * 3000 + b"\r\n"


@pytest.fixture
def chunking() -> Iterator[FakeMX]:
    profile = profile_from_data({"inband": True, "extensions": {"chunking": True}}, "chunking")
    with FakeMX(profile) as mx:
        yield mx


def transaction(mx: FakeMX, recipients: tuple[str, ...] = ("bob@example.test",)
                ) -> socket.socket:
    sock = connect(mx.host, mx.port)
    assert read_reply(sock).startswith(b"220")
    assert b"CHUNKING" in command(sock, "EHLO client.example.net")
    assert command(sock, "MAIL FROM:<alice@example.net>").startswith(b"250")
    for recipient in recipients:
        assert command(sock, f"RCPT TO:<{recipient}>").startswith(b"250")
    return sock


def bdat(sock: socket.socket, chunk: bytes, *, last: bool = False) -> bytes:
    sock.sendall(f"BDAT {len(chunk)}{' LAST' if last else ''}\r\n".encode() + chunk)
    return read_reply(sock)


def replies(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` replies, whether they came in one segment or several."""
    data = b""
    while data.count(b"\r\n") < count:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data.split(b"\r\n")[:count]


def test_the_same_message_by_data_and_by_bdat_is_stored_the_same(chunking: FakeMX) -> None:
    with smtplib.SMTP(chunking.host, chunking.port, timeout=5) as client:  # positive control
        client.sendmail("alice@example.net", ["bob@example.test"], MESSAGE)
    with transaction(chunking) as sock:
        assert bdat(sock, MESSAGE[:20]) == b"250 2.0.0 Ok: 20 octets received\r\n"
        assert bdat(sock, MESSAGE[20:], last=True).startswith(b"250 2.0.0 OK: queued as")
        # Stored before the 250 went out: no waiting here.
        by_data, by_bdat = chunking.messages
    assert by_bdat.content == by_data.content == MESSAGE
    assert by_bdat.rcpt_tos == ("bob@example.test",)


def test_chunks_carry_any_octets_losslessly(chunking: FakeMX) -> None:
    with transaction(chunking) as sock:
        for piece in (MESSAGE, BINARY):
            assert bdat(sock, piece).startswith(b"250 2.0.0 Ok")
        assert bdat(sock, b"", last=True).startswith(b"250 2.0.0 OK: queued as")  # BDAT 0 LAST
    assert chunking.messages[-1].content == MESSAGE + BINARY


def test_a_pipelined_group_of_chunks_gets_its_replies_in_order(chunking: FakeMX) -> None:
    with transaction(chunking) as sock:
        group = b"".join(f"BDAT {len(p)}\r\n".encode() + p for p in (b"a" * 10, BINARY))
        sock.sendall(group + b"BDAT 3 LAST\r\nend" + b"NOOP\r\n")  # one segment
        assert replies(sock, 4) == [
            b"250 2.0.0 Ok: 10 octets received",
            f"250 2.0.0 Ok: {len(BINARY)} octets received".encode(),
            b"250 2.0.0 OK: queued as 1",
            b"250 OK",
        ]
    assert chunking.messages[0].content == b"a" * 10 + BINARY + b"end"


@pytest.mark.parametrize(("before", "reply"), [
    ([], b"503 5.5.1 Error: need MAIL command"),
    (["MAIL FROM:<alice@example.net>"], b"503 5.5.1 Error: need RCPT command"),
])
def test_a_chunk_out_of_sequence_is_read_and_refused(chunking: FakeMX, before: list[str],
                                                     reply: bytes) -> None:
    with connect(chunking.host, chunking.port) as sock:
        read_reply(sock)
        command(sock, "EHLO client.example.net")
        for line in before:
            assert command(sock, line).startswith(b"250")
        # The chunk looks like commands: were it not read, they would be answered.
        assert bdat(sock, b"QUIT\r\nQUIT\r\n").rstrip() == reply
        assert command(sock, "NOOP") == b"250 OK\r\n"
    assert chunking.messages == []


def test_data_and_rcpt_after_bdat_are_refused(chunking: FakeMX) -> None:
    with transaction(chunking) as sock:
        assert bdat(sock, b"part one\r\n").startswith(b"250")
        assert command(sock, "DATA") == b"503 5.5.1 Error: DATA after BDAT\r\n"
        assert command(sock, "RCPT TO:<carol@example.test>") == (
            b"503 5.5.1 Error: RCPT after BDAT\r\n")
        assert bdat(sock, b"part two\r\n", last=True).startswith(b"250 2.0.0 OK: queued")
    assert chunking.messages[0].content == b"part one\r\npart two\r\n"
    assert chunking.messages[0].rcpt_tos == ("bob@example.test",)


def test_a_bdat_without_a_count_ends_the_session(chunking: FakeMX) -> None:
    with transaction(chunking) as sock:
        sock.sendall(b"BDAT many LAST\r\n")
        closed = wait_closed(sock)
    assert closed.how == "fin"
    assert closed.data == b"521 5.5.4 Syntax: BDAT count [LAST]\r\n"


def test_without_chunking_bdat_is_an_unknown_command(sink: FakeMX) -> None:
    with connect(sink.host, sink.port) as sock:
        read_reply(sock)
        assert b"CHUNKING" not in command(sock, "EHLO client.example.net")
        assert command(sock, "BDAT 4 LAST") == b'500 Error: command "BDAT" not recognized\r\n'


def test_a_message_over_the_size_limit_is_read_and_refused() -> None:
    profile = profile_from_data({"max_message_size": 100, "extensions": {"chunking": True}},
                                "small")
    with FakeMX(profile) as mx, transaction(mx) as sock:
        assert bdat(sock, b"x" * 60).startswith(b"250")
        assert bdat(sock, b"QUIT\r\n" * 10) == (
            b"552 5.3.4 Message size exceeds fixed maximum message size\r\n")
        # The transaction failed: a chunk already pipelined after it needs a new MAIL.
        assert bdat(sock, b"z", last=True) == b"503 5.5.1 Error: need MAIL command\r\n"
        assert command(sock, "NOOP") == b"250 OK\r\n"
        assert mx.messages == []


def test_bdat_chunk_rejected_profile() -> None:
    with FakeMX("4.3.0-bdat-chunk-rejected") as mx:
        with smtplib.SMTP(mx.host, mx.port, timeout=5) as client:  # DATA is not touched
            assert client.sendmail("alice@example.net", ["bob@example.test"], MESSAGE) == {}
        with transaction(mx) as sock:
            sock.sendall(b"BDAT 10\r\n0123456789BDAT 2 LAST\r\nok")  # pipelined after it
            assert replies(sock, 2) == [b"451 4.3.0 Error: queue file write error",
                                        b"503 5.5.1 Error: need MAIL command"]
            assert command(sock, "RSET") == b"250 OK\r\n"
        assert len(mx.messages) == 1
        assert any("rule bdat-reply fires after a BDAT chunk" in e.text
                   for e in mx.sessions[-1].events)


def test_data_body_and_end_of_data_rules_apply_to_bdat_too() -> None:
    profile = profile_from_data({"inband": True, "extensions": {"chunking": True}, "rules": [
        {"stage": "data", "when": {"helo": ["deferred.*"]},
         "reply": {"code": 451, "text": "4.3.0 not now"}},
        {"stage": "body", "when": {"after_bytes": 1000}, "reply": {"code": 552,
                                                                   "text": "5.3.4 too big"}},
    ]}, "rules")
    with FakeMX(profile) as mx:
        with connect(mx.host, mx.port) as sock:  # data: at the first chunk
            read_reply(sock)
            command(sock, "EHLO deferred.example.net")
            command(sock, "MAIL FROM:<a@example.net>")
            command(sock, "RCPT TO:<b@example.test>")
            assert bdat(sock, b"x" * 10) == b"451 4.3.0 not now\r\n"
        with transaction(mx) as sock:  # body: its reply waits for LAST, as for the dot
            assert bdat(sock, b"x" * 1500).startswith(b"250 2.0.0 Ok")
            assert bdat(sock, b"x", last=True) == b"552 5.3.4 too big\r\n"
        with transaction(mx, ("552-5.3.4+end_of_data@example.test",)) as sock:  # in-band
            assert bdat(sock, b"x", last=True).startswith(b"552 5.3.4 Requested by in-band")
        assert mx.messages == []


def test_a_client_gone_mid_chunk_is_no_error(chunking: FakeMX) -> None:
    with transaction(chunking) as sock:
        sock.sendall(b"BDAT 1000 LAST\r\nonly a few")
    until(lambda: chunking.sessions and chunking.sessions[0].ended is not None)
    chunking.check()  # no incident: the client's hang-up is the client's business
    assert chunking.messages == []
    assert chunking.sessions[0].outcome.value == "client_closed"


def test_bdat_rule_lint_needs_chunking() -> None:
    from fakemx.lint import lint

    profile = load_profile("4.3.0-bdat-chunk-rejected")
    assert lint(profile) == []
    without = profile.model_copy(update={"extensions": profile.extensions.model_copy(
        update={"chunking": False})})
    assert [f.problem for f in lint(without)] == [
        "never fires: CHUNKING is not advertised, so no client sends BDAT"]


def test_docs_example_refuses_chunks_for_one_sender() -> None:
    with FakeMX(example("bdat-refused-for-one-sender")) as mx:
        for sender, reply in (("alice@example.net", b"250 2.0.0 OK: queued as 1\r\n"),
                              ("news@bulk.example", b"451 4.3.0 Error: queue file write"
                                                    b" error\r\n")):
            with connect(mx.host, mx.port) as sock:
                read_reply(sock)
                command(sock, "EHLO client.example.net")
                command(sock, f"MAIL FROM:<{sender}>")
                command(sock, "RCPT TO:<bob@example.test>")
                assert bdat(sock, MESSAGE, last=True) == reply
        assert [m.mail_from for m in mx.messages] == ["alice@example.net"]


def test_help_lists_bdat_only_with_chunking(chunking: FakeMX, sink: FakeMX) -> None:
    for mx, listed in ((chunking, True), (sink, False)):
        with connect(mx.host, mx.port) as sock:
            read_reply(sock)
            assert (b" BDAT " in command(sock, "HELP")) is listed


# region fuzzing: chunks and commands interleaved, with every extension advertised ----

_STEPS = st.one_of(
    st.sampled_from([b"EHLO x\r\n", b"MAIL FROM:<a@b.example> RET=HDRS ENVID=e\r\n",
                     b"RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE\r\n", b"DATA\r\n",
                     b"RSET\r\n", b"NOOP\r\n", b"BDAT\r\n", b"BDAT -1\r\n", b"BDAT 1 LAST x\r\n",
                     b"MAIL FROM:<a@b.example> REQUIRETLS SMTPUTF8\r\n"]),
    st.builds(lambda data, last: b"BDAT %d%s\r\n" % (len(data), b" LAST" if last else b"")
              + data, st.binary(max_size=300), st.booleans()),
    st.binary(max_size=60),
)


@pytest.fixture(scope="module")
def fuzzed() -> Iterator[FakeMX]:
    profile = profile_from_data({
        "idle_timeout_seconds": 10, "max_message_size": 500,
        "extensions": {"pipelining": True, "chunking": True, "dsn": True,
                       "enhancedstatuscodes": True, "requiretls": True}}, "fuzz-extensions")
    with FakeMX(profile) as mx:
        yield mx


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(_STEPS, max_size=10))
def test_chunks_and_commands_in_any_order_get_rfc_replies(fuzzed: FakeMX,
                                                          steps: list[bytes]) -> None:
    assert_rfc_shaped(exchange(fuzzed, b"".join(steps)))


def test_still_serving_after_the_chunk_fuzzing(fuzzed: FakeMX) -> None:
    assert dialogue(fuzzed.host, fuzzed.port, body_size=200).code("body") == 250
    fuzzed.check()  # nothing failed inside the server


# endregion
