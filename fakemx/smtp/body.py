"""The DATA body on the wire (RFC 5321 4.5.2): where it ends, dot-unstuffing, line lengths.

Pure functions over bytes, so the reading loop in smtp.py can take the body in
blocks of about a kilobyte instead of one line at a time.
"""

from __future__ import annotations

import fcntl
import struct
import termios

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


def unread_bytes(fd: int) -> int:
    """Bytes the client sent that the kernel still holds for socket ``fd``, unread.

    A close with any of them makes the kernel reset the connection (RST), not
    close it (FIN): RFC 2525 2.17, what Linux does. A drop during a large body
    meets that, so the journal says so rather than claim a FIN.
    """
    try:
        raw = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    except OSError:  # closed already, or not a socket
        return 0
    count: int = struct.unpack("i", raw)[0]
    return count
