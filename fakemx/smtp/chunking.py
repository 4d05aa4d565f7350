"""BDAT (RFC 3030 CHUNKING), which aiosmtpd lacks: a message sent in counted chunks.

``BDAT <octets> [LAST]`` is followed at once by exactly that many octets, with
no dot-stuffing and no end marker, so every chunk is read whole, whatever the
reply will be: a chunk that is refused is read and thrown away, or the session
would take message bytes for commands. Each chunk gets a reply; after ``LAST``
the message goes the way of a DATA message (the end_of_data rules, stored
before any 2xx). The rules of the other stages apply as with DATA: ``data`` at
the first chunk, ``body`` after each chunk, and ``bdat`` (a stage of its own)
after each chunk, to refuse one.
"""

from __future__ import annotations

import asyncio
import re

from aiosmtpd.smtp import syntax

from fakemx.smtp.data import DataCommands, FakeEnvelope
from fakemx.smtp.seam import SessionOver
from fakemx.stages import Stage

_BDAT = re.compile(r"^(\d{1,18})(?:[ \t]+(LAST))?$", re.IGNORECASE)
_READ_BLOCK = 65536
# Postfix's words: a BDAT without a count leaves the chunk's end unknown, so it hangs up.
BAD_SYNTAX = "521 5.5.4 Syntax: BDAT count [LAST]"
TOO_LARGE = "552 5.3.4 Message size exceeds fixed maximum message size"


class Chunking(DataCommands):
    """BDAT, offered only with CHUNKING (SmtpExtensions.offers: without it, BDAT is an
    unknown command and the octets after it are read as commands)."""

    @syntax("BDAT chunk-size [LAST]")
    async def smtp_BDAT(self, arg: str | None) -> None:
        match = _BDAT.match((arg or "").strip())
        if match is None:
            await self.push(BAD_SYNTAX)
            self._hang_up(self.record.stage if self.record else Stage.DATA, "fin",
                          replied=True)
        octets, last = int(match[1]), match[2] is not None
        envelope = self._envelope()
        refusal = _out_of_sequence(envelope)
        if refusal is None and not envelope.chunked and self.session and self.session.host_name:
            # The first chunk stands where DATA would: DATA's rules (and in-band ones).
            refusal = await self._act(Stage.DATA, self._decide(Stage.DATA,
                                                               first=envelope.inband))
        limit = self.profile.max_message_size
        keep = refusal is None and len(envelope.chunks) + octets <= limit
        chunk = await self._read_chunk(octets, keep=keep)
        if await self.check_helo_needed() or await self.check_auth_needed("BDAT"):
            return
        self._note(f"BDAT chunk: {octets} octets{', LAST' if last else ''}")
        if refusal is None and not keep:
            refusal = TOO_LARGE
        if refusal is None:
            envelope.chunked = True
            envelope.chunks += chunk
            refusal = await self._chunk_rules(envelope)
        if refusal is not None and not refusal.startswith("2"):
            # RFC 3030 3: a chunk refused fails the transaction; chunks already
            # pipelined after it meet a fresh transaction and "need MAIL".
            self.end_transaction()
            await self.push(refusal)
            return
        if last:
            content = bytes(envelope.chunks)
            self._note(f"body: {len(content)} bytes in chunks")
            await self._end_of_message(envelope, content, None, envelope.body_reply)
            return
        await self.push(refusal or f"250 2.0.0 Ok: {octets} octets received")

    async def _chunk_rules(self, envelope: FakeEnvelope) -> str | None:
        """The body's rules (their reply waits for LAST, as DATA's waits for the dot),
        then the bdat stage's: the chunk's own reply, or None."""
        size = len(envelope.chunks)
        if envelope.body_reply is None and self.plan.rules[Stage.BODY]:
            rule = self._decide(Stage.BODY, body_bytes=size)
            if rule is not None:
                envelope.body_reply = await self._act(Stage.BODY, rule)
        return await self._act(Stage.BDAT, self._decide(Stage.BDAT, body_bytes=size))

    async def _read_chunk(self, octets: int, *, keep: bool) -> bytes:
        """Read the chunk's octets; keep them only when ``keep``."""
        kept = bytearray()
        left = octets
        try:
            while left:
                block = await self.reader.readexactly(min(left, _READ_BLOCK))
                left -= len(block)
                if keep:
                    kept += block
                if left:
                    self.restart_idle_timer()  # the client is still sending: not idle
        except asyncio.IncompleteReadError:  # the client hung up mid-chunk
            self._note(f"the connection ended {left} octets short of the chunk")
            if self.transport is not None:
                self.transport.close()
            raise SessionOver() from None
        return bytes(kept)


def _out_of_sequence(envelope: FakeEnvelope) -> str | None:
    """RFC 3030 3 and RFC 5321 3.3: a chunk needs a sender and a recipient first."""
    if not envelope.mail_from:
        return "503 5.5.1 Error: need MAIL command"
    if not envelope.rcpt_tos:
        return "503 5.5.1 Error: need RCPT command"
    return None
