"""The DATA body on the wire (RFC 5321 4.5.2): where it ends, dot-unstuffing, line lengths.

Pure functions over bytes, so the reading loop in smtp.py can take the body in
blocks of about a kilobyte instead of one line at a time.
"""

from __future__ import annotations

END = b".\r\n"  # the lone dot line, once it starts a line
# RFC 5321 4.5.3.1.6: 998 octets of text per line; one more for a transparency dot.
MAX_LINE_OCTETS = 999


def ends_message(data: bytes | bytearray) -> bool:
    """Whether ``data`` (the body so far) ends with the lone dot that ends the message."""
    return data.endswith(END) and (len(data) == len(END) or data[-5:-3] == b"\r\n")


def unstuff(raw: bytes) -> bytes:
    """Remove the transparency dot from every line that starts with one."""
    if raw.startswith(b"."):
        raw = raw[1:]
    return raw.replace(b"\r\n.", b"\r\n")


def has_overlong_line(raw: bytes) -> bool:
    return max(map(len, raw.split(b"\r\n"))) > MAX_LINE_OCTETS
