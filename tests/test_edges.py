"""The malformed and edge replies (#15), on the wire.

Raw sockets check the exact bytes and, through the kernel's count of data
segments received (TCP_INFO tcpi_data_segs_in), how they were cut into TCP
segments; smtplib, aiosmtplib and swaks show what real clients make of them.
Each test starts from a positive control: the same client against the sink.
Postfix's verdict for every catalog profile: tests/e2e/test_postfix.py.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import smtplib
import socket
import struct
import subprocess
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import aiosmtplib
import pytest
from api_harness import running_api
from tlshelp import verifying_context
from wire import TIMEOUT, Closed, command, connect, read_reply, wait_closed

from fakemx import FakeMX, Profile, ProfileError, load_profile, profile_from_data
from fakemx.cli import main
from fakemx.clientbytes import from_bytes
from fakemx.journal import Outcome
from fakemx.lint import lint
from fakemx.profiles import load_file
from fakemx.smtp.edges import SSH_BANNER, SSH_REFUSAL, pieces

DOCS = Path(__file__).resolve().parent.parent / "docs" / "profiles.md"
SENDER, RECIPIENT = "alice@sender.example", "bob@dest.example"
MESSAGE = b"Subject: edge\r\n\r\nan edge case\r\n"
SWAKS = shutil.which("swaks")
needs_swaks = pytest.mark.skipif(SWAKS is None, reason="swaks is not installed")
FAST = 0.1  # time_scale: the catalog's 0.5 s pauses become 0.05 s


def data_segments_in(sock: socket.socket) -> int:
    """Segments with data this socket has received (Linux TCP_INFO tcpi_data_segs_in)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return int(struct.unpack_from("I", info, 152)[0])


def exchange(sock: socket.socket, line: bytes = b"",
             reader: Callable[[socket.socket], bytes] = read_reply) -> tuple[bytes, int]:
    """Send ``line`` (none: the greeting is next), read the reply: it, and how many TCP
    segments it came in (counted from before the send, so no segment is missed)."""
    before = data_segments_in(sock)
    sock.sendall(line)
    reply = reader(sock)
    return reply, data_segments_in(sock) - before


@pytest.fixture
def dial() -> Iterator[Callable[[FakeMX], socket.socket]]:
    """Connect to a server; every socket is closed when the test ends."""
    opened: list[socket.socket] = []

    def dial(mx: FakeMX) -> socket.socket:
        opened.append(connect(mx.host, mx.port))
        return opened[-1]

    yield dial
    for sock in opened:
        sock.close()


Dial = Callable[[FakeMX], socket.socket]


def profile(rules: list[dict[str, object]], **settings: object) -> Profile:
    return profile_from_data({"rules": rules, **settings}, "test_edges")


def smtplib_send(mx: FakeMX) -> dict[str, tuple[int, bytes]]:
    with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as smtp:
        return smtp.sendmail(SENDER, [RECIPIENT], MESSAGE)


def aiosmtplib_send(mx: FakeMX, *, start_tls: bool = False) -> str:
    async def send() -> str:
        context = verifying_context(mx) if start_tls else None
        _, reply = await aiosmtplib.send(MESSAGE, sender=SENDER, recipients=[RECIPIENT],
                                         hostname=mx.host, port=mx.port, timeout=TIMEOUT,
                                         start_tls=start_tls, tls_context=context)
        return reply

    return asyncio.run(send())


def swaks(mx: FakeMX, *options: str) -> subprocess.CompletedProcess[str]:
    """swaks's transcript (stdout, with its *** errors from stderr) and exit code."""
    assert SWAKS is not None
    return subprocess.run([SWAKS, "--server", f"{mx.host}:{mx.port}", "--from", SENDER,
                           "--to", RECIPIENT, "--timeout", str(int(TIMEOUT)), *options],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=30, check=False)


def send_until_final_dot(sock: socket.socket) -> None:
    assert read_reply(sock).startswith(b"220 ")
    assert command(sock, "EHLO client.example.net").startswith(b"250")
    assert command(sock, f"MAIL FROM:<{SENDER}>").startswith(b"250")
    assert command(sock, f"RCPT TO:<{RECIPIENT}>").startswith(b"250")
    assert command(sock, "DATA").startswith(b"354")
    sock.sendall(MESSAGE + b".\r\n")


# region unterminated: the last line without CRLF, then FIN -------------------------


