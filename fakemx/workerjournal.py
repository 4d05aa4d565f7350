"""Worker 0's journal shows the whole server: the other workers' sessions and messages
are read from the store and added to it, so the API (served by worker 0 alone) and
its live events see one server, as with one process.

The other workers write their finished sessions within ``SESSION_FLUSH_SECONDS``
and every message before its 250 (fakemx.store); this reads them every
``POLL_SECONDS``, so they show up in the API a fraction of a second after they end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from fakemx.clientbytes import from_db
from fakemx.journal import Event, Journal, MessageBody, Outcome, Session, StoredMessage
from fakemx.stages import Stage

POLL_SECONDS = 0.25
# Sessions are found by the time they ended (an index the workers' parent makes),
# this far back: a worker writes a finished session up to SESSION_FLUSH_SECONDS
# late, more on a loaded machine.
LATE_SECONDS = 3.0
_REMEMBERED = 50_000  # ids of sessions already added, so none is added twice


class OtherWorkers:
    """Adds what the other workers of this server wrote to the store to ``journals``
    (by server name, asked each time: a server's name is its address once it listens)."""

    def __init__(self, db_path: Path, slot: int, journals: Callable[[], dict[str, Journal]],
                 content_of: Callable[[int], bytes]) -> None:
        self._db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True,
                                   check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=5000")
        self._slot = slot
        self._journals = journals
        self._content_of = content_of
        (newest,) = self._db.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
        self._last_message = int(newest)  # only what arrives from now on
        self._since = time.time()
        self._seen: set[int] = set()
        self._seen_order: deque[int] = deque()

    def is_theirs(self, session: Session) -> bool:
        """Was ``session`` added from another worker (the session log prints only a
        worker's own: each worker prints its own)?"""
        return session.id in self._seen

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(POLL_SECONDS)
            with contextlib.suppress(sqlite3.Error):  # a busy or full store: next turn
                self.poll()

    def poll(self) -> None:
        journals = self._journals()
        self._add_messages(journals)
        self._add_sessions(journals)

    def _add_messages(self, journals: dict[str, Journal]) -> None:
        rows = self._db.execute(
            "SELECT id, session_id, server, received, mail_from, rcpt_tos, size FROM messages"
            " WHERE id > ? AND worker IS NOT ? ORDER BY id", (self._last_message, self._slot)
        ).fetchall()
        for message_id, session_id, server, received, mail_from, rcpt_tos, size in rows:
            self._last_message = max(self._last_message, message_id)
            journal = journals.get(server)
            if journal is None:
                continue
            body = MessageBody(b"", self._content_of)
            body.forget()  # read from the store when asked for, as an old body is
            body.size = size
            journal.accepted(StoredMessage(message_id, session_id, received,
                                           from_db(mail_from) or "",
                                           tuple(json.loads(rcpt_tos)), body))

    def _add_sessions(self, journals: dict[str, Journal]) -> None:
        since, self._since = self._since, time.time()
        new = [session_id for (session_id,) in self._db.execute(
            "SELECT id FROM sessions WHERE ended >= ? AND worker IS NOT ? ORDER BY id",
            (since - LATE_SECONDS, self._slot)) if session_id not in self._seen]
        rows = [] if not new else self._db.execute(
            "SELECT id, server, profile, client_ip, client_port, attempt, started, ended,"
            " outcome, stage, helo, tls, events FROM sessions"
            f" WHERE id IN ({','.join('?' * len(new))}) ORDER BY id", new).fetchall()
        for row in rows:
            journal = journals.get(row[1])
            if row[0] in self._seen or journal is None:
                continue
            self._remember(row[0])
            session = Session(
                id=row[0], server=row[1], profile=row[2], client_ip=row[3],
                client_port=row[4], attempt=row[5], started=row[6], ended=row[7],
                outcome=Outcome(row[8]), stage=Stage(row[9]), helo=from_db(row[10]),
                tls=row[11], events=[Event(**event) for event in json.loads(row[12])])
            session.message_ids = [message_id for (message_id,) in self._db.execute(
                "SELECT id FROM messages WHERE session_id = ? ORDER BY id", (session.id,))]
            journal.started(session)
            journal.ended(session)

    def _remember(self, session_id: int) -> None:
        self._seen.add(session_id)
        self._seen_order.append(session_id)
        if len(self._seen_order) > _REMEMBERED:
            self._seen.discard(self._seen_order.popleft())

    def close(self) -> None:
        self._db.close()
