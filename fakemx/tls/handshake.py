"""TLS records on the wire, for the handshake faults that never reach OpenSSL.

After ``220 Ready to start TLS`` a ``handshake`` rule reads the client's
ClientHello record itself and answers it with a fatal alert (or a reset), as a
server or middlebox that cannot or will not do TLS does (RFC 8446 5.1, 6.2).
"""

from __future__ import annotations

import asyncio

_HANDSHAKE = 0x16
_ALERT = 0x15
_FATAL = 2
HANDSHAKE_FAILURE = 40  # RFC 8446 6.2: "sslv3 alert handshake failure" in OpenSSL's words
_MAX_RECORD_BYTES = 16384 + 2048  # RFC 8446 5.2: TLSCiphertext length limit


async def read_record(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """(content type, fragment) of the next TLS record; ValueError when it is not TLS."""
    header = await reader.readexactly(5)
    content_type, major, length = header[0], header[1], int.from_bytes(header[3:5], "big")
    if major != 3 or length > _MAX_RECORD_BYTES:
        raise ValueError(f"not a TLS record: {header!r}")
    return content_type, await reader.readexactly(length)


def is_client_hello(content_type: int, fragment: bytes) -> bool:
    return content_type == _HANDSHAKE and fragment[:1] == b"\x01"


def fatal_alert(description: int = HANDSHAKE_FAILURE) -> bytes:
    """One alert record. Version 3.3 on the record layer, as TLS 1.2 and 1.3 send it."""
    return bytes([_ALERT, 3, 3, 0, 2, _FATAL, description])