def test_unterminated_reply_is_stored_then_cut_before_its_crlf(control: None, dial: Dial) -> None:
    with FakeMX("4.4.318-unterminated-after-final-dot") as mx:
        sock = dial(mx)
        send_until_final_dot(sock)
        assert wait_closed(sock) == Closed("fin", b"250 2.0.0 Ok: queued")  # no CRLF
        mx.wait_for(messages=1, ended=1)  # a 250 went out: the message was stored first
        assert mx.sessions[0].outcome is Outcome.CLOSED_AFTER_REPLY


def test_unterminated_reply_through_clients(sink: FakeMX) -> None:
    assert smtplib_send(sink) == {}
    with FakeMX("4.4.318-unterminated-after-final-dot") as mx:
        # smtplib reads a line up to the EOF and takes it as the 250; only QUIT fails.
        smtp = smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT)
        assert smtp.sendmail(SENDER, [RECIPIENT], MESSAGE) == {}
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtp.quit()
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            aiosmtplib_send(mx)
        mx.wait_for(messages=2)  # both stored: a client that retries makes a duplicate


def test_unterminated_at_the_greeting_closes_with_the_text_only(dial: Dial) -> None:
    rules = [{"stage": "greeting", "unterminated": {"code": 220, "text": "{hostname} ESMTP"}}]
    with FakeMX(profile(rules)) as mx:
        closed = wait_closed(dial(mx))
        assert (closed.how, closed.data) == ("fin", b"220 mx.fakemx.test ESMTP")


# endregion
# region segmented: one reply in several TCP segments ------------------------------


def test_pieces_cut_evenly_and_keep_every_byte() -> None:
    assert pieces(b"220 ok\r\n", 3) == [b"220", b" o", b"k\r\n"]
    assert pieces(b"ab", 5) == [b"a", b"b"]  # never an empty segment
    assert b"".join(pieces(b"x" * 1000, 7)) == b"x" * 1000


def test_segmented_replies_arrive_in_several_segments_with_the_same_bytes(
        sink: FakeMX, dial: Dial) -> None:
    plain = dial(sink)
    greeting = read_reply(plain)
    assert data_segments_in(plain) == 1  # positive control: the sink's greeting: 1 segment
    ehlo = command(plain, "EHLO client.example.net")
    with FakeMX("segmented-replies", time_scale=FAST) as mx:
        sock = dial(mx)
        assert read_reply(sock) == greeting
        assert data_segments_in(sock) == 4  # nothing came before the greeting
        # the whole multi-line EHLO reply, cut in 6
        assert exchange(sock, b"EHLO client.example.net\r\n") == (ehlo, 6)
        assert command(sock, f"MAIL FROM:<{SENDER}>") == b"250 OK\r\n"  # not shaped
        assert command(sock, f"RCPT TO:<{RECIPIENT}>") == b"250 OK\r\n"
        assert command(sock, "DATA").startswith(b"354")
        assert exchange(sock, MESSAGE + b".\r\n") == (b"250 2.0.0 OK: queued as 1\r\n", 3)
        mx.wait_for(messages=1)


def test_segmented_replies_through_clients(sink: FakeMX) -> None:
    assert smtplib_send(sink) == {}
    with FakeMX("segmented-replies", time_scale=FAST) as mx:
        assert smtplib_send(mx) == {}
        assert aiosmtplib_send(mx).startswith("2.0.0 OK: queued as")
        mx.wait_for(messages=2)


def test_segmented_with_its_own_reply_over_tls() -> None:
    rules = [{"stage": "mail", "segmented": {"code": 451, "text": "4.3.0 <{sender}> later",
                                             "segments": 5, "pause_seconds": 0.01}}]
    with FakeMX(profile(rules)) as mx:
        with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as smtp:
            smtp.starttls(context=verifying_context(mx))
            smtp.ehlo()
            assert smtp.mail(SENDER) == (451, f"4.3.0 <{SENDER}> later".encode())
            assert smtp.rcpt(RECIPIENT)[0] == 503  # the session goes on after the 451
        assert "reply in 5 TCP segments, 0.01 s apart" in [
            e.text for e in mx.sessions[0].events]


def test_segment_pauses_scale_with_time_scale() -> None:
    scaled = load_profile("segmented-replies").scaled(0.01)
    assert [r.segmented.pause_seconds for r in scaled.rules if r.segmented] == \
        pytest.approx([0.005] * 3)


# endregion
# region mixed codes: 250- then 451 ------------------------------------------------


