"""The profile's extensions in a session: the EHLO reply, MAIL/RCPT parameters, enhanced
status codes on every reply, and replies held for a pipelined group (fakemx.extensions
decides; this module applies it)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import NoReturn

from aiosmtpd.smtp import syntax

from fakemx import extensions
from fakemx.actions import DropHow
from fakemx.smtp.auth import Authentication
from fakemx.stages import Protocol, Stage
from fakemx.state import ServerState

# RFC 2920 3.1: these may stand anywhere in a pipelined group; any other command ends it.
GROUPABLE = frozenset({"MAIL", "RCPT", "RSET"})
# RFC 3461 5 and RFC 8689: DSN and REQUIRETLS lengthen MAIL and RCPT beyond RFC 5321's
# 512 octets (ENVID up to 100 characters, ORCPT up to 500).
_LONGER_COMMANDS = {"MAIL": 512 + 26 + 10 + 110 + 11, "RCPT": 512 + 530}


class SmtpExtensions(Authentication):
    """EHLO keywords (AUTH's among them) and the parameters and replies they promise."""

    __slots__ = ("_held", "ext")  # as SessionCore's

    def __init__(self, state: ServerState) -> None:
        super().__init__(state)
        self._held: list[str] | None = None  # replies held for the rest of a pipelined group
        ext = self.ext = extensions.in_effect(self.profile.extensions,
                                              lmtp=self.profile.protocol is Protocol.LMTP)
        if ext.dsn or ext.requiretls:
            self.command_size_limits = _command_size_limits()

    def offers(self, command: str) -> bool:
        if command == "BDAT":
            return self.ext.chunking
        if command == "LHLO":
            return self.profile.protocol is Protocol.LMTP
        return True

    def ehlo_lines(self, responses: list[str]) -> list[str]:
        """aiosmtpd's EHLO lines with the profile's extensions (and stripped ones removed)."""
        offered = [line[4:] for line in responses[1:] if not line[4:].startswith("AUTH ")]
        auth = self.auth_keyword()  # AUTH as the profile offers it now (fakemx.smtp.auth)
        if auth is not None:
            offered.insert(len(offered) - 1, auth)  # before aiosmtpd's last line, HELP
        keywords = [responses[0][4:], *extensions.ehlo_keywords(
            self.ext, offered, max_size=self.profile.max_message_size,
            tls_active=self.tls_active)]
        kept = [kw for i, kw in enumerate(keywords) if i == 0 or not self._stripped(kw)]
        if self._strip:
            self._note(f"EHLO reply stripped of {', '.join(sorted(self._strip))}")
        lines = [f"250-{kw}" for kw in kept[:-1]] + [f"250 {kept[-1]}"]
        # aiosmtpd pushes each line; a shaped reply (edges) is written whole, as one push.
        return ["\r\n".join(lines)] if self.shape_next_reply is not None else lines

    def _stripped(self, keyword_line: str) -> bool:
        return keyword_line.split(" ", 1)[0].upper() in self._strip

    def outgoing(self, text: str) -> str | None:
        """Enhanced status codes when advertised; MAIL, RCPT and RSET replies held while
        ``hold_pipelined_replies``, then sent ahead of the reply that ends the group."""
        ext = self.ext
        if ext.enhancedstatuscodes:
            text = extensions.with_enhanced_code(text, self._verb)
        if ext.hold_pipelined_replies and self._verb in GROUPABLE:
            if self._held is None:
                self._held = []
                self._note("replies held until the pipelined group ends (DATA, QUIT...)")
            self._held.append(text)
            return None
        if self._held:
            text = "\r\n".join([*self._held, text])
            self._held = None
        return text

    def _hang_up(self, stage: Stage, how: DropHow, *, replied: bool) -> NoReturn:
        """A reply that closes (a 421 to RCPT, say) goes out after the held ones."""
        if self._held and self.transport is not None and not self.transport.is_closing():
            text = "\r\n".join(self._held)
            self._held = None
            self.on_reply(text)
            self.writer.write(f"{text}\r\n".encode())
        super()._hang_up(stage, how, replied=replied)

    @syntax("MAIL FROM: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_MAIL(self, arg: str | None) -> None:
        await self._screened(arg, super().smtp_MAIL, mail=True)

    @syntax("RCPT TO: <address>", extended=" [SP <mail-parameters>]")
    async def smtp_RCPT(self, arg: str | None) -> None:
        await self._screened(arg, super().smtp_RCPT, mail=False)

    async def _screened(self, arg: str | None,
                        then: Callable[[str | None], Awaitable[None]], *, mail: bool) -> None:
        """Refuse the command for a parameter, or hand aiosmtpd the rest to run ``then``."""
        screened, refusal = self._screen(arg, mail=mail)
        if refusal is not None:
            await self.push(refusal)
            return
        await then(screened)

    def _screen(self, arg: str | None, *, mail: bool) -> tuple[str | None, str | None]:
        """(the argument without the parameters fakemx takes itself, a refusal or None)."""
        if not arg or self.session is None or not self.session.extended_smtp:
            return arg, None  # aiosmtpd answers the syntax error (or params after HELO)
        try:
            path, params = extensions.split_parameters(arg)
        except ValueError:  # no address at all: aiosmtpd's syntax reply
            return arg, None
        ext = self.ext
        if mail:
            passed, taken, refusal = extensions.screen_mail(ext, params,
                                                            tls_active=self.tls_active)
        else:
            passed, taken, refusal = extensions.screen_rcpt(ext, params)
        if refusal is None and taken:
            self._note(f"{'MAIL' if mail else 'RCPT'} parameters taken: {' '.join(taken)}")
        return " ".join([path, *passed]), refusal


def _command_size_limits() -> dict[str, int]:
    """Per-session limits: aiosmtpd's own table is one dict shared by every session."""
    limits: dict[str, int] = defaultdict(lambda: 512)
    limits.update(_LONGER_COMMANDS)
    return limits
