"""DATA: the body read to its final dot, the end-of-data rules, and the store before any 2xx."""

from __future__ import annotations

import asyncio
import sqlite3

from aiosmtpd.smtp import Envelope, syntax

from fakemx.actions import accepts
from fakemx.journal import StoredMessage
from fakemx.model import Rule
from fakemx.smtp import body
from fakemx.smtp.core import SessionCore
from fakemx.stages import Stage

# Re-arming the idle timer costs a timer handle; do it per 64 KiB of body, not per line.
_TIMER_RESET_BYTES = 65536
# The body is read in blocks of up to this much when no body rule watches it (which
# asks at every block, so it gets blocks of a line's length, about 1 kB).
_BODY_BLOCK_BYTES = 65536


class FakeEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.inband: list[Rule] = []  # in-band rules for DATA and the final dot
        self.chunked = False  # a BDAT chunk of this transaction has arrived (RFC 3030)
        self.chunks = bytearray()  # the message so far, from its BDAT chunks
        self.body_reply: str | None = None  # a body rule's reply, sent after BDAT LAST


def is_2xx(reply: str | None) -> bool:
    """Does the reply accept? Its last line says (a mixed_codes reply may disagree)."""
    return reply is not None and reply.rsplit("\r\n", 1)[-1].startswith("2")


class DataCommands(SessionCore):
    @syntax("DATA")
    async def smtp_DATA(self, arg: str | None) -> None:
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        envelope = self._envelope()
        if not envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        if envelope.chunked:  # RFC 3030 3: DATA and BDAT never share a transaction
            await self.push("503 5.5.1 Error: DATA after BDAT")
            return
        reply = await self._act(Stage.DATA, self._decide(Stage.DATA, first=envelope.inband))
        if reply is not None:
            await self.push(reply)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        watched = bool(self.plan.rules[Stage.BODY])
        with self.reading_ahead(self.line_length_limit if watched else _BODY_BLOCK_BYTES):
            content, problem, body_reply = await self._read_body(watched)
        self._note(f"body: {len(content)} bytes")
        await self._end_of_message(envelope, content, problem, body_reply)

    async def _end_of_message(self, envelope: FakeEnvelope, content: bytes, problem: str | None,
                              body_reply: str | None) -> None:
        """The whole message is in (the final dot, or BDAT LAST): rules, store, reply."""
        rule = self._decide(Stage.END_OF_DATA, first=envelope.inband, body_bytes=len(content))
        stored: str | None = None
        if problem is None and (accepts(rule.action) if rule else is_2xx(body_reply)):
            # A 2xx at end of data says "accepted": the message is stored before it
            # goes out, whatever the rule's text, or the store's 452 goes instead.
            stored = await self._store(envelope, content)
            if not stored.startswith("2"):
                rule = body_reply = None
        reply = await self._act(Stage.END_OF_DATA, rule) or body_reply or problem
        if reply is None:
            reply = stored or await self._store(envelope, content)
        self.end_transaction()
        await self.push(reply)

    async def _store(self, envelope: FakeEnvelope, content: bytes,
                     recipients: list[str] | None = None) -> str:
        """Store durably (for ``recipients``, by default all), then (and only then) the
        250 may go out."""
        record = self.record
        assert record is not None

        def journal(stored: StoredMessage) -> None:  # once committed, even if we are cancelled
            record.message_ids.append(stored.id)
            self.state.journal.accepted(stored)

        try:
            stored = await self.state.store.store_message(
                record.id, self.state.name, envelope.mail_from or "",
                list(envelope.rcpt_tos) if recipients is None else recipients, content,
                journal)
        except (sqlite3.Error, OSError) as exc:
            self._note(f"could not store the message: {exc}")
            self._incident(exc)
            return "452 4.3.1 Insufficient system storage"
        return f"250 2.0.0 OK: queued as {stored.id}"

    async def _read_body(self, watch_body: bool) -> tuple[bytes, str | None, str | None]:
        """Read to the final dot: (content, an error reply or None, a body-rule reply or None).

        Reads in blocks that end at a ".\r\n" or at the reader's limit (64 KiB, or about
        1 kB for the body rules), so a 10 kB message takes one read or a dozen rather than
        one per line. Errors are answered only after the final dot (RFC 5321 4.2.5).
        ``watch_body``: the profile has body rules, asked at every block until one fires.
        """
        data = bytearray()
        discarded = 0  # bytes dropped once the message is over the size limit
        limit = self.profile.max_message_size
        problem: str | None = None
        body_reply: str | None = None
        next_timer_reset = _TIMER_RESET_BYTES
        while True:
            try:
                data += await self.reader.readuntil(body.END)
                ended = body.ends_message(data)
            except asyncio.LimitOverrunError as exc:  # no ".\r\n" within the limit yet
                data += await self.reader.read(exc.consumed)
                ended = False
            size = discarded + len(data)
            if watch_body:
                # Asked on every block, the last one too: a message that arrives in one
                # block (most test messages) meets the body rules as a long one does.
                rule = self._decide(Stage.BODY, body_bytes=size)
                if rule is not None:
                    watch_body = False
                    body_reply = await self._act(Stage.BODY, rule)
            if limit and size - (len(body.END) if ended else 0) > limit:
                # Asked of the last block too: a message that arrives in one block (most
                # do, read 64 KiB at a time) is as much over the limit as a long one.
                problem = "552 5.3.4 Message size exceeds fixed maximum message size"
            if ended:
                break
            if size >= next_timer_reset:  # the client is still sending: not idle
                self.restart_idle_timer()
                next_timer_reset = size + _TIMER_RESET_BYTES
            if problem is not None:
                discarded += len(data) - 4
                del data[:-4]  # keep enough to recognise the final dot
        raw = bytes(data[: -len(body.END)])
        if problem is None and body.has_overlong_line(raw):
            problem = "500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)"
        return (b"" if problem else body.unstuff(raw)), problem, body_reply

    def new_envelope(self) -> FakeEnvelope:
        return FakeEnvelope()

    def _envelope(self) -> FakeEnvelope:
        assert isinstance(self.envelope, FakeEnvelope)
        return self.envelope

