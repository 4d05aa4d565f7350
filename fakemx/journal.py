"""What happened: sessions with their events, and the messages accepted.

The journal is written on the server's event loop and read from any thread
(tests, the CLI, a future HTTP API), so every read and the waiting go through
one condition variable.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from enum import StrEnum
from typing import Any

from fakemx import timeline  # imports nothing of this module at run time: no cycle
from fakemx.clientbytes import shown, shown_or_none
from fakemx.stages import Stage

# What the journal keeps in memory. Everything is in the store too; these bound
# what a long run or a hostile client can make fakemx hold (issue: 40 messages of
# 30 MiB once took the process to 1.38 GB).
KEEP_SESSIONS = 10_000
KEEP_SESSION_BYTES = 32 * 2**20  # transcripts of finished sessions
KEEP_BODY_BYTES = 16 * 2**20  # message bodies; older ones are read from the store
SESSION_EVENT_BYTES = 2**20  # one session's transcript; later events are counted only
_EVENT_OVERHEAD = 120  # an Event object and its list slot, roughly


class Outcome(StrEnum):
    """How a session ended."""

    OPEN = "open"  # still running
    QUIT = "quit"  # the client sent QUIT and got 221
    CLIENT_CLOSED = "client_closed"  # the client closed (FIN) without QUIT
    CLIENT_RESET = "client_reset"  # the client reset the connection (RST)
    CLOSED_AFTER_REPLY = "closed_after_reply"  # fakemx replied (e.g. 421) and closed with FIN
    RESET_AFTER_REPLY = "reset_after_reply"  # fakemx replied and reset (RST)
    DROPPED_FIN = "dropped_fin"  # fakemx closed with FIN, no reply
    DROPPED_RST = "dropped_rst"  # fakemx reset with RST, no reply
    TIMEOUT = "timeout"  # fakemx's idle timeout closed it
    ERROR = "error"  # a TLS or protocol failure ended it
    SHUTDOWN = "shutdown"  # fakemx was stopped while the session was open


# Session.ended_by, per outcome ({where}: the stage, e.g. "after MAIL"); formatted when asked.
_ENDED_BY = {
    Outcome.OPEN: "still open",
    Outcome.QUIT: "client sent QUIT",
    Outcome.CLIENT_CLOSED: "client closed the connection {where}",
    Outcome.CLIENT_RESET: "client reset the connection {where}",
    Outcome.CLOSED_AFTER_REPLY: "fakemx replied and closed (FIN) {where}",
    Outcome.RESET_AFTER_REPLY: "fakemx replied and reset (RST) {where}",
    Outcome.DROPPED_FIN: "fakemx closed (FIN) {where}",
    Outcome.DROPPED_RST: "fakemx reset (RST) {where}",
    Outcome.TIMEOUT: "fakemx's idle timeout closed it {where}",
    Outcome.ERROR: "failed {where}",
    Outcome.SHUTDOWN: "fakemx stopped {where}",
}


@dataclass(frozen=True, slots=True)  # slots: a few per session, 15,000 sessions held
class Event:
    at: float  # Unix time
    kind: str  # "client": a command; "server": a reply line; "fakemx": rules, stalls, TLS, ends
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, "text": self.text}


@dataclass(slots=True)  # one per connection, 15,000 held
class Session:
    """One connection. fakemx builds these; read them through ``FakeMX.sessions``."""

    id: int
    server: str
    profile: str
    client_ip: str
    client_port: int
    attempt: int
    started: float
    ended: float | None = None
    outcome: Outcome = Outcome.OPEN
    stage: Stage = Stage.CONNECT  # the last stage reached
    helo: str | None = None
    tls: str | None = None  # e.g. "TLSv1.3 TLS_AES_256_GCM_SHA384"
    events: list[Event] = field(default_factory=list)
    message_ids: list[int] = field(default_factory=list)
    events_not_kept: int = 0  # past SESSION_EVENT_BYTES: counted, not kept
    _event_bytes: int = field(default=0, repr=False, compare=False)

    def add(self, kind: str, text: str) -> None:
        if self._event_bytes >= SESSION_EVENT_BYTES:
            self.events_not_kept += 1
            return
        self._event_bytes += len(text) + _EVENT_OVERHEAD
        self.events.append(Event(time.time(), kind, text))
        if self._event_bytes >= SESSION_EVENT_BYTES:
            self.events.append(Event(time.time(), "fakemx", (
                f"journal: this transcript reached {SESSION_EVENT_BYTES // 2**20} MiB;"
                " later events are counted, not kept")))

    @property
    def size_estimate(self) -> int:
        """Roughly what this session holds in memory, in bytes."""
        return 512 + self._event_bytes

    @property
    def ended_by(self) -> str:
        """The end in words, e.g. ``fakemx reset (RST) after MAIL``."""
        return _ENDED_BY[self.outcome].format(where=self.stage.label)

    @property
    def replies(self) -> list[str]:
        return [e.text for e in self.events if e.kind == "server"]

    @property
    def commands(self) -> list[str]:
        return [e.text for e in self.events if e.kind == "client"]

    @property
    def first_error(self) -> timeline.Break | None:
        """The first 4xx/5xx reply, drop or stall, with its stage; None if all went fine.

        The point the lab page marks "broke here", e.g. ``Break(stage=Stage.MAIL,
        kind=BreakKind.DROP, text="fakemx reset (RST) after MAIL", ...)``.
        """
        return timeline.first_error(self)

    @property
    def broke_at(self) -> Stage | None:
        """The stage of ``first_error`` (e.g. ``Stage.MAIL``); None if all went fine."""
        return timeline.broke_at(self)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "server": self.server,
            "profile": self.profile,
            "client_ip": self.client_ip,
            "client_port": self.client_port,
            "attempt": self.attempt,
            "started": self.started,
            "ended": self.ended,
            "outcome": str(self.outcome),
            "stage": str(self.stage),
            "ended_by": self.ended_by,
            "helo": self.helo,
            "tls": self.tls,
            "events": [e.as_dict() for e in self.events],
            "message_ids": list(self.message_ids),
            "events_not_kept": self.events_not_kept,
        }

    def shown(self) -> dict[str, Any]:
        """``as_dict()`` for people: what the client sent (HELO, commands) escaped."""
        record = self.as_dict()
        record["helo"] = shown_or_none(self.helo)
        for event in record["events"]:
            event["text"] = shown(event["text"])
        return record


class MessageBody:
    """A stored message's bytes: in memory while the journal's budget allows,
    then read back from the store (where every accepted message is anyway)."""

    __slots__ = ("_data", "_load", "size")

    def __init__(self, data: bytes, load: Callable[[int], bytes] | None = None) -> None:
        self._data: bytes | None = data
        self._load = load
        self.size = len(data)

    @property
    def in_memory(self) -> bool:
        return self._data is not None

    def forget(self) -> None:
        """Drop the in-memory copy, when the store can give it back."""
        if self._load is not None:
            self._data = None

    def read(self, message_id: int) -> bytes:
        if self._data is not None:
            return self._data
        assert self._load is not None
        return self._load(message_id)


@dataclass(frozen=True)
class StoredMessage:
    """An accepted message with its envelope, as stored before its ``250``."""

    id: int
    session_id: int
    received: float
    mail_from: str
    rcpt_tos: tuple[str, ...]
    body: MessageBody = field(repr=False, compare=False)

    @property
    def content(self) -> bytes:
        """The message as received (dot-unstuffed), from memory or from the store."""
        return self.body.read(self.id)

    @property
    def size(self) -> int:
        return self.body.size

    @property
    def message(self) -> EmailMessage:
        parser = BytesParser(policy=policy.default)
        message = parser.parsebytes(self.content)
        assert isinstance(message, EmailMessage)
        return message


class Journal:
    """Sessions and messages of one server, in memory within byte budgets.

    The newest finished sessions are kept up to ``KEEP_SESSIONS`` and
    ``KEEP_SESSION_BYTES``; message envelopes are kept, their bodies up to
    ``KEEP_BODY_BYTES`` (older bodies are read back from the store on use).
    Counts for ``wait_for`` cover everything since the last ``clear()``.
    """

    def __init__(
        self,
        keep_sessions: int = KEEP_SESSIONS,
        session_bytes: int = KEEP_SESSION_BYTES,
        body_bytes: int = KEEP_BODY_BYTES,
    ) -> None:
        self._cond = threading.Condition()
        self._keep_sessions = keep_sessions
        self._session_budget = session_bytes
        self._body_budget = body_bytes
        self._open: dict[int, Session] = {}
        self._finished: deque[Session] = deque()  # oldest first
        self._session_bytes = 0  # of the sessions in _finished
        self._messages: deque[StoredMessage] = deque(maxlen=keep_sessions)
        self._bodies: deque[MessageBody] = deque()  # in memory, oldest first
        self._body_bytes = 0
        self._started = self._ended = self._accepted = 0
        self._listeners: list[Callable[[str, Session], None]] = []

    def subscribe(self, callback: Callable[[str, Session], None]) -> None:
        """Call ``callback(kind, session)`` on "started" and "ended" (on the loop thread)."""
        self._listeners.append(callback)

    def unsubscribe(self, callback: Callable[[str, Session], None]) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(callback)

    def started(self, session: Session) -> None:
        with self._cond:
            self._open[session.id] = session
            self._started += 1
            self._cond.notify_all()
        self._notify("started", session)

    def ended(self, session: Session) -> None:
        """``session`` has ended (its ``ended`` time and outcome set)."""
        with self._cond:
            if self._open.pop(session.id, None) is not None:  # else forgotten by clear()
                self._ended += 1
                self._finished.append(session)
                self._session_bytes += session.size_estimate
                self._evict_sessions()
            self._cond.notify_all()
        self._notify("ended", session)

    def accepted(self, message: StoredMessage) -> None:
        with self._cond:
            self._messages.append(message)
            self._accepted += 1
            if message.body.in_memory:
                self._bodies.append(message.body)
                self._body_bytes += message.size
            while self._body_bytes > self._body_budget and self._bodies:
                oldest = self._bodies.popleft()
                self._body_bytes -= oldest.size
                oldest.forget()
            self._cond.notify_all()

    def _evict_sessions(self) -> None:
        """Forget the oldest finished sessions beyond the count and byte budgets."""
        while len(self._finished) > 1 and (
            len(self._finished) > self._keep_sessions
            or self._session_bytes > self._session_budget
        ):
            self._session_bytes -= self._finished.popleft().size_estimate

    def clear(self) -> None:
        with self._cond:
            self._open.clear()
            self._finished.clear()
            self._session_bytes = 0
            self._messages.clear()
            self._bodies.clear()
            self._body_bytes = 0
            self._started = self._ended = self._accepted = 0
            self._cond.notify_all()

    @property
    def sessions(self) -> list[Session]:
        with self._cond:
            return sorted([*self._finished, *self._open.values()], key=lambda s: s.id)

    @property
    def messages(self) -> list[StoredMessage]:
        with self._cond:
            return list(self._messages)

    def wait_for(
        self,
        *,
        sessions: int | None = None,
        ended: int | None = None,
        messages: int | None = None,
        timeout: float = 5.0,
    ) -> bool:
        """Block until at least so many sessions (started / ended) and messages exist.

        Counts everything since the last ``clear()``, also what the budgets have
        let go of. Returns False when ``timeout`` seconds pass first; never sleeps
        a fixed time.
        """

        def holds() -> bool:
            checks: Iterable[bool] = (
                sessions is None or self._started >= sessions,
                ended is None or self._ended >= ended,
                messages is None or self._accepted >= messages,
            )
            return all(checks)

        with self._cond:
            return self._cond.wait_for(holds, timeout=timeout)

    def _notify(self, kind: str, session: Session) -> None:
        for callback in self._listeners:
            callback(kind, session)
