"""What happened: sessions with their events, and the messages accepted.

The journal is written on the server's event loop and read from any thread
(tests, the CLI, a future HTTP API), so every read and the waiting go through
one condition variable.
"""

from __future__ import annotations

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

from fakemx.stages import Stage


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


@dataclass(frozen=True)
class Event:
    at: float  # Unix time
    kind: str  # "client": a command; "server": a reply line; "fakemx": rules, stalls, TLS, ends
    text: str

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, "text": self.text}


@dataclass
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

    def add(self, kind: str, text: str) -> None:
        self.events.append(Event(time.time(), kind, text))

    @property
    def ended_by(self) -> str:
        """The end in words, e.g. ``fakemx reset (RST) after MAIL``."""
        where = self.stage.label
        return {
            Outcome.OPEN: "still open",
            Outcome.QUIT: "client sent QUIT",
            Outcome.CLIENT_CLOSED: f"client closed the connection {where}",
            Outcome.CLIENT_RESET: f"client reset the connection {where}",
            Outcome.CLOSED_AFTER_REPLY: f"fakemx replied and closed (FIN) {where}",
            Outcome.RESET_AFTER_REPLY: f"fakemx replied and reset (RST) {where}",
            Outcome.DROPPED_FIN: f"fakemx closed (FIN) {where}",
            Outcome.DROPPED_RST: f"fakemx reset (RST) {where}",
            Outcome.TIMEOUT: f"fakemx's idle timeout closed it {where}",
            Outcome.ERROR: f"failed {where}",
            Outcome.SHUTDOWN: f"fakemx stopped {where}",
        }[self.outcome]

    @property
    def replies(self) -> list[str]:
        return [e.text for e in self.events if e.kind == "server"]

    @property
    def commands(self) -> list[str]:
        return [e.text for e in self.events if e.kind == "client"]

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
        }


@dataclass(frozen=True)
class StoredMessage:
    """An accepted message with its envelope, as stored before its ``250``."""

    id: int
    session_id: int
    received: float
    mail_from: str
    rcpt_tos: tuple[str, ...]
    content: bytes

    @property
    def message(self) -> EmailMessage:
        parser = BytesParser(policy=policy.default)
        message = parser.parsebytes(self.content)
        assert isinstance(message, EmailMessage)
        return message


class Journal:
    """Sessions and messages of one server, in memory (newest ``keep`` sessions)."""

    def __init__(self, keep: int = 10_000) -> None:
        self._cond = threading.Condition()
        self._sessions: deque[Session] = deque(maxlen=keep)
        self._messages: deque[StoredMessage] = deque(maxlen=keep)
        self._listeners: list[Callable[[str, Session], None]] = []

    def subscribe(self, callback: Callable[[str, Session], None]) -> None:
        """Call ``callback(kind, session)`` on "started" and "ended" (on the loop thread)."""
        self._listeners.append(callback)

    def started(self, session: Session) -> None:
        with self._cond:
            self._sessions.append(session)
            self._cond.notify_all()
        self._notify("started", session)

    def ended(self, session: Session) -> None:
        with self._cond:
            self._cond.notify_all()
        self._notify("ended", session)

    def accepted(self, message: StoredMessage) -> None:
        with self._cond:
            self._messages.append(message)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._sessions.clear()
            self._messages.clear()
            self._cond.notify_all()

    @property
    def sessions(self) -> list[Session]:
        with self._cond:
            return list(self._sessions)

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

        Returns False when ``timeout`` seconds pass first; never sleeps a fixed time.
        """

        def holds() -> bool:
            checks: Iterable[bool] = (
                sessions is None or len(self._sessions) >= sessions,
                ended is None
                or sum(s.outcome is not Outcome.OPEN for s in self._sessions) >= ended,
                messages is None or len(self._messages) >= messages,
            )
            return all(checks)

        with self._cond:
            return self._cond.wait_for(holds, timeout=timeout)

    def _notify(self, kind: str, session: Session) -> None:
        for callback in self._listeners:
            callback(kind, session)