def test_mixed_codes_go_out_as_written_and_nothing_is_stored(control: None, dial: Dial) -> None:
    with FakeMX("4.4.7-mixed-codes-after-final-dot") as mx:
        sock = dial(mx)
        send_until_final_dot(sock)
        assert read_reply(sock) == (b"250-2.0.0 Ok: queued\r\n"
                                    b"451 4.3.0 Temporary failure, try again later\r\n")
        assert command(sock, "QUIT").startswith(b"221")  # the session goes on
        mx.wait_for(ended=1)
        assert mx.messages == []  # the last line said 451: not accepted, not kept


def test_mixed_codes_through_clients_count_the_last_line(sink: FakeMX) -> None:
    assert smtplib_send(sink) == {}
    with FakeMX("4.4.7-mixed-codes-after-final-dot") as mx:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            smtplib_send(mx)
        assert refused.value.smtp_code == 451
        with pytest.raises(aiosmtplib.SMTPDataError) as async_refused:
            aiosmtplib_send(mx)
        assert async_refused.value.code == 451


def test_mixed_codes_ending_in_250_store_the_message_first() -> None:
    rules = [{"stage": "end_of_data",
              "mixed_codes": {"lines": ["451-4.3.0 Not really", "250 2.0.0 Ok"]}}]
    with FakeMX(profile(rules)) as mx:
        assert smtplib_send(mx) == {}
        assert len(mx.messages) == 1  # stored before the reply went out


def test_mixed_codes_count_their_last_line_at_the_greeting_and_in_the_body(
        dial: Dial) -> None:
    greeting = [{"stage": "greeting", "mixed_codes": {"lines": ["220-mx.fakemx.test ESMTP",
                                                                "554 5.3.2 Go away"]}}]
    with FakeMX(profile(greeting)) as mx:
        sock = dial(mx)
        assert read_reply(sock) == b"220-mx.fakemx.test ESMTP\r\n554 5.3.2 Go away\r\n"
        assert command(sock, "EHLO client.example.net").startswith(b"503 5.5.1")  # refusing
    body = [{"stage": "body", "mixed_codes": {"lines": ["250-2.0.0 Ok", "451 4.3.0 Later"]}}]
    with FakeMX(profile(body)) as mx:
        with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as smtp:
            long_body = MESSAGE + b"a line of the body\r\n" * 500  # read in several blocks
            with pytest.raises(smtplib.SMTPDataError) as refused:
                smtp.sendmail(SENDER, [RECIPIENT], long_body)
            assert refused.value.smtp_code == 451
        mx.wait_for(ended=1)
        assert mx.messages == []  # the last line said 451


# endregion
# region helo_only: 502 to EHLO, 250 to HELO ---------------------------------------


def test_helo_only_refuses_ehlo_and_accepts_helo(control: None, dial: Dial) -> None:
    with FakeMX("helo-only-server") as mx:
        sock = dial(mx)
        assert read_reply(sock).startswith(b"220 ")
        assert command(sock, "EHLO client.example.net") == \
            b"502 5.5.1 Error: command not implemented\r\n"
        assert command(sock, "HELO client.example.net") == b"250 mx.fakemx.test\r\n"
        assert command(sock, "ehlo client.example.net").startswith(b"502 5.5.1")  # always
        assert command(sock, f"MAIL FROM:<{SENDER}>") == b"250 OK\r\n"


def test_helo_only_clients_fall_back_to_helo(sink: FakeMX) -> None:
    assert smtplib_send(sink) == {}
    with FakeMX("helo-only-server") as mx:
        assert smtplib_send(mx) == {}
        assert aiosmtplib_send(mx).startswith("2.0.0 OK: queued as")
        mx.wait_for(messages=2, ended=2)
        for session in mx.sessions:
            said = [e.text.split()[0] for e in session.events if e.kind == "client"]
            assert said[:2] == ["EHLO", "HELO"], said


def test_helo_only_offers_no_starttls_so_tls_cannot_be_required(sink: FakeMX) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=TIMEOUT) as smtp:
        assert smtp.starttls(context=verifying_context(sink))[0] == 220  # positive control
    with FakeMX("helo-only-server") as mx:
        smtp = smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT)
        with pytest.raises(smtplib.SMTPNotSupportedError, match="STARTTLS extension"):
            smtp.starttls(context=verifying_context(mx))
        smtp.quit()


