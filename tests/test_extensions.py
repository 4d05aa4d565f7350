"""EHLO extensions per profile: what is advertised works, what is withheld is refused, and
pipelined replies stay in order (smtplib, aiosmtplib, swaks and raw sockets)."""

from __future__ import annotations

import re
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from email.message import EmailMessage

import aiosmtplib
import pytest
from tlshelp import verifying_context
from wire import TIMEOUT, command, connect, read_reply, wait_closed

from fakemx import FakeMX, load_profile, profile_from_data
from fakemx.extensions import Extensions, split_parameters, with_enhanced_code

TODAY = ["mx.fakemx.test", "SIZE 33554432", "8BITMIME", "SMTPUTF8", "STARTTLS", "HELP"]
ALL = ["mx.fakemx.test", "PIPELINING", "SIZE 33554432", "8BITMIME", "SMTPUTF8", "STARTTLS",
       "ENHANCEDSTATUSCODES", "DSN", "CHUNKING", "HELP"]
MESSAGE = b"Subject: ext\r\n\r\nhello\r\n"
SWAKS = shutil.which("swaks")
needs_swaks = pytest.mark.skipif(SWAKS is None, reason="swaks is not installed")


def ehlo(mx: FakeMX) -> list[str]:
    with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as client:
        code, text = client.ehlo("client.example.net")
        assert code == 250
        return text.decode().split("\n")


def withholding(**extensions: bool) -> FakeMX:
    return FakeMX(profile_from_data({"extensions": extensions}, "withheld"))


@pytest.fixture
def all_extensions() -> Iterator[FakeMX]:
    with FakeMX("sink-all-extensions") as mx:
        yield mx


# region what EHLO says -------------------------------------------------------------


def test_the_default_ehlo_reply_is_unchanged(sink: FakeMX) -> None:
    assert ehlo(sink) == TODAY


def test_every_extension_advertised_and_requiretls_only_under_tls(all_extensions: FakeMX
                                                                  ) -> None:
    assert ehlo(all_extensions) == ALL
    with connect(all_extensions.host, all_extensions.port) as sock:  # not before TLS
        read_reply(sock)
        command(sock, "EHLO client.example.net")
        assert command(sock, "MAIL FROM:<a@example.net> REQUIRETLS") == (
            b"555 5.5.4 Unsupported option: REQUIRETLS\r\n")
    with smtplib.SMTP(all_extensions.host, all_extensions.port, timeout=TIMEOUT) as client:
        client.starttls(context=verifying_context(all_extensions))
        _, text = client.ehlo("client.example.net")
        keywords = text.decode().split("\n")
        assert "REQUIRETLS" in keywords
        assert "STARTTLS" not in keywords
        # RFC 8689: the MAIL FROM option, taken once TLS is up
        assert client.mail("alice@example.net", ["REQUIRETLS"]) == (250, b"2.0.0 OK")


def test_withheld_extensions_leave_the_ehlo_reply() -> None:
    with withholding(smtputf8=False, eightbitmime=False, size=False) as mx:
        assert ehlo(mx) == ["mx.fakemx.test", "STARTTLS", "HELP"]


# endregion
# region parameters of withheld extensions: Postfix's 555 5.5.4 ---------------------


@pytest.mark.parametrize(("withheld", "line"), [
    ({"smtputf8": False}, "MAIL FROM:<alice@example.net> SMTPUTF8"),
    ({"eightbitmime": False}, "MAIL FROM:<alice@example.net> BODY=8BITMIME"),
    ({"size": False}, "MAIL FROM:<alice@example.net> SIZE=100"),
    ({}, "MAIL FROM:<alice@example.net> RET=HDRS"),  # DSN is withheld by default
    ({}, "MAIL FROM:<alice@example.net> ENVID=abc"),
    ({}, "MAIL FROM:<alice@example.net> REQUIRETLS"),  # withheld, and no TLS anyway
])
def test_a_withheld_extensions_mail_parameter_is_unsupported(
        withheld: dict[str, bool], line: str) -> None:
    option = line.rsplit(" ", 1)[1]
    with withholding(**withheld) as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        command(sock, "EHLO client.example.net")
        assert command(sock, "MAIL FROM:<alice@example.net>").startswith(b"250")  # control
        command(sock, "RSET")
        assert command(sock, line) == f"555 5.5.4 Unsupported option: {option}\r\n".encode()


def test_dsn_parameters_on_rcpt_need_dsn(sink: FakeMX) -> None:
    with smtplib.SMTP(sink.host, sink.port, timeout=TIMEOUT) as client:
        client.ehlo("client.example.net")
        client.mail("alice@example.net")
        assert client.rcpt("bob@example.test", ["NOTIFY=SUCCESS"]) == (
            555, b"5.5.4 Unsupported option: NOTIFY=SUCCESS")


