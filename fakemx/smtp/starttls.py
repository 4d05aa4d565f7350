"""STARTTLS: the upgrade, a rule's reply or a broken handshake instead, implicit TLS failures."""

from __future__ import annotations

import asyncio
from typing import NoReturn

from aiosmtpd.smtp import TLSSetupException, syntax

from fakemx.actions import HandshakeFault
from fakemx.journal import Outcome
from fakemx.smtp.core import SessionCore
from fakemx.smtp.seam import SessionOver
from fakemx.stages import Stage
from fakemx.tls import contexts, handshake


class StartTls(SessionCore):
    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str | None) -> None:
        if "STARTTLS" in self._strip:
            # An inspecting firewall that hides STARTTLS also blanks the command
            # (Cisco's inspection turns it into XXXXXXXX), so the server never sees it.
            await self.push('500 5.5.2 Error: command "XXXXXXXX" not recognized')
            return
        if self.tls_active:
            # aiosmtpd would start a second TLS layer on the first and crash (found by
            # tests/test_fuzz.py); RFC 3207 4.2 leaves the reply open, Postfix says this.
            await self.push("554 5.5.1 Error: TLS already active")
            return
        if not arg and self.tls_context is not None:
            reply = await self._act(Stage.STARTTLS, self._decide(Stage.STARTTLS))
            if reply is not None:
                await self.push(reply)
                return
        try:
            await super().smtp_STARTTLS(arg)
        except TLSSetupException as exc:
            # A failed handshake is the test's expected outcome, not a server
            # error: end the session as aiosmtpd would (close, connection_lost),
            # without its "SMTP session exception" traceback in the log.
            # asyncio publishes "ssl_object" only after a handshake succeeds.
            ssl_object = self.failed_handshake_ssl_object()
            reason = contexts.handshake_error(exc.__cause__ or exc, ssl_object)
            self._note(f"TLS handshake failed: {reason}")
            if self.transport is not None:
                self.transport.close()
            self.connection_lost(exc)
            raise SessionOver() from None

    async def _break_handshake(self, how: HandshakeFault) -> NoReturn:
        """Answer STARTTLS with 220 as if TLS would start, then fail the handshake.

        What the client sees: ``alert``, a fatal handshake_failure alert in
        answer to its ClientHello, then FIN; ``rst``, a reset once its
        ClientHello arrives; ``stall``, nothing at all until it gives up.
        """
        await self.push("220 Ready to start TLS")  # aiosmtpd's own words: indistinguishable
        if how == "stall":
            await self._stall(None)  # until the client gives up: that cancels us
        try:
            content_type, fragment = await handshake.read_record(self.reader)
        except (asyncio.IncompleteReadError, ValueError) as exc:
            self._note(f"no ClientHello came: {exc}")
            self._hang_up(Stage.STARTTLS, "fin", replied=True)
        hello = handshake.is_client_hello(content_type, fragment)
        self._note("ClientHello received" if hello else "a TLS record but no ClientHello")
        if how == "alert" and isinstance(self.transport, asyncio.Transport):
            self.transport.write(handshake.fatal_alert())
            self._note(f"sent fatal TLS alert handshake_failure ({handshake.HANDSHAKE_FAILURE})")
            self._hang_up(Stage.STARTTLS, "fin", replied=True)
        self._hang_up(Stage.STARTTLS, "rst", replied=True)

    def tls_handshake_failed(self, transport: asyncio.BaseTransport, error: BaseException) -> None:
        """Implicit TLS: the handshake failed before SMTP began (see fakemx.tls.implicit).

        The connection still counts as an attempt and is journaled as a
        session that failed after connect, with the server's view of why.
        """
        record = self._begin_record(transport)
        self.state.journal.started(record)
        record.add("fakemx", f"TLS handshake failed: {error}")
        record.outcome = Outcome.ERROR
        self._end_record(record)

