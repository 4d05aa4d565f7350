"""The little DER (X.690) that fakemx reads and writes by hand.

Only definite lengths and single-byte tags, which is all a certificate's
top-level structures use. ``cryptography`` covers the rest.
"""

from __future__ import annotations


def encode_length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, content: bytes) -> bytes:
    """One element: tag, length, content."""
    return bytes([tag]) + encode_length(len(content)) + content


def content_span(der: bytes, at: int = 0) -> tuple[int, int]:
    """(content start, content end) of the element that begins at ``at``."""
    first = der[at + 1]
    if first < 0x80:
        return at + 2, at + 2 + first
    count = first & 0x7F
    size = int.from_bytes(der[at + 2 : at + 2 + count], "big")
    return at + 2 + count, at + 2 + count + size


def sequence_elements(der: bytes) -> list[bytes]:
    """The encoded elements (tag, length and content each) inside one DER SEQUENCE."""
    if not der or der[0] != 0x30:
        raise ValueError("not a DER SEQUENCE")
    offset, end = content_span(der)
    items = []
    while offset < end:
        _, item_end = content_span(der, offset)
        items.append(der[offset:item_end])
        offset = item_end
    return items
