"""Messages that found the store's write lock held, committed by a thread that waits for it.

Why: with ``--workers N`` the workers share one database, whose write lock one
of them holds at a time. SQLite's busy handler waits for it by *sleeping* (1, 2,
5, 10 ms ...): on the event loop, that sleep stalled every session of the
waiting worker (two workers were idle a third of the time and barely faster
than one). ``Store.store_message`` commits on the loop when the lock is free
(one process: always; a thread for every message cost a fifth more CPU per
message, in GIL hand-offs) and hands the message here when it is not. The
messages that queue up meanwhile go into one commit together.

Nothing about durability changes: each message's future is resolved only after
the COMMIT that holds it has returned (``synchronous`` as the store's), so the
``250`` still goes out after the message is stored. A commit that fails is
tried again one message at a time, so one message's error is never another's.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fakemx.batches import with_queued
from fakemx.storefiles import connect

INSERT = ("INSERT INTO messages (session_id, server, received, mail_from, rcpt_tos, size,"
          " content, worker) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
MOST_PER_COMMIT = 64  # a bound on one commit's size (and on the lock's hold)

_Job = tuple[asyncio.AbstractEventLoop, "asyncio.Future[int]", Sequence[Any]]


class GroupCommit:
    """Inserts message rows on its own connection and thread (``submit``)."""

    def __init__(self, path: Path, *, fsync: bool) -> None:
        self._path, self._fsync = path, fsync
        # For what the loop tries at once: a connection that never waits for the write
        # lock (SQLite's busy handler would sleep on the loop, every session with it).
        self.at_once = connect(path, fsync=fsync, timeout=0)
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()

    def submit(self, row: Sequence[Any]) -> asyncio.Future[int]:
        """Queue ``row``: the future (of the running loop) gets its id once the row is
        committed, or the sqlite3.Error that kept it out."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        with self._start_lock:
            if self._thread is None:  # started by the first message: a reading store has none
                self._thread = threading.Thread(target=self._run, name="fakemx-commit",
                                                daemon=True)
                self._thread.start()
            self._jobs.put((loop, future, row))
        return future

    def close(self) -> None:
        """Commit what is queued, then stop the thread."""
        with self._start_lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()
        self.at_once.close()

    def _run(self) -> None:
        db = connect(self._path, fsync=self._fsync)
        try:
            while (job := self._jobs.get()) is not None:
                # Whatever else waits joins this commit.
                jobs, stopping = with_queued(job, self._jobs.get_nowait, MOST_PER_COMMIT)
                self._commit(db, jobs)
                if stopping:
                    return
        finally:
            db.close()

    def _commit(self, db: sqlite3.Connection, jobs: list[_Job]) -> None:
        results: list[int | BaseException]
        try:
            results = list(_insert_all(db, [row for _, _, row in jobs]))
        except sqlite3.Error:
            results = []
            for _, _, row in jobs:  # one at a time: only the rows that fail fail
                try:
                    results.extend(_insert_all(db, [row]))
                except sqlite3.Error as exc:
                    results.append(exc)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[int],
                                                            int | BaseException]]] = {}
        for (loop, future, _), result in zip(jobs, results, strict=True):
            by_loop.setdefault(loop, []).append((future, result))
        for loop, outcomes in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
                loop.call_soon_threadsafe(_resolve, outcomes)


def is_busy(exc: sqlite3.OperationalError) -> bool:
    """Did ``exc`` say another connection holds the write lock?"""
    return exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


def _insert_all(db: sqlite3.Connection, rows: list[Sequence[Any]]) -> list[int]:
    """Insert ``rows`` in one IMMEDIATE transaction; their ids once it is committed."""
    db.execute("BEGIN IMMEDIATE")
    try:
        ids = []
        for row in rows:
            cursor = db.execute(INSERT, row)
            assert cursor.lastrowid is not None
            ids.append(cursor.lastrowid)
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):  # none open: a failed COMMIT may end it
            db.execute("ROLLBACK")
        raise
    return ids


def _resolve(outcomes: list[tuple[asyncio.Future[int], int | BaseException]]) -> None:
    for future, result in outcomes:
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