async def test_aiosmtplib_will_not_send_a_utf8_address_without_smtputf8() -> None:
    async with FakeMX("5.6.7-smtputf8-not-offered") as mx:
        smtp = aiosmtplib.SMTP(hostname=mx.host, port=mx.port, timeout=TIMEOUT,
                               start_tls=False)
        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = (
            "alice@example.net", "jürgen@example.test", "umlaut")
        async with smtp:
            with pytest.raises(aiosmtplib.SMTPNotSupported, match="SMTPUTF8 is not supported"):
                await smtp.send_message(message)
        errors, _ = await aiosmtplib.send(MESSAGE, sender="alice@example.net",
                                          recipients=["bob@example.test"], hostname=mx.host,
                                          port=mx.port, timeout=TIMEOUT, start_tls=False)
        assert errors == {}  # an ASCII envelope goes through


# endregion
# region DSN (RFC 3461) -------------------------------------------------------------


def test_dsn_parameters_are_taken_and_journaled(all_extensions: FakeMX) -> None:
    with smtplib.SMTP(all_extensions.host, all_extensions.port, timeout=TIMEOUT) as client:
        refused = client.sendmail(
            "alice@example.net", ["bob@example.test"], MESSAGE,
            mail_options=["RET=HDRS", "ENVID=QQ314159"],
            rcpt_options=["NOTIFY=SUCCESS,DELAY", "ORCPT=rfc822;bob@example.test"])
    assert refused == {}
    all_extensions.wait_for(messages=1)
    notes = [e.text for e in all_extensions.sessions[0].events if e.kind == "fakemx"]
    assert "MAIL parameters taken: RET=HDRS ENVID=QQ314159" in notes
    assert "RCPT parameters taken: NOTIFY=SUCCESS,DELAY ORCPT=rfc822;bob@example.test" in notes


@pytest.mark.parametrize(("line", "reply"), [
    ("MAIL FROM:<a@example.net> RET=ALL", "501 5.5.4 Error: Bad RET parameter syntax"),
    ("MAIL FROM:<a@example.net> RET=FULL RET=HDRS", "501 5.5.4 Error: multiple RET parameters"),
    ("MAIL FROM:<a@example.net> ENVID=" + "x" * 101, "501 5.5.4 Error: Bad ENVID parameter"),
    ("RCPT TO:<b@example.test> NOTIFY=NEVER,SUCCESS", "501 5.5.4 Error: Bad NOTIFY parameter"),
    ("RCPT TO:<b@example.test> ORCPT=bob", "501 5.5.4 Error: Bad ORCPT parameter syntax"),
])
def test_bad_dsn_parameters_get_501(all_extensions: FakeMX, line: str, reply: str) -> None:
    with connect(all_extensions.host, all_extensions.port) as sock:
        read_reply(sock)
        command(sock, "EHLO client.example.net")
        if line.startswith("RCPT"):
            command(sock, "MAIL FROM:<a@example.net>")
        assert command(sock, line).decode().startswith(reply)


async def test_dsn_refused_profile_with_aiosmtplib() -> None:
    async with FakeMX("5.7.1-dsn-refused") as mx:
        send = {"sender": "alice@example.net", "recipients": ["bob@example.test"],
                "hostname": mx.host, "port": mx.port, "timeout": TIMEOUT, "start_tls": False}
        errors, _ = await aiosmtplib.send(MESSAGE, **send)  # positive control
        assert errors == {}
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await aiosmtplib.send(MESSAGE, **send, rcpt_options=["NOTIFY=FAILURE"])
        error = refused.value.recipients[0]
        assert (error.code, error.message) == (501, "5.7.1 DSN support is disabled")
        assert len(mx.messages) == 1


# endregion
# region ENHANCEDSTATUSCODES (RFC 2034) ----------------------------------------------

_CODED = re.compile(rb"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3} ")


def test_every_reply_carries_an_enhanced_code_once_advertised(all_extensions: FakeMX) -> None:
    with connect(all_extensions.host, all_extensions.port) as sock:
        read_reply(sock)  # the greeting and the EHLO reply are exempt (RFC 2034 4)
        command(sock, "EHLO client.example.net")
        for line in ("NOOP", "RCPT TO:<b@example.test>", "MAIL FROM:<a@example.net>",
                     "MAIL FROM:<a@example.net>", "VRFY bob", "XYZZY", "RSET", "HELP",
                     "MAIL FROM:<a@example.net>", "RCPT TO:<b@example.test>", "QUIT"):
            reply = command(sock, line)
            assert all(_CODED.match(part) for part in reply.splitlines()), (line, reply)


def test_without_enhancedstatuscodes_aiosmtpds_replies_stay_as_they_were(sink: FakeMX) -> None:
    with connect(sink.host, sink.port) as sock:
        read_reply(sock)
        command(sock, "EHLO client.example.net")
        assert command(sock, "NOOP") == b"250 OK\r\n"


