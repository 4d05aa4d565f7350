"""FakeSMTP: aiosmtpd's SMTP protocol with a rule check at every stage.

Where aiosmtpd parses a command for us (EHLO, MAIL, RCPT) the stage runs in a
handler hook; where it offers no hook (greeting, DATA, the body, the final dot,
STARTTLS, QUIT) fakemx overrides the documented ``smtp_<COMMAND>`` method, or
for the greeting a private seam (all of them in fakemx/smtp/seam.py). The class
is assembled from one module per concern: core (life, journal, rules, the
executor), data (DATA and the body), starttls, auth (AUTH); this one has the rest.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import MISSING, TLSSetupException, syntax

from fakemx.journal import Outcome
from fakemx.smtp import inband, limits, lmtp
from fakemx.smtp.auth import Authentication
from fakemx.smtp.chunking import Chunking
from fakemx.smtp.edges import EdgeReplies
from fakemx.smtp.extensions import SmtpExtensions
from fakemx.smtp.lmtp import Lmtp
from fakemx.smtp.starttls import StartTls
from fakemx.stages import Protocol, Stage

_SIZE_OPTION = re.compile(r"^SIZE=(\d+)$", re.IGNORECASE)


class FakeSMTP(Lmtp, Chunking, SmtpExtensions, StartTls, Authentication, EdgeReplies):
    """One connection: the greeting, EHLO/HELO/LHLO, MAIL, RCPT and QUIT (the rest: see
    bases)."""

    async def greet(self) -> None:
        if self._over_limit is not None:  # before any rule: the limits keep fakemx up
            self._note(f"limit: {self._over_limit}")
            await self.push(self._over_limit)
            self._hang_up(Stage.GREETING, "fin", replied=True)
        await self._act(Stage.CONNECT, self._decide(Stage.CONNECT))
        speaks = "LMTP" if self.profile.protocol is Protocol.LMTP else "ESMTP"
        greeting = f"220 {self.hostname} {speaks} fakemx"
        replacement = await self._act(Stage.GREETING, self._decide(Stage.GREETING))
        if replacement is not None:
            greeting = replacement
            # The last line is the verdict (a mixed_codes reply's lines may disagree).
            self._refusing = not replacement.rsplit("\r\n", 1)[-1].startswith("2")
        await self.push(greeting)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str | None) -> None:
        if self.profile.protocol is Protocol.LMTP:
            await self.push(lmtp.USE_LHLO)
            return
        await self._hello(hostname, super().smtp_EHLO)

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str | None) -> None:
        if self.profile.protocol is Protocol.LMTP:
            await self.push(lmtp.USE_LHLO)
            return
        await self._hello(hostname, super().smtp_HELO)

    @syntax("LHLO hostname")
    async def smtp_LHLO(self, hostname: str | None) -> None:
        """RFC 2033 4.1: LMTP's EHLO (unknown to an SMTP session: SmtpExtensions.offers)."""
        await self._hello(hostname, super().smtp_EHLO)

    async def _hello(
        self, hostname: str | None, normal: Callable[[str | None], Awaitable[None]]
    ) -> None:
        if hostname and self.record is not None:
            self.record.helo = hostname
        if hostname:
            reply = await self._act(Stage.EHLO, self._decide(Stage.EHLO))
            if reply is not None:
                await self.push(reply)
                return
        await normal(hostname)

    async def on_mail(self, address: str, options: list[str]) -> Any:
        self._last_sender = address
        reply = await self._act(Stage.MAIL, self._decide(Stage.MAIL, sender=address))
        if reply is not None:
            return reply
        limit = self.profile.max_message_size
        declared = next((int(m[1]) for o in options if (m := _SIZE_OPTION.match(o))), 0)
        if limit and declared > limit:
            return "552 5.3.4 Message size exceeds fixed maximum message size"
        return MISSING

    async def on_rcpt(self, address: str) -> Any:
        if self._envelope().chunked:  # RFC 3030 3: the message is already on its way
            return "503 5.5.1 Error: RCPT after BDAT"
        self._last_recipient = address
        wanted = inband.parse(address) if self.profile.inband else None
        now = [wanted] if wanted is not None and wanted.stage is Stage.RCPT else []
        reply = await self._act(Stage.RCPT, self._decide(Stage.RCPT, first=now, recipient=address))
        if reply is not None:
            return reply
        if limits.too_many_recipients(self.profile.limits, len(self._envelope().rcpt_tos)):
            return limits.TOO_MANY_RECIPIENTS
        if wanted is not None and wanted.stage is not Stage.RCPT:
            self._envelope().inband.append(wanted)
        return MISSING

    @syntax("QUIT")
    async def smtp_QUIT(self, arg: str | None) -> None:
        if not arg:
            reply = await self._act(Stage.QUIT, self._decide(Stage.QUIT))
            if reply is not None:
                await self.push(reply)
                return
            if self.record is not None:
                self.record.outcome = Outcome.QUIT
        await super().smtp_QUIT(arg)

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's ``500 Error: ...`` on the wire, as before, and the error kept.

        A TLS handshake the client abandons is the client's doing, not fakemx's.
        """
        if not isinstance(error, TLSSetupException):
            self._incident(error)
        return await super().handle_exception(error)

