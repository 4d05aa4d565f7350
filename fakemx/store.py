"""The durable store: one SQLite database in WAL mode under the state dir.

Why SQLite: a message insert and commit costs tens of microseconds where a file
create + fsync + rename per message costs about half a millisecond, and the
HTTP API and web page can query sessions and messages with SQL. WAL lets
readers (another process, the API) read while the server writes.

Durability: every message is committed before its ``250`` is sent. With
``synchronous=NORMAL`` (the default) a commit survives the fakemx process being
killed; ``fsync=True`` (``synchronous=FULL``) also survives power loss, at the
cost of an fsync per commit. Checkpoints, which copy the WAL into the database
file, run in a thread of their own (fakemx.checkpoint), never at a commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from fakemx.checkpoint import Checkpointer
from fakemx.clientbytes import from_db, to_db
from fakemx.groupcommit import INSERT, GroupCommit, is_busy
from fakemx.journal import MessageBody, Session, StoredMessage
from fakemx.mailbox import HEAD_BYTES, MessageInfo, MessageQuery, contains, subject_of
from fakemx.mailbox import export_messages as export_messages
from fakemx.sharedstate import SHARED_DB_NAME, SharedState, add_worker_columns
from fakemx.storefiles import DB_NAME as DB_NAME
from fakemx.storefiles import SCHEMA, connect, owner_only_file
from fakemx.storefiles import ensure_state_dir as ensure_state_dir

SESSION_FLUSH_SECONDS = 0.2
SESSION_BATCH = 200
SESSION_RETRY_SECONDS = 0.02  # after finding the write lock held by another process

# Session ids are handed out from the store in blocks, so processes sharing a
# state dir (two `fakemx serve`, or workers) never number two sessions alike,
# at one small commit per block rather than one per connection.
SESSION_ID_BLOCK = 100
AGE_CHECK_SECONDS = 60.0  # how often --keep-days is applied while serving


class Store:
    """Writes happen on the server's loop thread; the lock makes reads from other threads safe."""

    def __init__(self, state_dir: Path, *, fsync: bool = False) -> None:
        self.path = ensure_state_dir(state_dir) / DB_NAME
        self._lock = threading.Lock()
        owner_only_file(self.path)
        self._db = connect(self.path, fsync=fsync)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._checkpointer = Checkpointer(self.path)
        self._group = GroupCommit(self.path, fsync=fsync)  # store_message's, and the loop's
        self._db.executescript(SCHEMA)
        add_worker_columns(self._db)  # a store from before --workers has none
        # With `--workers N`: the slot writing through this store (worker 0 reads the
        # others' rows by it) and the counters its servers share; None for one process.
        self.worker: int | None = None
        self.shared: SharedState | None = None
        self._pending_sessions: list[tuple[Any, ...]] = []
        self._flush_timer: asyncio.TimerHandle | None = None
        # A store from before the counters table: carry on after its newest session.
        self._db.execute("INSERT OR IGNORE INTO counters (name, next)"
                         " SELECT 'session', coalesce(max(id), 0) + 1 FROM sessions")
        self._next_session_id = self._block_end = 0
        self._keep_messages: int | None = None
        self._keep_days: float | None = None
        self._count_estimate = 0  # messages, at least: recounted when over the limit
        self._next_age_check = 0.0

    def share_state(self) -> SharedState:
        """The workers' shared counters (fakemx.sharedstate), in a database beside this one
        (its owner closes it); sessions indexed by their end, for fakemx.workerjournal."""
        path = self.path.with_name(SHARED_DB_NAME)
        owner_only_file(path)
        with self._lock:
            self._db.execute("CREATE INDEX IF NOT EXISTS sessions_ended ON sessions (ended)")
        self.shared = SharedState(path)
        return self.shared

    def new_session_id(self) -> int:
        with self._lock:
            if self._next_session_id >= self._block_end:
                self._next_session_id, self._block_end = self._reserve_session_ids()
            session_id = self._next_session_id
            self._next_session_id += 1
            return session_id

    def _reserve_session_ids(self) -> tuple[int, int]:
        """The next SESSION_ID_BLOCK ids, taken in one write transaction.

        When the store cannot be written (a full disk), sessions still need ids:
        the next block is then counted on from this process's last one.
        """
        try:
            with self._transaction("BEGIN IMMEDIATE"):
                (first,) = self._db.execute(
                    "UPDATE counters SET next = next + ? WHERE name = 'session'"
                    " RETURNING next - ?",
                    (SESSION_ID_BLOCK, SESSION_ID_BLOCK),
                ).fetchone()
        except sqlite3.Error:
            (newest,) = self._db.execute("SELECT coalesce(max(id), 0) FROM sessions").fetchone()
            first = max(self._block_end, newest + 1)
        return int(first), int(first) + SESSION_ID_BLOCK

    def add_message(
        self, session_id: int, server: str, mail_from: str, rcpt_tos: list[str], content: bytes
    ) -> StoredMessage:
        """Insert and commit on this thread (a server's loop uses ``store_message``); returns
        once durable. Sessions are written in batches of their own (``save_session``)."""
        received = time.time()
        row = self._message_row(session_id, server, received, mail_from, rcpt_tos, content)
        with self._lock:
            cursor = self._db.execute(INSERT, row)
        assert cursor.lastrowid is not None
        return self._committed(cursor.lastrowid, session_id, received, mail_from, rcpt_tos,
                               content)

    async def store_message(
        self, session_id: int, server: str, mail_from: str, rcpt_tos: list[str], content: bytes,
        on_stored: Callable[[StoredMessage], None],
    ) -> StoredMessage:
        """``add_message`` that never makes the loop wait for another process: committed
        at once if the write lock is free (one process: always), else in fakemx.groupcommit's
        thread. Returns once committed (the 250 follows); ``on_stored`` gets the message
        then, even if the caller was cancelled meanwhile (a client gone after its dot)."""
        received = time.time()
        row = self._message_row(session_id, server, received, mail_from, rcpt_tos, content)
        try:
            with self._lock:
                cursor = self._group.at_once.execute(INSERT, row)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise
        else:
            assert cursor.lastrowid is not None
            message = self._committed(cursor.lastrowid, session_id, received, mail_from,
                                      rcpt_tos, content)
            on_stored(message)
            return message
        committed = self._group.submit(row)
        stored: list[StoredMessage] = []

        def journal(done: asyncio.Future[int]) -> None:  # on the loop, before the caller resumes
            if done.exception() is None:
                stored.append(self._committed(done.result(), session_id, received, mail_from,
                                              rcpt_tos, content))
                on_stored(stored[0])

        committed.add_done_callback(journal)
        await asyncio.shield(committed)
        return stored[0]

    def _message_row(self, session_id: int, server: str, received: float, mail_from: str,
                     rcpt_tos: list[str], content: bytes) -> tuple[Any, ...]:
        return (session_id, server, received, to_db(mail_from), json.dumps(rcpt_tos),
                len(content), content, self.worker)

    def _committed(self, message_id: int, session_id: int, received: float, mail_from: str,
                   rcpt_tos: list[str], content: bytes) -> StoredMessage:
        with self._lock:
            self._count_estimate += 1
            self._checkpointer.wrote(len(content))
            if self._keep_messages is not None or self._keep_days is not None:
                with contextlib.suppress(sqlite3.Error):  # never at the cost of the 250
                    self._retain_locked(received)
        return StoredMessage(message_id, session_id, received, mail_from, tuple(rcpt_tos),
                             MessageBody(content, self.content_of))

    def content_of(self, message_id: int) -> bytes:
        """One stored message's bytes (the journal reads old bodies back from here)."""
        try:
            with self._lock:
                row = self._db.execute(
                    "SELECT content FROM messages WHERE id = ?", (message_id,)
                ).fetchone()
        except sqlite3.ProgrammingError:  # closed
            raise LookupError(
                f"message {message_id}: its body is no longer in memory and the store at"
                f" {self.path} is closed (give FakeMX a state_dir= to read it after stop)"
            ) from None
        if row is None:
            raise LookupError(f"message {message_id} is not in the store at {self.path}")
        content: bytes = row[0]
        return content

    def save_session(self, session: Session) -> None:
        """Queue a finished session; written within SESSION_FLUSH_SECONDS.

        Sessions are the journal, not accepted mail: batching them saves a commit
        per connection, and the live journal in memory has them at once.
        """
        # Client text (HELO, commands) may hold undecodable bytes as surrogates:
        # the HELO column takes them as a BLOB, JSON escapes them as \udcXX; both
        # read back to the same str.
        events = [event.as_dict() for event in session.events]  # as_dict() has them so
        row = (session.id, session.server, session.profile, session.client_ip,
               session.client_port, session.attempt, session.started, session.ended,
               str(session.outcome), str(session.stage), session.ended_by,
               to_db(session.helo), session.tls, json.dumps(events), self.worker)
        with self._lock:
            self._pending_sessions.append(row)
            queued = len(self._pending_sessions)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on an event loop: write now
            self.flush()
            return
        if queued >= SESSION_BATCH:
            self._flush_from_loop()
        elif self._flush_timer is None:
            self._flush_timer = loop.call_later(SESSION_FLUSH_SECONDS, self._flush_from_loop)

    def _flush_from_loop(self) -> None:
        """``flush`` on the loop, never waiting for the write lock (SQLite would sleep
        there): held by another process, the sessions are tried again shortly."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        with self._lock:
            try:
                self._flush_locked(self._group.at_once)
            except sqlite3.OperationalError as exc:
                if not is_busy(exc):
                    raise
                self._flush_timer = asyncio.get_running_loop().call_later(
                    SESSION_RETRY_SECONDS, self._flush_from_loop)

    def flush(self) -> None:
        """Write the queued sessions now."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        with self._lock:
            self._flush_locked()

    def _flush_locked(self, db: sqlite3.Connection | None = None) -> None:
        if self._pending_sessions:
            db = db or self._db
            with self._transaction(db=db):
                db.executemany(
                    "INSERT OR REPLACE INTO sessions (id, server, profile, client_ip,"
                    " client_port, attempt, started, ended, outcome, stage, ended_by, helo,"
                    " tls, events, worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    self._pending_sessions)
            self._checkpointer.wrote(sum(len(row[13]) for row in self._pending_sessions))
            self._pending_sessions.clear()

    @contextlib.contextmanager
    def _transaction(self, begin: str = "BEGIN", *,
                     db: sqlite3.Connection | None = None) -> Iterator[None]:
        db = db or self._db
        db.execute(begin)
        try:
            yield
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def session_rows(self, server: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The newest finished sessions, newest first, as plain dicts (events decoded)."""
        query = ("SELECT id, server, profile, client_ip, client_port, attempt, started, ended,"
                 " outcome, stage, ended_by, helo, tls, events FROM sessions")
        params: tuple[Any, ...] = ()
        if server is not None:
            query += " WHERE server = ?"
            params = (server,)
        with self._lock:
            self._flush_locked()  # a reader sees every session that has ended
            cursor = self._db.execute(query + " ORDER BY id DESC LIMIT ?", (*params, limit))
            names = [column[0] for column in cursor.description]
            rows = cursor.fetchall()
        records = [dict(zip(names, row, strict=True)) for row in rows]
        for record in records:
            record["helo"] = from_db(record["helo"])
            record["events"] = json.loads(record["events"])
        return records

    def messages(self, server: str | None = None) -> Iterator[StoredMessage]:
        """Every stored message, oldest first, read a page at a time (bodies included)."""
        query = ("SELECT id, session_id, received, mail_from, rcpt_tos, content FROM messages"
                 " WHERE id > ?")
        if server is not None:
            query += " AND server = ?"
        last = 0
        while True:
            params: tuple[Any, ...] = (last,) if server is None else (last, server)
            with self._lock:
                rows = self._db.execute(query + " ORDER BY id LIMIT 100", params).fetchall()
            if not rows:
                return
            for row in rows:
                yield StoredMessage(row[0], row[1], row[2], from_db(row[3]) or "",
                                    tuple(json.loads(row[4])), MessageBody(row[5]))
            last = rows[-1][0]

    # region search, delete, retention ---------------------------------------------

    def find_messages(self, query: MessageQuery | None = None, *,
                      after: int = 0) -> Iterator[MessageInfo]:
        """The stored messages ``query`` matches with an id above ``after``, oldest first (no
        bodies), a page at a time by the primary key (a deep page costs what the first does)."""
        q = query or MessageQuery()
        sql = ("SELECT m.id, m.session_id, m.server, m.received, m.mail_from, m.rcpt_tos,"
               " m.size, substr(m.content, 1, ?), s.client_ip, s.helo FROM messages m"
               " LEFT JOIN sessions s ON s.id = m.session_id WHERE m.id > ?")
        params: list[Any] = []
        for column, op, value in (("m.received", ">=", q.since), ("m.received", "<", q.until),
                                  ("m.server", "=", q.server),
                                  ("m.session_id", "=", q.session_id)):
            if value is not None:
                sql += f" AND {column} {op} ?"
                params.append(value)
        last = after
        while True:
            with self._lock:
                self._flush_locked()  # the sessions of the messages, for their client
                rows = self._db.execute(sql + " ORDER BY m.id LIMIT 200",
                                        [HEAD_BYTES, last, *params]).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            for row in rows:
                mail_from, rcpt_tos = from_db(row[4]) or "", tuple(json.loads(row[5]))
                if not (contains(mail_from, q.sender)
                        and any(contains(r, q.recipient) for r in rcpt_tos)):
                    continue
                subject = subject_of(row[7])
                if contains(subject, q.subject):
                    yield MessageInfo(row[0], row[1], row[2], row[3], mail_from, rcpt_tos,
                                      row[6], subject, row[8], from_db(row[9]))

    def count_messages(self, *, session_id: int) -> int:
        with self._lock:
            (count,) = self._db.execute(
                "SELECT count(*) FROM messages WHERE session_id = ?", (session_id,)).fetchone()
        return int(count)

    def delete_messages(self, ids: list[int]) -> int:
        """Delete these messages (their sessions stay in the journal); returns how many."""
        deleted = 0
        with self._lock, self._transaction():
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                deleted += self._db.execute(
                    f"DELETE FROM messages WHERE id IN ({','.join('?' * len(chunk))})",
                    chunk).rowcount
        return deleted

    def set_retention(self, keep_messages: int | None, keep_days: float | None) -> int:
        """Keep at most ``keep_messages``, none older than ``keep_days``; applied now and
        after each accepted message. Returns how many were deleted now."""
        self._keep_messages, self._keep_days = keep_messages, keep_days
        with self._lock:
            self._count_estimate = keep_messages + 1 if keep_messages is not None else 0
            self._next_age_check = 0.0
            return self._retain_locked(time.time())

    def _retain_locked(self, now: float) -> int:
        """Cheap per message: a count only at the limit, the age once a minute."""
        deleted = 0
        if self._keep_days is not None and now >= self._next_age_check:
            self._next_age_check = now + AGE_CHECK_SECONDS
            deleted += self._db.execute("DELETE FROM messages WHERE received < ?",
                                        (now - self._keep_days * 86400,)).rowcount
        keep = self._keep_messages
        if keep is not None and self._count_estimate > keep:
            # Counted through the small session index; another process may add or delete.
            (count,) = self._db.execute("SELECT count(*) FROM messages").fetchone()
            if count > keep:
                deleted += self._db.execute(
                    "DELETE FROM messages WHERE id IN"
                    " (SELECT id FROM messages ORDER BY id LIMIT ?)", (count - keep,)).rowcount
            self._count_estimate = min(count, keep)
        return deleted

    # endregion

    def close(self) -> None:
        try:
            self.flush()
        except sqlite3.Error:
            pass  # e.g. a full disk: the journal's last sessions are lost, never mail
        finally:
            self._group.close()
            self._checkpointer.close()
            with self._lock:
                self._db.close()