def test_enhanced_codes_follow_rfc_3463() -> None:
    assert with_enhanced_code("503 Error: need MAIL command", "RCPT") == (
        "503 5.5.1 Error: need MAIL command")
    assert with_enhanced_code("250-a\r\n250 b", "HELP") == "250-2.0.0 a\r\n250 2.0.0 b"
    assert with_enhanced_code("250 2.0.0 OK", "MAIL") == "250 2.0.0 OK"
    assert with_enhanced_code("220 mx ESMTP", "") == "220 mx ESMTP"  # the greeting
    assert with_enhanced_code("354 End data", "DATA") == "354 End data"


# endregion
# region PIPELINING (RFC 2920) -------------------------------------------------------

GROUP = (b"MAIL FROM:<alice@example.net>\r\nRCPT TO:<bob@example.test>\r\n"
         b"RCPT TO:<550-5.1.1@example.test>\r\nRCPT TO:<carol@example.test>\r\nDATA\r\n")


def read_replies(sock: object, count: int) -> list[bytes]:
    data = b""
    while data.count(b"\r\n") < count:
        chunk = sock.recv(65536)  # type: ignore[attr-defined]
        assert chunk, data
        data += chunk
    return [line[:3] for line in data.split(b"\r\n")[:count]]


@pytest.mark.parametrize("profile", ["sink", "sink-all-extensions", "pipelining-held"])
def test_a_group_in_one_segment_is_answered_in_order(profile: str) -> None:
    loaded = load_profile(profile).model_copy(update={"inband": True})
    with FakeMX(loaded) as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        command(sock, "EHLO client.example.net")
        sock.sendall(GROUP)
        assert read_replies(sock, 5) == [b"250", b"250", b"550", b"250", b"354"]
        assert command(sock, ".").startswith(b"250")
        assert mx.messages[0].rcpt_tos == ("bob@example.test", "carol@example.test")


def test_pipelining_held_stalls_a_client_that_waits_for_each_reply() -> None:
    with FakeMX("pipelining-held") as mx:
        with smtplib.SMTP(mx.host, mx.port, timeout=1) as client:  # does not pipeline
            client.ehlo("client.example.net")
            assert client.has_extn("pipelining")
            with pytest.raises(smtplib.SMTPServerDisconnected, match="timed out"):
                client.mail("alice@example.net")
        assert mx.messages == []


async def test_pipelining_held_times_out_aiosmtplib() -> None:
    async with FakeMX("pipelining-held") as mx:
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await aiosmtplib.send(MESSAGE, sender="alice@example.net",
                                  recipients=["bob@example.test"], hostname=mx.host,
                                  port=mx.port, timeout=1, start_tls=False)


@needs_swaks
def test_swaks_pipelines_through_pipelining_held() -> None:
    with FakeMX("pipelining-held") as mx:
        done = subprocess.run(
            [str(SWAKS), "--server", f"{mx.host}:{mx.port}", "--to", "bob@example.test",
             "--from", "alice@example.net", "--pipeline", "--timeout", "5"],
            capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        mx.wait_for(messages=1)
        assert mx.messages[0].rcpt_tos == ("bob@example.test",)


# endregion


def test_faults_need_the_extension_they_act_on() -> None:
    with pytest.raises(ValueError, match="hold_pipelined_replies needs pipelining = true"):
        Extensions(hold_pipelined_replies=True)
    with pytest.raises(ValueError, match="refuse_dsn needs dsn = true"):
        Extensions.model_validate({"refuse_dsn": True})
    assert Extensions.model_validate({"8bitmime": False}).eightbitmime is False


@pytest.mark.parametrize(("arg", "path", "params"), [
    ("FROM:<a@b> SIZE=1 RET=HDRS AUTH=<>", "FROM:<a@b>", ["SIZE=1", "RET=HDRS", "AUTH=<>"]),
    ('FROM: <"x>y"@b> NOTIFY=NEVER', 'FROM:<"x>y"@b>', ["NOTIFY=NEVER"]),
    ("FROM:a@b SIZE=1", "FROM:a@b", ["SIZE=1"]),
    ("FROM:<>", "FROM:<>", []),
])
def test_the_path_ends_where_rfc_5321_says(arg: str, path: str, params: list[str]) -> None:
    assert split_parameters(arg) == (path, params)


def test_a_closing_reply_goes_out_after_the_held_ones() -> None:
    held = load_profile("pipelining-held").model_copy(update={"inband": True})
    with FakeMX(held) as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        command(sock, "EHLO client.example.net")
        sock.sendall(b"MAIL FROM:<alice@example.net>\r\nRCPT TO:<bob@example.test>\r\n"
                     b"RCPT TO:<421-4.7.0@example.test>\r\n")
        closed = wait_closed(sock)
    assert closed.how == "fin"
    assert [line[:3] for line in closed.data.split(b"\r\n")[:3]] == [b"250", b"250", b"421"]
