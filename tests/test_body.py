"""The DATA body as pure bytes: the end, dot-unstuffing, line lengths (RFC 5321 4.5.2)."""

from __future__ import annotations

import pytest

from fakemx.smtp.body import ends_message, has_overlong_line, unstuff


@pytest.mark.parametrize(
    ("data", "ends"),
    [
        (b".\r\n", True),  # an empty message
        (b"a\r\n.\r\n", True),
        (b"Mr.\r\n", False),  # a dot at the end of a line is text
        (b"a\r\n..\r\n", False),  # a stuffed dot is text
        (b"a\r\n..\r\n.\r\n", True),
        (b"a\n.\r\n", False),  # after a bare LF the dot does not start a line
    ],
)
def test_ends_message(data: bytes, ends: bool) -> None:
    assert ends_message(data) is ends


def test_unstuff() -> None:
    assert unstuff(b"..a\r\nb\r\n..\r\n.c\r\n") == b".a\r\nb\r\n.\r\nc\r\n"


def test_overlong_lines() -> None:
    assert not has_overlong_line(b"." + b"x" * 998 + b"\r\n")
    assert has_overlong_line(b"x" * 1000 + b"\r\n")
