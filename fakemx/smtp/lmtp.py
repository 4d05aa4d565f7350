"""LMTP (RFC 2033): LHLO instead of EHLO, and one reply per recipient after the message.

A delivery agent (Dovecot, Cyrus) speaks LMTP to the mail store: it can take
a message for one recipient and refuse it for another, so after the final dot
(or BDAT LAST) each recipient accepted at RCPT gets its own reply, in RCPT
order (RFC 2033 4.2). fakemx decides the end_of_data rules once per
recipient, so ``when.recipient`` (or an in-band ``+end_of_data`` address)
fails that recipient alone; the message is stored once, for the recipients
that get a 2xx, before any reply goes out.
"""

from __future__ import annotations

from fakemx.actions import accepts
from fakemx.model import Rule
from fakemx.smtp import inband
from fakemx.smtp.data import DataCommands, FakeEnvelope, is_2xx
from fakemx.stages import Protocol, Stage

# RFC 2033 4.1: an LMTP server answers LHLO, not HELO or EHLO.
USE_LHLO = "500 5.5.1 Error: this is an LMTP server: send LHLO (RFC 2033)"


class Lmtp(DataCommands):
    async def _end_of_message(self, envelope: FakeEnvelope, content: bytes, problem: str | None,
                              body_reply: str | None) -> None:
        if self.profile.protocol is not Protocol.LMTP:
            await super()._end_of_message(envelope, content, problem, body_reply)
            return
        recipients = list(envelope.rcpt_tos)
        rules: list[Rule | None] = []
        for recipient in recipients:
            self._last_recipient = recipient
            rules.append(self._decide(Stage.END_OF_DATA, first=self._own_inband(recipient),
                                      recipient=recipient, body_bytes=len(content)))
        # Taken: a 2xx from a rule (or accept), or no rule and no body rule's refusal.
        taking = [r for r, rule in zip(recipients, rules, strict=True) if problem is None
                  and (accepts(rule.action) if rule else body_reply is None
                       or is_2xx(body_reply))]
        stored = await self._store(envelope, content, taking) if taking else None
        if stored is not None and not stored.startswith("2"):
            # Storage failed: every recipient that would have had a 2xx gets the 452.
            rules = [None if r in taking else rule for r, rule in zip(recipients, rules,
                                                                      strict=True)]
        self.end_transaction()
        for recipient, rule in zip(recipients, rules, strict=True):
            self._last_recipient = recipient
            reply = await self._act(Stage.END_OF_DATA, rule)
            if stored is not None and not stored.startswith("2") and recipient in taking:
                reply = stored
            final = reply or body_reply or problem or stored
            assert final is not None  # each recipient is taken (stored) or refused
            await self.push(final)

    def _own_inband(self, recipient: str) -> list[Rule]:
        """The in-band end_of_data rule this recipient's own address asks for, if any."""
        wanted = inband.parse(recipient) if self.profile.inband else None
        return [wanted] if wanted is not None and wanted.stage is Stage.END_OF_DATA else []