# endregion
# region other_server: HTTP or SSH on the port -------------------------------------


def test_ssh_server_sends_its_banner_and_refuses_smtp(control: None, dial: Dial) -> None:
    with FakeMX("4.4.318-ssh-server-on-port") as mx:
        sock = dial(mx)
        assert sock.recv(1024) == SSH_BANNER == b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"
        sock.sendall(b"EHLO client.example.net\r\n")
        assert wait_closed(sock) == Closed("fin", SSH_REFUSAL)
        mx.wait_for(ended=1)
        events = [(e.kind, e.text) for e in mx.sessions[0].events]
        assert ("client", "EHLO client.example.net") in events


def test_a_first_line_too_long_to_read_is_refused_too(dial: Dial) -> None:
    with FakeMX("4.4.318-ssh-server-on-port") as mx:
        sock = dial(mx)
        assert sock.recv(1024) == SSH_BANNER
        sock.sendall(b"x" * 70_000)  # no line end, far over what fakemx reads
        closed = wait_closed(sock)
        # Unread bytes at the close may turn the FIN into an RST (RFC 1122 4.2.2.13).
        assert closed in (Closed("fin", SSH_REFUSAL), Closed("rst", b""),
                          Closed("rst", SSH_REFUSAL)), closed
        mx.wait_for(ended=1)
        events = [(e.kind, e.text) for e in mx.sessions[0].events]
        assert ("fakemx", "the client's first line is longer than fakemx reads") in events
        assert ("server", SSH_REFUSAL.decode().strip()) in events


def test_other_servers_close_a_silent_client_after_their_timeout(dial: Dial) -> None:
    with FakeMX("4.4.318-ssh-server-on-port", time_scale=0.002) as mx:  # 120 s -> 0.24 s
        assert wait_closed(dial(mx)) == Closed("fin", SSH_BANNER)
    with FakeMX("4.4.318-http-server-on-port", time_scale=0.002) as mx:  # 60 s -> 0.12 s
        assert wait_closed(dial(mx)) == Closed("fin", b"")  # not a word
        mx.wait_for(ended=1)
        assert mx.sessions[0].outcome is Outcome.DROPPED_FIN


def test_http_server_answers_the_first_line_as_nginx_does(dial: Dial) -> None:
    with FakeMX("4.4.318-http-server-on-port") as mx:
        sock = dial(mx)
        line = b"EHLO \xff\xfe.example\r\n"  # client bytes are data, kept losslessly
        sock.sendall(line)
        closed = wait_closed(sock)
        assert closed.how == "fin"
        head, body = closed.data.split(b"\r\n\r\n", 1)
        assert re.fullmatch(rb"HTTP/1\.1 400 Bad Request\r\nServer: nginx/1\.22\.1\r\n"
                            rb"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT\r\n"
                            rb"Content-Type: text/html\r\nContent-Length: 157\r\n"
                            rb"Connection: close", head)
        assert len(body) == 157
        assert b"<title>400 Bad Request</title>" in body
        mx.wait_for(ended=1)
        kept = [e.text for e in mx.sessions[0].events if e.kind == "client"]
        assert kept == [from_bytes(line[:-2])]


def test_other_servers_through_clients(sink: FakeMX) -> None:
    assert smtplib_send(sink) == {}
    with FakeMX("4.4.318-ssh-server-on-port", time_scale=0.002) as mx:
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib_send(mx)
        assert refused.value.smtp_code == -1  # no reply code in "SSH-2.0-..."
        with pytest.raises(aiosmtplib.SMTPResponseException,
                           match=r"Malformed SMTP response line: SSH-2\.0-OpenSSH"):
            aiosmtplib_send(mx)
    with FakeMX("4.4.318-http-server-on-port", time_scale=0.002) as mx:
        with pytest.raises(smtplib.SMTPServerDisconnected):
            smtplib_send(mx)
        with pytest.raises(aiosmtplib.SMTPConnectError, match="Unexpected EOF"):
            aiosmtplib_send(mx)


# endregion
# region swaks -----------------------------------------------------------------------

