"""Client bytes are data: kept losslessly, shown escaped, never an error.

aiosmtpd decodes a command's argument as UTF-8 with ``surrogateescape``, so a
byte that is not UTF-8 (``EHLO \\xff\\xfe.example``) arrives as a lone surrogate
in a ``str``. That string is the lossless form and fakemx keeps it as it is in
memory; but it cannot be encoded as UTF-8, so SQLite, JSON responses and
terminals each need a form of their own:

- ``to_db``/``from_db``: SQLite TEXT when the value is valid UTF-8 (the normal
  case, queryable with SQL), else a BLOB of the original bytes;
- ``shown``: for people (API, page, CLI, logs, reply placeholders): printable
  text as it is, every other byte or control character as ``\\xNN``, so no
  client can write a terminal escape sequence or a line break anywhere.
"""

from __future__ import annotations

import re

ENCODING = "utf-8"
ERRORS = "surrogateescape"

# C0 and C1 controls, DEL, lone surrogates (undecodable bytes), and the line and
# paragraph separators and bidi overrides that reorder or break what a person reads.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def to_bytes(text: str) -> bytes:
    """The bytes the client sent."""
    return text.encode(ENCODING, ERRORS)


def from_bytes(data: bytes) -> str:
    """The lossless ``str`` form of client bytes (as aiosmtpd makes it)."""
    return data.decode(ENCODING, ERRORS)


def shown(text: str) -> str:
    """``text`` safe to print or send: controls and undecodable bytes as ``\\xNN``."""
    if not _UNSAFE.search(text):
        return text
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape's form of an undecodable byte
        return f"\\x{code - 0xDC00:02x}"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}"


def shown_or_none(text: str | None) -> str | None:
    return None if text is None else shown(text)


def to_db(text: str | None) -> str | bytes | None:
    """A value SQLite can always store: the text, or the client's bytes as a BLOB."""
    if text is None:
        return None
    try:
        text.encode(ENCODING)
    except UnicodeEncodeError:
        return to_bytes(text)
    return text


def from_db(value: str | bytes | None) -> str | None:
    """The inverse of ``to_db``."""
    if isinstance(value, bytes):
        return from_bytes(value)
    return value


# What fakemx keeps of a credential: nothing (aiosmtpd masks its logs the same way).
CREDENTIALS_MASK = "********"


def auth_argument_kept(argument: str) -> str:
    """``AUTH``'s argument as journaled: the mechanism, its initial response masked."""
    mechanism, _, initial_response = argument.partition(" ")
    return f"{mechanism} {CREDENTIALS_MASK}" if initial_response else mechanism
