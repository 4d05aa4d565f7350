"""FakeSMTP: aiosmtpd's SMTP protocol with a rule check at every stage.

This is the only module that imports aiosmtpd. Where aiosmtpd parses a command
for us (EHLO, MAIL, RCPT) the stage runs in a handler hook; where it offers no
hook (greeting, DATA, the body, the final dot, STARTTLS, QUIT) fakemx
overrides the documented ``smtp_<COMMAND>`` method, or for the greeting the
private ``_handle_client`` (pinned and guarded by tests/test_aiosmtpd_canary.py).

A rule that ends the session (a drop, or a reply with ``close``) hangs up and
raises ``_SessionOver``, a CancelledError: aiosmtpd's command loop unwinds on it
exactly as it does after its own QUIT (it closes the writer and stops).
"""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
import struct
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, AnyStr, NoReturn

from aiosmtpd.smtp import MISSING, SMTP, Envelope, TLSSetupException, syntax

from fakemx import body, inband, limits
from fakemx.actions import (
    Accept,
    BreakHandshake,
    Drop,
    DropHow,
    HandshakeFault,
    MaskBanner,
    StripExtensions,
    accepts,
)
from fakemx.decide import Context, decide
from fakemx.dispatch import HOOKS, Commands, command_names
from fakemx.journal import Outcome, Session
from fakemx.model import Action, Reply, Rule, Stall
from fakemx.replies import render
from fakemx.stages import Stage, TlsMode
from fakemx.state import ServerState
from fakemx.tls import contexts, handshake

# RFC 5321 4.5.3.1.6: 998 octets + CRLF, plus one for a leading transparency dot.
LINE_LENGTH_LIMIT = 1001
_SIZE_OPTION = re.compile(r"^SIZE=(\d+)$", re.IGNORECASE)
_LINGER_RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
SHUTDOWN_REPLY = "421 4.3.2 Service shutting down, closing transmission channel"
# Commands one session may have answered before the others get a turn (fairness).
COMMANDS_PER_TURN = 16
# Re-arming the idle timer costs a timer handle; do it per 64 KiB of body, not per line.
_TIMER_RESET_BYTES = 65536


class _SessionOver(asyncio.CancelledError):
    """fakemx ended the session itself; unwinds aiosmtpd's loop as its QUIT does."""


class _FakeEnvelope(Envelope):
    def __init__(self) -> None:
        super().__init__()
        self.inband: list[Rule] = []  # in-band rules for DATA and the final dot




def _is_2xx(reply: str | None) -> bool:
    return reply is not None and reply.startswith("2")


