"""Stored mail for people: what a search matches, and ``.eml`` files with their envelope.

The store (``fakemx.store``) keeps each message exactly as received; the
envelope headers a delivering MTA would prepend are added only on export.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.parser import BytesHeaderParser
from email.utils import formatdate
from pathlib import Path
from typing import TYPE_CHECKING

from fakemx.clientbytes import shown

if TYPE_CHECKING:
    from fakemx.store import Store

HEAD_BYTES = 16384  # where a search looks for the Subject
WHEN_FORMS = "2026-11-30, 2026-11-30T16:00, 2026-11-30T16:00Z, Unix seconds, or an age: 30m, 2h, 7d"
_AGE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_AGE_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str) -> float:
    """A search's ``since``/``until`` as Unix time: an ISO 8601 date or time (local
    time unless it gives a zone), Unix seconds, or an age before now (``2h``).

    Raises ValueError naming the forms it takes.
    """
    value = text.strip()
    age = _AGE.fullmatch(value)
    try:
        if age:
            return time.time() - float(age[1]) * _AGE_SECONDS[age[2]]
        if re.fullmatch(r"\d+(\.\d+)?", value):
            return float(value)
        return datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"{text!r} is not a time (use {WHEN_FORMS})") from None


@dataclass(frozen=True)
class MessageQuery:
    """Which stored messages: every field given narrows the search (text: any case)."""

    sender: str | None = None  # the envelope sender (MAIL FROM) contains this
    recipient: str | None = None  # an envelope recipient (RCPT TO) contains this
    subject: str | None = None  # the Subject header contains this
    since: float | None = None  # received at or after (Unix time)
    until: float | None = None  # received before
    server: str | None = None
    session_id: int | None = None


@dataclass(frozen=True)
class MessageInfo:
    """A stored message's envelope and subject, and the session's client, if written yet."""

    id: int
    session_id: int
    server: str
    received: float
    mail_from: str
    rcpt_tos: tuple[str, ...]
    size: int
    subject: str
    client_ip: str | None
    helo: str | None


def contains(text: str, needle: str | None) -> bool:
    return needle is None or needle.casefold() in text.casefold()


def subject_of(head: bytes) -> str:
    try:
        return str(BytesHeaderParser(policy=policy.default).parsebytes(head).get("subject", ""))
    except (ValueError, LookupError, TypeError, IndexError):  # a broken header: no subject
        return ""


def envelope_headers(info: MessageInfo) -> bytes:
    """What a delivering MTA prepends: ``Return-Path``, ``X-Original-To`` and
    ``Delivered-To`` per recipient, and a ``Received`` line (client text escaped)."""
    lines = [f"Return-Path: <{shown(info.mail_from)}>"]
    for rcpt in info.rcpt_tos:
        lines += [f"X-Original-To: {shown(rcpt)}", f"Delivered-To: {shown(rcpt)}"]
    client = f"from {shown(info.helo or 'unknown')} ([{info.client_ip or 'unknown'}])\r\n\t"
    only = f" for <{shown(info.rcpt_tos[0])}>" if len(info.rcpt_tos) == 1 else ""
    lines.append(f"Received: {client}by fakemx ({shown(info.server)}) with ESMTP id"
                 f" {info.id}{only};\r\n\t{formatdate(info.received, localtime=False)}")
    return "".join(line + "\r\n" for line in lines).encode("utf-8")


def export_messages(store: Store, out_dir: Path, fmt: str = "eml", *,
                    query: MessageQuery | None = None, envelope: bool = False) -> int:
    """Write the stored messages to ``out_dir`` as ``<id>.eml`` or as a Maildir.

    With ``envelope``, each gets ``envelope_headers`` on top (``fakemx export``
    does this); the stored message stays as received. File names come from message ids only,
    so nothing can be written outside ``out_dir``. Returns how many were written.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if fmt == "maildir":
        for sub in ("tmp", "new", "cur"):
            (out_dir / sub).mkdir(exist_ok=True)
    count = 0
    for info in store.find_messages(query):
        try:
            content = store.content_of(info.id)
        except LookupError:  # deleted since the search
            continue
        data = envelope_headers(info) + content if envelope else content
        name = f"{int(info.received)}.{info.id}.fakemx"
        if fmt == "maildir":
            tmp = out_dir / "tmp" / name
            tmp.write_bytes(data)
            os.replace(tmp, out_dir / "new" / name)
        else:
            (out_dir / f"{info.id}.eml").write_bytes(data)
        count += 1
    return count
