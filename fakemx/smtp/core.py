"""A session's core: its life on the connection, its journal entry, its rules and
the one executor of their actions. The commands live in the modules beside it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NoReturn

from fakemx.actions import (
    Accept,
    BreakHandshake,
    Drop,
    DropHow,
    HandshakeFault,
    MaskBanner,
    StripExtensions,
)
from fakemx.clientbytes import auth_argument_kept
from fakemx.counters import SERVER_SCOPES, CountKey, Event, Scope, Tally
from fakemx.decide import Context, choose
from fakemx.edge_actions import EdgeAction
from fakemx.journal import Outcome, Session
from fakemx.model import Action, Reply, Rule, Stall
from fakemx.smtp import limits, tcp
from fakemx.smtp.replies import no_reply, render
from fakemx.smtp.seam import AiosmtpdSession, SessionOver
from fakemx.stages import Stage, TlsMode
from fakemx.state import ServerState

# RFC 5321 4.5.3.1.6: 998 octets + CRLF, plus one for a leading transparency dot.
LINE_LENGTH_LIMIT = 1001
SHUTDOWN_REPLY = "421 4.3.2 Service shutting down, closing transmission channel"
# Commands one session may have answered before the others get a turn (fairness).
COMMANDS_PER_TURN = 16
_NOTHING_STRIPPED: frozenset[str] = frozenset()  # one for all: each frozenset() is 216 B


class SessionCore(AiosmtpdSession):
    """One connection. Works from the profile snapshot taken when it was created."""

    line_length_limit = LINE_LENGTH_LIMIT
    __slots__ = ("_busy", "_close_when_done", "_commands", "_counted_as", "_finished", "_holds_fd",
                 "_last_recipient", "_last_sender", "_over_limit", "_refusing", "_since_yield",
                 "_strip", "_tally", "_timed_out", "_verb", "plan", "profile", "record", "state")

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.profile = state.profile  # the snapshot: run-time changes apply from the next one
        self.plan = state.plan(self.profile)  # its rules per stage, what they count
        starttls = self.profile.tls.mode is TlsMode.STARTTLS
        super().__init__(
            hostname=state.hostname,
            ident="ESMTP fakemx",
            tls_context=state.tls_context if starttls else None,
            data_size_limit=None,  # fakemx advertises and enforces SIZE itself (RFC 1870)
            enable_SMTPUTF8=True,
            timeout=self.profile.idle_timeout_seconds,
        )
        self.record: Session | None = None
        self._refusing = False  # after a non-2xx greeting, only QUIT is served (RFC 5321 3.1)
        self._strip = _NOTHING_STRIPPED
        self._timed_out = False
        self._finished = False
        self._busy = False  # a command (a whole DATA transaction included) is in progress
        self._commands = 0
        self._since_yield = 0  # commands answered since this session last let others run
        self._holds_fd = False  # counted in the process's descriptor budget
        self._over_limit: str | None = None  # the 421 to greet with, when over a limit
        self._close_when_done = False
        self._last_sender = ""
        self._last_recipient = ""
        self._verb = ""  # the command being answered (EHLO or HELO, ...)
        self._counted_as = ""  # whose attempts and counts: the client, or "client sender"
        self._tally = Tally()  # this session's messages and this message's recipients

    # region connection lifetime ------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        upgrading = self.upgrading
        super().connection_made(transport)
        if upgrading:  # STARTTLS finished: the same session goes on encrypted
            self._note_tls(transport)
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            tcp.tune_accepted(sock, self.profile.idle_timeout_seconds)
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
        self._counted_as = client_ip
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
        transport = self.raw_transport
        if isinstance(transport, asyncio.Transport):
            transport.abort()

    def _say_goodbye(self) -> None:
        self._mark(Outcome.SHUTDOWN)
        if self.transport is None or self.transport.is_closing():
            return
        self.writer.write(f"{SHUTDOWN_REPLY}\r\n".encode())
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

    def _note_tls(self, transport: asyncio.BaseTransport) -> None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or self.record is None:
            return
        cipher = ssl_object.cipher()
        self.record.tls = f"{ssl_object.version()} {cipher[0] if cipher else ''}".strip()
        self.record.add("fakemx", f"TLS established: {self.record.tls}")

    def idle_timed_out(self) -> None:
        self._timed_out = True

    def on_crash(self, error: Exception) -> None:
        self._incident(error)  # a bug in fakemx: kept for FakeMX.check()

    # endregion
    # region journaling ---------------------------------------------------------

    def on_reply(self, text: str) -> None:
        if self.record is not None:
            for line in text.split("\r\n"):
                self.record.add("server", line)

    def on_push_after_close(self) -> None:
        self._mark(Outcome.CLOSED_AFTER_REPLY)

    async def run_command(
        self, name: str, method: Callable[[str | None], Awaitable[None]], arg: str | None
    ) -> None:
        """Journal the command, then run it; a shutdown waits for it to finish."""
        if self.record is not None:
            shown = auth_argument_kept(arg) if name == "AUTH" and arg else arg
            self.record.add("client", name if shown is None else f"{name} {shown}")
        self._verb = name
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

    def _note(self, text: str) -> None:
        if self.record is not None:
            self.record.add("fakemx", text)

    def _reach(self, stage: Stage) -> None:
        if self.record is not None:
            self.record.stage = stage

    def _context(self, stage: Stage, *, sender: str | None = None,
                 recipient: str | None = None, body_bytes: int = 0,
                 mechanism: str | None = None, login: str | None = None) -> Context:
        record = self.record
        assert record is not None
        sender = sender if sender is not None else getattr(self.envelope, "mail_from", None)
        rules = self.plan.rules[stage]
        keys = self.plan.count_keys[stage]
        counts: dict[CountKey, int] = {}
        if keys:  # only the numbers this stage's rules read
            counts = self.state.facts(keys, self._counted_as, sender)
            mine = tuple(key for key in keys if key[1] not in SERVER_SCOPES)
            counts |= self._tally.facts(mine, {Scope.SESSION: "", Scope.MESSAGE: ""},
                                        self.state.clock())
        return Context(
            stage=stage,
            client_ip=record.client_ip,
            attempt=record.attempt,
            seconds_since_first_attempt=self.state.seconds_since_first(self._counted_as),
            concurrent=self.state.open_sessions,
            helo=record.helo,
            sender=sender,
            recipient=recipient,
            body_bytes=body_bytes,
            authenticated=self.authenticated, mechanism=mechanism, login=login,
            draw=self.state.rng.random,
            counts=counts,
            uses=self.state.rule_uses(rules, self._counted_as),
        )

    def _decide(self, stage: Stage, *, first: Iterable[Rule] = (), **facts: Any) -> Rule | None:
        """The rule that fires at ``stage``, if any. A MAIL counts a message and a RCPT a
        recipient first (fakemx.counters), so the rules see counts with this one in them."""
        self._reach(stage)
        if stage is Stage.MAIL and self.state.attempts_per_sender and self.record is not None \
                and self._counted_as == self.record.client_ip:  # from MAIL FROM on: per sender
            self.record.attempt, self._counted_as = self.state.arrive_as(
                self.record.client_ip, facts.get("sender") or "")
            self._note(f"attempt {self.record.attempt} from this client and sender")
        if stage is Stage.MAIL or stage is Stage.RCPT:
            self._count(Event.MESSAGES if stage is Stage.MAIL else Event.RECIPIENTS,
                        facts.get("sender"))
        rules = self.plan.rules[stage]
        if not rules and not first:
            return None  # the common case: nothing to decide, no snapshot to build
        ctx = self._context(stage, **facts)
        choice = choose(first, ctx)  # in-band rules first: they are never counted
        if choice.rule is None:
            choice = choose(rules, ctx)
        self.state.used(choice.matched, choice.rule, self._counted_as)
        if choice.rule is not None:
            self._note(f"rule {choice.rule.label} fires {stage.label}")
        return choice.rule

    def _count(self, event: Event, sender: str | None) -> None:
        record = self.record
        assert record is not None
        if sender is None:
            sender = getattr(self.envelope, "mail_from", None)
        counting = self.plan.counting
        if not counting.wanted:
            return  # no rule counts anything: the common case costs nothing
        self.state.count(event, self._counted_as, sender, counting)
        if event is Event.MESSAGES:
            self._tally.forget(Scope.MESSAGE)  # a new transaction: its recipients from 0
        mine = [(Scope.SESSION, "")] + ([(Scope.MESSAGE, "")] if event is Event.RECIPIENTS
                                        else [])
        self._tally.add(event, mine, self.state.clock(), counting)

    def _act(self, stage: Stage, rule: Rule | None) -> Awaitable[str | None]:
        """Carry out ``rule``'s action: the reply to send instead of the normal one, or None."""
        # Not a coroutine itself: a session held in a stall keeps one frame fewer.
        return no_reply() if rule is None else self.perform(stage, rule.action)

    async def perform(self, stage: Stage, action: Action) -> str | None:
        """The one executor of actions (fakemx.actions).

        Returns the reply to send instead of the normal one, or None to carry on
        normally; raises SessionOver when the action ends the session.
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
            case EdgeAction():  # the malformed and edge replies: fakemx/smtp/edges.py
                return await self._edge(stage, action)

    def _placeholders(self) -> dict[str, str]:
        record = self.record
        return {
            "client_ip": record.client_ip if record else "",
            "helo": (record.helo if record else None) or "",
            "sender": self._last_sender,
            "recipient": self._last_recipient,
            "hostname": self.hostname,
        }

    async def _stall(self, seconds: float | None) -> None:
        self._note("stall for ever" if seconds is None else f"stall {seconds:g} s")
        self.pause_idle_timer()
        if seconds is None:
            await self.loop.create_future()  # until the client gives up (cancels us)
        else:
            await asyncio.sleep(seconds)
        self._note("stall over")
        self.restart_idle_timer()

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
        raw = self.raw_transport
        if how == "rst" and isinstance(raw, asyncio.Transport):
            tcp.reset(raw)
        elif self.transport is not None:  # flushes a pending reply, then FIN (RST if unread)
            unread = tcp.close(self.transport, raw)
            if unread:
                self._note(f"{unread} bytes from the client unread: the kernel resets (RST)")
        raise SessionOver()

    def _incident(self, error: BaseException) -> None:
        where = f"session {self.record.id} {self.record.stage.label}" if self.record else "session"
        self.state.incidents.add(where, error)

    async def _break_handshake(self, how: HandshakeFault) -> NoReturn:
        raise NotImplementedError  # fakemx.smtp.starttls

    async def _edge(self, stage: Stage, action: EdgeAction) -> str | None:
        raise NotImplementedError  # fakemx.smtp.edges

    # endregion
