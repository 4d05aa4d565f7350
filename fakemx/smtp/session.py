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
from fakemx.smtp import inband, limits
from fakemx.smtp.auth import Authentication
from fakemx.smtp.data import DataCommands
from fakemx.smtp.edges import EdgeReplies
from fakemx.smtp.starttls import StartTls
from fakemx.stages import Stage

_SIZE_OPTION = re.compile(r"^SIZE=(\d+)$", re.IGNORECASE)


class FakeSMTP(StartTls, Authentication, DataCommands, EdgeReplies):
    """One connection: the greeting, EHLO/HELO, MAIL, RCPT and QUIT (the rest: see bases)."""

    async def greet(self) -> None:
        if self._over_limit is not None:  # before any rule: the limits keep fakemx up
            self._note(f"limit: {self._over_limit}")
            await self.push(self._over_limit)
            self._hang_up(Stage.GREETING, "fin", replied=True)
        await self._act(Stage.CONNECT, self._decide(Stage.CONNECT))
        greeting = f"220 {self.hostname} ESMTP fakemx"
        replacement = await self._act(Stage.GREETING, self._decide(Stage.GREETING))
        if replacement is not None:
            greeting = replacement
            # The last line is the verdict (a mixed_codes reply's lines may disagree).
            self._refusing = not replacement.rsplit("\r\n", 1)[-1].startswith("2")
        await self.push(greeting)

    @syntax("EHLO hostname")
    async def smtp_EHLO(self, hostname: str | None) -> None:
        await self._hello(hostname, super().smtp_EHLO)

    @syntax("HELO hostname")
    async def smtp_HELO(self, hostname: str | None) -> None:
        await self._hello(hostname, super().smtp_HELO)

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

    def ehlo_lines(self, responses: list[str]) -> list[str]:
        """aiosmtpd's EHLO lines with SIZE added, AUTH as the profile offers it now, and
        stripped extensions removed."""
        keywords = [line[4:] for line in responses if not line[4:].startswith("AUTH ")]
        keywords.insert(1, f"SIZE {self.profile.max_message_size}")
        auth = self.auth_keyword()
        if auth is not None:
            keywords.insert(-1, auth)  # before aiosmtpd's last line, HELP
        kept = [kw for i, kw in enumerate(keywords) if i == 0 or not self._stripped(kw)]
        if self._strip:
            self._note(f"EHLO reply stripped of {', '.join(sorted(self._strip))}")
        lines = [f"250-{kw}" for kw in kept[:-1]] + [f"250 {kept[-1]}"]
        # aiosmtpd pushes each line; a shaped reply (edges) is written whole, as one push.
        return ["\r\n".join(lines)] if self.shape_next_reply is not None else lines

    def _stripped(self, keyword_line: str) -> bool:
        return keyword_line.split(" ", 1)[0].upper() in self._strip

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