# What swaks 20201014 (Debian 12) makes of each profile: (does it say sent, did fakemx keep
# the message, the starts of lines in its transcript, in order).
SWAKS_SEES = {
    # fakemx kept it, swaks says it failed: a retry would deliver it twice
    "4.4.318-unterminated-after-final-dot": (False, 1, [" -> .", "*** Remote host closed"]),
    "segmented-replies": (True, 1, ["<-  250 2.0.0 OK: queued as 1"]),
    "4.4.7-mixed-codes-after-final-dot": (False, 0, [
        "<** 250-2.0.0 Ok: queued", "<** 451 4.3.0 Temporary failure, try again later"]),
    "helo-only-server": (True, 1, ["<** 502 5.5.1 Error: command not implemented", " -> HELO"]),
    "4.4.318-ssh-server-on-port": (False, 0, ["<** SSH-2.0-OpenSSH_9.2p1 Debian-2",
                                              "*** Remote host closed"]),
    "4.4.318-http-server-on-port": (False, 0, ["=== Connected to", "*** Remote host closed"]),
}


@needs_swaks
def test_swaks_sees_what_the_about_text_says(sink: FakeMX) -> None:
    assert swaks(sink).returncode == 0  # positive control
    for name, (sent, kept, lines) in SWAKS_SEES.items():
        with FakeMX(name, time_scale=0.01) as mx:  # ssh closes after 1.2 s, http 0.6 s
            result = swaks(mx)
            assert (result.returncode == 0) is sent, (name, result.stdout)
            assert in_order(result.stdout.splitlines(), lines), (name, result.stdout)
            assert len(mx.messages) == kept, name


def in_order(transcript: list[str], prefixes: list[str]) -> bool:
    """Does ``transcript`` have lines starting with each prefix, in this order?"""
    rest = iter(transcript)
    return all(any(line.startswith(prefix) for line in rest) for prefix in prefixes)


# endregion
# region inject_plaintext: lines after "220 Ready to start TLS" --------------------

INJECTED = b"220 Ready to start TLS\r\n250-mx.fakemx.test\r\n250 PIPELINING\r\n"


def test_injected_plaintext_comes_in_the_same_segment_as_the_220(dial: Dial) -> None:
    with FakeMX("starttls-plaintext-injection") as mx:
        sock = dial(mx)
        assert read_reply(sock).startswith(b"220 ")
        assert b"STARTTLS" in command(sock, "EHLO client.example.net")
        assert exchange(sock, b"STARTTLS\r\n", lambda s: s.recv(4096)) == (INJECTED, 1)
        # A client that drops what it read starts TLS cleanly; the server carries on.
        tls = verifying_context(mx).wrap_socket(sock, server_hostname="mx.fakemx.test")
        tls.settimeout(TIMEOUT)
        assert command(tls, "EHLO client.example.net").startswith(b"250-mx.fakemx.test\r\n")
        assert command(tls, f"MAIL FROM:<{SENDER}>") == b"250 OK\r\n"
        tls.close()


def test_injected_plaintext_is_discarded_by_smtplib_and_aiosmtplib(sink: FakeMX) -> None:
    with FakeMX("starttls-plaintext-injection") as mx:
        with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as smtp:
            assert smtp.starttls(context=verifying_context(mx))[0] == 220
            code, features = smtp.ehlo()
            assert code == 250
            assert b"PIPELINING" not in features  # the real reply, not the injected one
            assert smtp.sendmail(SENDER, [RECIPIENT], MESSAGE) == {}
        assert aiosmtplib_send(mx, start_tls=True).startswith("2.0.0 OK: queued as")
        mx.wait_for(messages=2, ended=2)
        assert all(s.tls for s in mx.sessions)


@needs_swaks
def test_swaks_reads_injected_plaintext_as_its_ehlo_reply_over_tls(sink: FakeMX) -> None:
    """swaks 20201014 (Debian 12) keeps its read buffer across the handshake."""
    support = subprocess.run([SWAKS or "", "--support"], capture_output=True, text=True,
                             check=False)
    if "=== TLS supported" not in support.stdout:
        pytest.skip("swaks lacks TLS (Debian: libnet-ssleay-perl, libio-socket-ssl-perl)")
    good = swaks(sink, "--tls")
    assert good.returncode == 0, good.stdout  # positive control: TLS, then sent
    with FakeMX("starttls-plaintext-injection") as mx:
        result = swaks(mx, "--tls")
        assert result.returncode != 0
        assert " ~> EHLO" in result.stdout
        after_ehlo = result.stdout.split(" ~> EHLO", 1)[1].splitlines()[1:3]
        assert after_ehlo == ["<~  250-mx.fakemx.test", "<~  250 PIPELINING"]
        assert mx.messages == []  # every reply one behind: the message never went