class FakeSMTP(SMTP):
    """One connection. Works from the profile snapshot taken when it was created."""

    line_length_limit = LINE_LENGTH_LIMIT

    def __dir__(self) -> list[str]:
        """Only the ``auth_*`` and ``smtp_*`` names.

        aiosmtpd's ``__init__`` scans ``inspect.getmembers(self)`` and ``dir(self)``
        for exactly these on every connection; with every attribute of the class
        that scan was about a third of the cost of accepting a connection.
        """
        return list(command_names(type(self)))

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.profile = state.profile  # the snapshot: run-time changes apply from the next one
        starttls = self.profile.tls.mode is TlsMode.STARTTLS
        super().__init__(
            HOOKS,
            hostname=state.hostname,
            ident="ESMTP fakemx",
            tls_context=state.tls_context if starttls else None,
            data_size_limit=None,  # fakemx advertises and enforces SIZE itself (RFC 1870)
            enable_SMTPUTF8=True,
            timeout=self.profile.idle_timeout_seconds,
            loop=asyncio.get_running_loop(),
        )
        self.record: Session | None = None
        self._swallow_next_push = False
        self._refusing = False  # after a non-2xx greeting, only QUIT is served (RFC 5321 3.1)
        self._strip: frozenset[str] = frozenset()
        self._timed_out = False
        self._finished = False
        self._busy = False  # a command (a whole DATA transaction included) is in progress
        self._commands = 0
        self._since_yield = 0  # commands answered since this session last let others run
        self._holds_fd = False  # counted in the process's descriptor budget
        self._over_limit: str | None = None  # the 421 to greet with, when over a limit
        self._close_when_done = False
        # aiosmtpd only calls .get() and .items() on it; see fakemx.dispatch.Commands.
        self._smtp_methods = Commands(self)  # type: ignore[assignment]

    # region connection lifetime ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        upgrading = self._original_transport is not None
        super().connection_made(transport)
        if upgrading:  # STARTTLS finished: the same session goes on encrypted
            self._note_tls(transport)
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # asyncio sets TCP_NODELAY only when sock.proto is IPPROTO_TCP, and an
            # accepted socket reports 0, so aiosmtpd's line-by-line replies (EHLO) met
            # Nagle and the client's delayed ACK: about 40 ms per multi-line reply.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        record = self._begin_record(transport)
        from_client = self.state.session_opened(self, record.client_ip)
        self._holds_fd = self.state.fds.take()
        self._over_limit = limits.refusal(
            self.profile.limits, self.state.open_sessions, from_client, record.client_ip,
            fds_left=self._holds_fd,
        )
        if transport.get_extra_info("ssl_object") is not None:  # implicit TLS (SMTPS)
            self._note_tls(transport)
        self.state.journal.started(record)

    def connection_lost(self, error: Exception | None) -> None:
        if self.record is not None and not self._finished:
            if self.record.outcome is Outcome.OPEN:
                self.record.outcome = self._client_side_outcome(error)
            self.state.session_ended(self, self.record.client_ip)
            if self._holds_fd:
                self.state.fds.give_back()
            self._end_record(self.record)
        super().connection_lost(error)

    def _begin_record(self, transport: asyncio.BaseTransport) -> Session:
        """The journal entry of a new connection, counted as an attempt of its client."""
        peer = transport.get_extra_info("peername") or ("?", 0)
        client_ip, client_port = str(peer[0]), int(peer[1])
        attempt, _ = self.state.arrive(client_ip)
        record = self.record = Session(
            id=self.state.store.new_session_id(),
            server=self.state.name,
            profile=self.profile.name,
            client_ip=client_ip,
            client_port=client_port,
            attempt=attempt,
            started=time.time(),
        )
        record.add("fakemx", f"connect from {client_ip}:{client_port}, attempt {attempt}")
        return record

    def _end_record(self, record: Session) -> None:
        """Close the journal entry (its outcome already set) and queue it for the store."""
        self._finished = True
        record.ended = time.time()
        record.add("fakemx", record.ended_by)
        try:
            self.state.store.save_session(record)
        except sqlite3.Error as exc:  # the journal in memory still has it
            record.add("fakemx", f"could not save the session: {exc}")
            self._incident(exc)
        self.state.journal.ended(record)

    def shut_down(self) -> None:
        """fakemx is stopping: say 421 and close now, or after the command in progress.

        RFC 5321 3.8: a server that must shut down answers 421 to the next
        command; a transaction under way (a message arriving) may finish first.
        """
        if self._busy:
            self._close_when_done = True
            return
        self._say_goodbye()

    def abort(self) -> None:
        """The shutdown grace ran out: reset the connection."""
        self._mark(Outcome.SHUTDOWN)
        transport = self._original_transport or self.transport
        if isinstance(transport, asyncio.Transport):
            transport.abort()

    def _say_goodbye(self) -> None:
        self._mark(Outcome.SHUTDOWN)
        if self.transport is None or self.transport.is_closing():
            return
        self._writer.write(f"{SHUTDOWN_REPLY}\r\n".encode())
        if self.record is not None:
            self.record.add("server", SHUTDOWN_REPLY)
        self.transport.close()

    def _mark(self, outcome: Outcome) -> None:
        if self.record is not None and self.record.outcome is Outcome.OPEN:
            self.record.outcome = outcome

    def _client_side_outcome(self, error: Exception | None) -> Outcome:
        if self._timed_out:
            return Outcome.TIMEOUT
        if isinstance(error, ConnectionResetError):
            return Outcome.CLIENT_RESET
        if error is not None and not isinstance(error, ConnectionError):
            return Outcome.ERROR
        return Outcome.CLIENT_CLOSED

    def _timeout_cb(self) -> None:
        self._timed_out = True
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def _note_tls(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or self.record is None:
            return
        cipher = ssl_object.cipher()
        self.record.tls = f"{ssl_object.version()} {cipher[0] if cipher else ''}".strip()
        self.record.add("fakemx", f"TLS established: {self.record.tls}")

    # endregion
    # region journaling ---------------------------------------------------------

    async def run_command(
        self, name: str, method: Callable[[str | None], Awaitable[None]], arg: str | None
    ) -> None:
        """Journal the command, then run it; a shutdown waits for it to finish."""
        if self.record is not None:
            shown = "***" if name == "AUTH" and arg else arg  # never journal credentials
            self.record.add("client", name if shown is None else f"{name} {shown}")
        if self._refusing and name != "QUIT":
            await self.push("503 5.5.1 Bad sequence of commands: only QUIT is allowed now")
            return
        self._commands += 1
        most = self.profile.limits.commands_per_session
        if most is not None and self._commands > most:
            self._note(f"limit: more than {most} commands in one session")
            await self.push(limits.TOO_MANY_COMMANDS)
            self._hang_up(self.record.stage if self.record else Stage.CONNECT, "fin",
                          replied=True)
        self._busy = True
        try:
            await method(arg)
        finally:
            self._busy = False
        if self._close_when_done:
            self._say_goodbye()
        self._since_yield += 1
        if self._since_yield >= COMMANDS_PER_TURN:
            # A pipelined burst already in the buffer is answered without awaiting
            # anything: 10,000 RCPTs in one write once held the loop for 3.5 s.
            self._since_yield = 0
            await asyncio.sleep(0)

    async def push(self, status: AnyStr) -> None:
        if self._swallow_next_push:
            # aiosmtpd's own greeting: fakemx has already sent its own (see _handle_client).
            self._swallow_next_push = False
            return
        if self.transport is None or self.transport.is_closing():
            # aiosmtpd hung up (e.g. after too many unknown commands) yet answers what
            # is still buffered; over TLS that write raised AttributeError in asyncio.
            self._mark(Outcome.CLOSED_AFTER_REPLY)
            raise _SessionOver()
        if self.record is not None:
            text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
            for line in text.split("\r\n"):
                self.record.add("server", line)
        await super().push(status)

    def _note(self, text: str) -> None:
        if self.record is not None:
            self.record.add("fakemx", text)

    def _reach(self, stage: Stage) -> None:
        if self.record is not None:
            self.record.stage = stage

    # endregion
    # region deciding and acting ------------------------------------------------

    def _context(self, stage: Stage, *, sender: str | None = None,
                 recipient: str | None = None, body_bytes: int = 0) -> Context:
        record = self.record
        assert record is not None
        envelope = self.envelope
        return Context(
            stage=stage,
            client_ip=record.client_ip,
            attempt=record.attempt,
            seconds_since_first_attempt=self.state.seconds_since_first(record.client_ip),
            concurrent=self.state.open_sessions,
            helo=record.helo,
            sender=sender if sender is not None else getattr(envelope, "mail_from", None),
            recipient=recipient,
            body_bytes=body_bytes,
            draw=self.state.rng.random,
        )

    def _decide(self, stage: Stage, *, first: Iterable[Rule] = (), **facts: Any) -> Rule | None:
        self._reach(stage)
        rules = self.profile.rules_at(stage)
        if not rules and not first:
            return None  # the common case: nothing to decide, no snapshot to build
        ctx = self._context(stage, **facts)
        rule = decide(first, ctx) or decide(rules, ctx)
        if rule is not None:
            self._note(f"rule {rule.label} fires {stage.label}")
        return rule

    async def _act(self, stage: Stage, rule: Rule | None) -> str | None:
        """Carry out ``rule``'s action: the reply to send instead of the normal one, or None."""
        return None if rule is None else await self.perform(stage, rule.action)

    async def perform(self, stage: Stage, action: Action) -> str | None:
        """The one executor of actions (fakemx.actions).

        Returns the reply to send instead of the normal one, or None to carry on
        normally; raises _SessionOver when the action ends the session.
        """
        match action:
            case Accept():
                return None
            case Reply():
                text = render(action, self._placeholders())
                if action.close is not None:
                    await self.push(text)
                    self._hang_up(stage, action.close, replied=True)
                return text
            case Drop():
                self._hang_up(stage, action.how, replied=False)
            case Stall():
                await self._stall(action.seconds)
                then = None if action.then is None else action.then.action
                return None if then is None else await self.perform(stage, then)
            case StripExtensions():
                self._strip = action.names
                return None
            case MaskBanner():
                return f"220 {action.text}"
            case BreakHandshake():
                await self._break_handshake(action.how)


    def _placeholders(self) -> dict[str, str]:
        record = self.record
        return {
            "client_ip": record.client_ip if record else "",
            "helo": (record.helo if record else None) or "",
            "sender": self._last_sender,
            "recipient": self._last_recipient,
            "hostname": self.hostname,
        }

    _last_sender = ""
    _last_recipient = ""

    async def _stall(self, seconds: float | None) -> None:
        self._note("stall for ever" if seconds is None else f"stall {seconds:g} s")
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()  # a stall is fakemx's silence, not the client's
        if seconds is None:
            await self.loop.create_future()  # until the client gives up (cancels us)
        else:
            await asyncio.sleep(seconds)
        self._note("stall over")
        self._reset_timeout()

    def _hang_up(self, stage: Stage, how: DropHow, *, replied: bool) -> NoReturn:
        record = self.record
        if record is not None:
            record.stage = stage
            record.outcome = {
                ("fin", False): Outcome.DROPPED_FIN,
                ("rst", False): Outcome.DROPPED_RST,
                ("fin", True): Outcome.CLOSED_AFTER_REPLY,
                ("rst", True): Outcome.RESET_AFTER_REPLY,
            }[(how, replied)]
        raw = self._original_transport or self.transport
        if how == "rst" and isinstance(raw, asyncio.Transport):
            sock = raw.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            raw.abort()
        elif self.transport is not None:
            self.transport.close()  # flushes a pending reply, then FIN
        raise _SessionOver()

    # endregion
    # region stages -------------------------------------------------------------

    async def _handle_client(self) -> None:
        try:
            await self._greet()
            self._swallow_next_push = True
            await super()._handle_client()
        except _SessionOver:
            return
        except asyncio.CancelledError:
            self._writer.close()
            raise
        except Exception as exc:  # a bug in fakemx: keep it for FakeMX.check()
            self._incident(exc)
            raise

    async def handle_exception(self, error: Exception) -> str:
        """aiosmtpd's ``500 Error: ...`` on the wire, as before, and the error kept.

        A TLS handshake the client abandons is the client's doing, not fakemx's.
        """
        if not isinstance(error, TLSSetupException):
            self._incident(error)
        return await super().handle_exception(error)

    def _incident(self, error: BaseException) -> None:
        where = f"session {self.record.id} {self.record.stage.label}" if self.record else "session"
        self.state.incidents.add(where, error)

    async def _greet(self) -> None:
        if self._over_limit is not None:  # before any rule: the limits keep fakemx up
            self._note(f"limit: {self._over_limit}")
            await self.push(self._over_limit)
            self._hang_up(Stage.GREETING, "fin", replied=True)
        await self._act(Stage.CONNECT, self._decide(Stage.CONNECT))
        greeting = f"220 {self.hostname} ESMTP fakemx"
        replacement = await self._act(Stage.GREETING, self._decide(Stage.GREETING))
        if replacement is not None:
            greeting = replacement
            self._refusing = not replacement.startswith("2")
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
        """aiosmtpd's EHLO lines with SIZE added and stripped extensions removed."""
        keywords = [line[4:] for line in responses]
        keywords.insert(1, f"SIZE {self.profile.max_message_size}")
        kept = [kw for i, kw in enumerate(keywords) if i == 0 or not self._stripped(kw)]
        if self._strip:
            self._note(f"EHLO reply stripped of {', '.join(sorted(self._strip))}")
        return [f"250-{kw}" for kw in kept[:-1]] + [f"250 {kept[-1]}"]

    def _stripped(self, keyword_line: str) -> bool:
        return keyword_line.split(" ", 1)[0].upper() in self._strip

    @syntax("STARTTLS", when="tls_context")
    async def smtp_STARTTLS(self, arg: str | None) -> None:
        if "STARTTLS" in self._strip:
            # An inspecting firewall that hides STARTTLS also blanks the command
            # (Cisco's inspection turns it into XXXXXXXX), so the server never sees it.
            await self.push('500 5.5.2 Error: command "XXXXXXXX" not recognized')
            return
        if self._tls_protocol is not None or (self.session and self.session.ssl is not None):
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
            ssl_object = getattr(self._tls_protocol, "_sslobj", None)
            reason = contexts.handshake_error(exc.__cause__ or exc, ssl_object)
            self._note(f"TLS handshake failed: {reason}")
            if self.transport is not None:
                self.transport.close()
            self.connection_lost(exc)
            raise _SessionOver() from None

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
            content_type, fragment = await handshake.read_record(self._reader)
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
        """Implicit TLS: the handshake failed before SMTP began (see fakemx.implicit).

        The connection still counts as an attempt and is journaled as a
        session that failed after connect, with the server's view of why.
        """
        record = self._begin_record(transport)
        self.state.journal.started(record)
        record.add("fakemx", f"TLS handshake failed: {error}")
        record.outcome = Outcome.ERROR
        self._end_record(record)

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
        reply = await self._act(Stage.DATA, self._decide(Stage.DATA, first=envelope.inband))
        if reply is not None:
            await self.push(reply)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        content, problem, body_reply = await self._read_body()
        self._note(f"body: {len(content)} bytes")
        rule = self._decide(Stage.END_OF_DATA, first=envelope.inband, body_bytes=len(content))
        stored: str | None = None
        if problem is None and (accepts(rule.action) if rule else _is_2xx(body_reply)):
            # A 2xx at end of data says "accepted": the message is stored before it
            # goes out, whatever the rule's text, or the store's 452 goes instead.
            stored = self._store(envelope, content)
            if not stored.startswith("2"):
                rule = body_reply = None
        reply = await self._act(Stage.END_OF_DATA, rule) or body_reply or problem
        if reply is None:
            reply = stored or self._store(envelope, content)
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push(reply)

    def _store(self, envelope: _FakeEnvelope, content: bytes) -> str:
        """Store durably, then (and only then) the 250 may go out."""
        record = self.record
        assert record is not None
        try:
            stored = self.state.store.add_message(
                record.id, self.state.name, envelope.mail_from or "", list(envelope.rcpt_tos),
                content,
            )
        except (sqlite3.Error, OSError) as exc:
            self._note(f"could not store the message: {exc}")
            self._incident(exc)
            return "452 4.3.1 Insufficient system storage"
        record.message_ids.append(stored.id)
        self.state.journal.accepted(stored)
        return f"250 2.0.0 OK: queued as {stored.id}"

    async def _read_body(self) -> tuple[bytes, str | None, str | None]:
        """Read to the final dot: (content, an error reply or None, a body-rule reply or None).

        Reads in blocks that end at a ".\r\n" or at the reader's limit (about 1 kB),
        so a 10 kB message takes a dozen reads rather than one per line. Errors are
        answered only after the final dot (RFC 5321 4.2.5).
        """
        data = bytearray()
        discarded = 0  # bytes dropped once the message is over the size limit
        limit = self.profile.max_message_size
        problem: str | None = None
        body_reply: str | None = None
        watch_body = bool(self.profile.rules_at(Stage.BODY))
        next_timer_reset = _TIMER_RESET_BYTES
        while True:
            try:
                data += await self._reader.readuntil(body.END)
            except asyncio.LimitOverrunError as exc:  # no ".\r\n" within the limit yet
                data += await self._reader.read(exc.consumed)
            else:
                if body.ends_message(data):
                    break
            size = discarded + len(data)
            if size >= next_timer_reset:  # the client is still sending: not idle
                self._reset_timeout()
                next_timer_reset = size + _TIMER_RESET_BYTES
            if watch_body:
                rule = self._decide(Stage.BODY, body_bytes=size)
                if rule is not None:
                    watch_body = False
                    body_reply = await self._act(Stage.BODY, rule)
            if limit and size > limit:
                problem = "552 5.3.4 Message size exceeds fixed maximum message size"
                discarded += len(data) - 4
                del data[:-4]  # keep enough to recognise the final dot
        raw = bytes(data[: -len(body.END)])
        if problem is None and body.has_overlong_line(raw):
            problem = "500 5.5.2 Line too long (see RFC 5321 4.5.3.1.6)"
        return (b"" if problem else body.unstuff(raw)), problem, body_reply

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

    def _create_envelope(self) -> _FakeEnvelope:
        return _FakeEnvelope()

    def _envelope(self) -> _FakeEnvelope:
        assert isinstance(self.envelope, _FakeEnvelope)
        return self.envelope

    # endregion
