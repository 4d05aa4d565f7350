"""fakemx reads an everyday MAIL/RCPT path (``<local@domain>``) with a pattern instead of
aiosmtpd's email-package parser (fakemx/smtp/seam.py ``plain_path``): the same address and
the same rest, for every input the pattern takes; every other input is aiosmtpd's."""

from __future__ import annotations

from types import SimpleNamespace

from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st
from wire import command, connect, read_reply

from fakemx import FakeMX
from fakemx.smtp.seam import plain_path


def aiosmtpd_getaddr(arg: str) -> tuple[str | None, str | None]:
    result: tuple[str | None, str | None] = SMTP._getaddr(  # type: ignore[arg-type]
        SimpleNamespace(local_part_limit=0), arg)
    return result


PIECES = ["a", "Zz9", "o'hare", "x+tag", "!#$%&*/=?^_`{|}~-", "ü", "é", ".", "..", "@", "@@",
          "<", ">", " ", "  ", "\t", "\x0b", "(comment)", "(", ")", '"q u"', "[1.2.3.4]",
          "\\", ",", ":", ";", "SIZE=10", "BODY=8BITMIME", "@route:", "\u2003"]
args = st.lists(st.sampled_from(PIECES), max_size=12).map("".join)
paths = st.builds(lambda local, domain, rest: f"<{local}@{domain}>{rest}", args, args, args)
# Mostly what the pattern takes, sometimes a dot out of place: the fast path is exercised.
ATOMS = ["a", "Zz9", "o'hare", "x+tag", "!#$%&*/=?^_`{|}~-", "-", "0", "."]
dotted = st.lists(st.sampled_from(ATOMS), min_size=1, max_size=6).map("".join)
near = st.builds(lambda local, domain, rest: f"<{local}@{domain}>{rest}", dotted, dotted, args)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(args, paths, near))
def test_the_fast_path_reads_what_aiosmtpd_reads(arg: str) -> None:
    fast = plain_path(arg)
    if fast is not None:
        assert fast == aiosmtpd_getaddr(arg)


def test_the_everyday_forms_take_the_fast_path() -> None:
    assert plain_path("<alice@sender.example>") == ("alice@sender.example", "")
    assert plain_path("<a.b+c@d.example>  SIZE=10 BODY=8BITMIME") == (
        "a.b+c@d.example", "SIZE=10 BODY=8BITMIME")
    for other in ("<>", '<"x y"@b>', "<a@[1.2.3.4]>", "<@r:a@b>", "a@b", " <a@b>",
                  "<a@b> (c)", "<ü@b>", "<a..b@c>"):
        assert plain_path(other) is None, other


def test_both_paths_on_the_wire_store_the_envelope_aiosmtpd_parsed() -> None:
    with FakeMX() as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        replies = [command(sock, line) for line in (
            "EHLO client.example",
            "MAIL FROM:<alice@sender.example>  SIZE=100",  # the fast path
            'RCPT TO:<"bob smith"@dest.example>',  # the email package's
            "RCPT TO:<carol@dest.example> (a comment)",
            "DATA", "Subject: x\r\n\r\nhi\r\n.", "QUIT")]
        assert [reply[:3] for reply in replies] == [b"250", b"250", b"250", b"250", b"354",
                                                     b"250", b"221"], replies
        mx.wait_for(messages=1)
        (message,) = mx.messages
        assert message.mail_from == "alice@sender.example"
        assert message.rcpt_tos == ('"bob smith"@dest.example', "carol@dest.example")