# endregion
# region the catalog's doors: list, explain, the lab page's API ----------------------

EDGE_PROFILES = ["4.4.318-unterminated-after-final-dot", "segmented-replies",
                 "4.4.7-mixed-codes-after-final-dot", "helo-only-server",
                 "4.4.318-http-server-on-port", "4.4.318-ssh-server-on-port",
                 "starttls-plaintext-injection"]


def test_edge_profiles_are_listed_explained_and_on_the_lab_page(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    for name in EDGE_PROFILES:
        assert name in listed
        assert main(["explain", name]) == 0
        explained = capsys.readouterr().out
        assert "Causes:" in explained
        assert "Fixes:" in explained
    with running_api(tmp_path) as running:
        http = running.http()
        on_the_page = {entry["name"] for entry in http.get("/api/catalog").json()}
        assert set(EDGE_PROFILES) <= on_the_page
        one = http.get("/api/catalog/starttls-plaintext-injection").json()
        assert "every later reply is one behind" in one["explanation"]


# endregion
# region the profile format ---------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ('stage = "end_of_data"\nmixed_codes = { lines = ["250-a", "250 b"] }',
         "rules[0].mixed_codes.lines: every line has the same code"),
        ('stage = "end_of_data"\nmixed_codes = { lines = ["250-a", "oops"] }',
         "rules[0].mixed_codes.lines: 'oops' is not a reply line"),
        ('stage = "end_of_data"\nmixed_codes = { lines = ["250 a", "451 b"] }',
         "write a multi-line reply"),
        ('stage = "mail"\nhelo_only = true', "helo_only only applies at stage 'ehlo'"),
        ('stage = "ehlo"\nother_server = { protocol = "ssh" }',
         "other_server only applies at stage 'greeting'"),
        ('stage = "greeting"\nother_server = { protocol = "ftp" }',
         "rules[0].other_server.protocol: Input should be 'http' or 'ssh'"),
        ('stage = "starttls"\ninject_plaintext = { lines = ["250 a\\n250 b"] }',
         "must be one line: give each line as its own item"),
        ('stage = "mail"\ninject_plaintext = { lines = ["250 a"] }',
         "inject_plaintext only applies at stage 'starttls'"),
        ('stage = "greeting"\nsegmented = { segments = 1 }',
         "rules[0].segmented.segments: Input should be greater than or equal to 2"),
        ('stage = "greeting"\nsegmented = { text = "hi" }', "text without code"),
        ('stage = "mail"\nunterminated = { code = 42 }', "rules[0].unterminated.code"),
        ('stage = "mail"\nunterminated = { code = 250, text = "a\\rb" }',
         "must not contain a carriage return"),
    ],
)
def test_bad_edge_rules_give_one_line(tmp_path: Path, rule: str, message: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(f"[[rules]]\n{rule}\n")
    with pytest.raises(ProfileError) as error:
        load_file(path)
    line = str(error.value)
    assert "\n" not in line
    assert line.startswith(f"{path}: ")
    assert line.endswith(")")
    assert message in line


def test_lint_knows_other_server_ends_the_session() -> None:
    found = lint(profile([{"stage": "greeting", "other_server": {"protocol": "http"}},
                          {"stage": "mail", "drop": "fin"}]))
    assert [f.problem for f in found] == [
        "never fires: rules[0] always ends the session at stage greeting, before mail"]


def docs_example(name: str) -> Profile:
    blocks = dict(re.findall(r"```toml\n# example: (\S+)\n(.*?)```", DOCS.read_text(),
                             re.DOTALL))
    assert name in blocks, f"docs/profiles.md has no example {name!r}"
    return profile_from_data(tomllib.loads(blocks[name]), f"docs example {name}")


@pytest.mark.parametrize("name", ["unterminated", "segmented", "mixed-codes", "helo-only",
                                  "other-server", "inject-plaintext"])
def test_docs_examples_load_and_lint_clean(name: str) -> None:
    assert lint(docs_example(name)) == []


# endregion


def test_every_shaped_reply_is_journaled_in_order() -> None:
    with FakeMX("segmented-replies", time_scale=FAST) as mx:
        assert smtplib_send(mx) == {}
        mx.wait_for(ended=1)
        server = [e.text for e in mx.sessions[0].events if e.kind == "server"]
        assert server[0] == "220 mx.fakemx.test ESMTP fakemx"
        assert server[-2:] == ["250 2.0.0 OK: queued as 1", "221 Bye"]
