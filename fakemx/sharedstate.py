"""State that outlives a connection, shared by the worker processes of one server.

With ``--workers N`` (N > 1) the kernel spreads connections over N processes
(SO_REUSEPORT), so a greylisted client's retry lands on any of them. For a
profile to behave as with one process, everything ``ServerState`` keeps in
memory for one process lives here instead, in a SQLite database (WAL) of the
state dir: each client's attempt count and first-seen time, the counts and rate
windows of the rule language, and each rule's ``times``/``after`` uses.

It is a database of its own (``fakemx-shared.sqlite3``), not the store's: a
write lock is per database, and the store's is held for each commit of
messages and of finished sessions. A connection's ``arrive`` on the event loop
that found it held waited in SQLite's busy handler, which sleeps a millisecond
or more each time (measured: one connection in five, with two workers), every
session of that worker stalled meanwhile. Here it waits only for the other
workers' equally short counter updates, and not by sleeping: the workers take
turns through a flock of a file beside the database, which wakes the next one as
soon as it is free (a worker's loop slept 221-232 times per 4,000 connections in
SQLite's busy handler before, 1-9 times after: bench/results/shared-flock-2026-12-01.txt).

Each change is one short ``BEGIN IMMEDIATE`` transaction, so two workers never
both read "attempt 1" for one client. One process keeps the in-memory path
(fakemx.state, fakemx.counters): this module is used only when N > 1.

Times are ``time.monotonic()`` values: CLOCK_MONOTONIC is one clock for every
process on a machine, so a first-seen time written by one worker is read right
by another. A rule is named by its index in the profile, not ``id(rule)``
(which differs per process).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from fakemx.checkpoint import Checkpointer
from fakemx.counters import CountKey, CountPlan, Event, Scope
from fakemx.storefiles import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS shared_clients (
    server TEXT NOT NULL, client TEXT NOT NULL,
    attempts INTEGER NOT NULL, first_seen REAL NOT NULL,
    PRIMARY KEY (server, client)
);
CREATE TABLE IF NOT EXISTS shared_totals (
    server TEXT NOT NULL, event TEXT NOT NULL, scope TEXT NOT NULL, owner TEXT NOT NULL,
    total INTEGER NOT NULL,
    PRIMARY KEY (server, event, scope, owner)
);
CREATE TABLE IF NOT EXISTS shared_times (
    server TEXT NOT NULL, event TEXT NOT NULL, scope TEXT NOT NULL, owner TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS shared_times_slot ON shared_times (server, event, scope, owner, at);
CREATE TABLE IF NOT EXISTS shared_uses (
    server TEXT NOT NULL, rule INTEGER NOT NULL, client TEXT NOT NULL,
    matched INTEGER NOT NULL, fired INTEGER NOT NULL,
    PRIMARY KEY (server, rule, client)
);
"""
SHARED_DB_NAME = "fakemx-shared.sqlite3"  # beside the store's, in the state dir
PAGE_BYTES = 4096  # about what one change adds to the WAL (for its checkpoints)
_TABLES = ("shared_clients", "shared_totals", "shared_times", "shared_uses")


def add_worker_columns(db: sqlite3.Connection) -> None:
    """Give the store's sessions and messages the column saying which worker wrote a row
    (NULL for one process), in a store from before ``--workers`` too."""
    for table in ("sessions", "messages"):
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if "worker" not in columns:
            with contextlib.suppress(sqlite3.OperationalError):  # another process did
                db.execute(f"ALTER TABLE {table} ADD COLUMN worker INTEGER")


class SharedState:
    """The cross-process counters of the servers on one store; touched on one loop.

    Every method names the server (a lab runs many on one store): its
    ``ServerState.name``.
    """

    def __init__(self, db_path: Path) -> None:
        # Counters, not mail: a commit need not reach the disk (fsync would sync the WAL
        # at every connection).
        self._db = connect(db_path, fsync=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._checkpointer = Checkpointer(db_path)  # the checkpoints connect() leaves out
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # reset() may come from the API's thread
        # The workers take turns at writing here through this file's flock first, so
        # SQLite's write lock is free when they ask for it: SQLite waits for a held one
        # by sleeping (1, 2, 5 ms ...) on the event loop, a flock only until it is free.
        self._turns = os.open(db_path.parent / f"{db_path.name}.lock",
                              os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)

    @contextlib.contextmanager
    def _turn(self) -> Iterator[None]:
        """This process's threads, then the other workers: one writer at a time."""
        with self._lock:
            fcntl.flock(self._turns, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._turns, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short IMMEDIATE transaction: the write lock first, so a read-then-write
        never races another worker's."""
        with self._turn():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._checkpointer.wrote(PAGE_BYTES)

    # region attempts and first-seen times (greylisting) ----------------------------

    def arrive(self, server: str, client: str, now: float) -> tuple[int, float]:
        """Count a connection from ``client``: (attempt number, its first-seen time)."""
        with self._turn():  # one statement: its own transaction, done once fetched whole
            ((attempts, first_seen),) = self._db.execute(
                "INSERT INTO shared_clients (server, client, attempts, first_seen)"
                " VALUES (?, ?, 1, ?) ON CONFLICT (server, client)"
                " DO UPDATE SET attempts = attempts + 1 RETURNING attempts, first_seen",
                (server, client, now)).fetchall()
            self._checkpointer.wrote(PAGE_BYTES)
        return int(attempts), float(first_seen)

    def first_seen(self, server: str, client: str) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT first_seen FROM shared_clients WHERE server = ? AND client = ?",
                (server, client)).fetchone()
        return None if row is None else float(row[0])

    # endregion
    # region counts and rate windows (fakemx.counters) -------------------------------

    def add(self, server: str, event: Event, keys: Iterable[tuple[Scope, str]], now: float,
            counting: CountPlan) -> None:
        """``Tally.add`` across processes: totals, and times where a window wants them."""
        wanted = [(scope, owner) for scope, owner in keys if (event, scope) in counting.wanted]
        if not wanted:
            return  # a sink counts nothing: no transaction at all
        with self._write() as db:
            for scope, owner in wanted:
                slot = (server, str(event), str(scope), owner)
                db.execute("INSERT INTO shared_totals VALUES (?, ?, ?, ?, 1)"
                           " ON CONFLICT DO UPDATE SET total = total + 1", slot)
                keep = counting.windows.get((event, scope))
                if keep is None:
                    continue
                db.execute("INSERT INTO shared_times VALUES (?, ?, ?, ?, ?)", (*slot, now))
                db.execute("DELETE FROM shared_times WHERE server = ? AND event = ?"
                           " AND scope = ? AND owner = ? AND at <= ?", (*slot, now - keep))

    def facts(self, server: str, keys: Iterable[CountKey],
              scope_keys: Mapping[Scope, str | None], now: float) -> dict[CountKey, int]:
        """``Tally.facts`` across processes."""
        found: dict[CountKey, int] = {}
        with self._lock:
            for key in keys:
                event, scope, seconds = key
                owner = scope_keys.get(scope)
                if owner is None:
                    continue
                slot = (server, str(event), str(scope), owner)
                if seconds is None:
                    row = self._db.execute(
                        "SELECT total FROM shared_totals WHERE server = ? AND event = ?"
                        " AND scope = ? AND owner = ?", slot).fetchone()
                else:
                    row = self._db.execute(
                        "SELECT count(*) FROM shared_times WHERE server = ? AND event = ?"
                        " AND scope = ? AND owner = ? AND at > ?",
                        (*slot, now - seconds)).fetchone()
                found[key] = 0 if row is None else int(row[0])
        return found

    # endregion
    # region each rule's times/after uses --------------------------------------------

    def uses(self, server: str, rules: Iterable[int], client: str) -> dict[int, tuple[int, int]]:
        """rule index -> (matched, fired) so far, for the rules with these indexes (a
        per-client rule's own for ``client``, a server-wide rule's under "")."""
        wanted = list(rules)
        if not wanted:
            return {}
        with self._lock:
            rows = self._db.execute(
                "SELECT rule, matched, fired FROM shared_uses WHERE server = ?"
                f" AND client IN ('', ?) AND rule IN ({','.join('?' * len(wanted))})",
                (server, client, *wanted)).fetchall()
        return {int(rule): (int(matched), int(fired)) for rule, matched, fired in rows}

    def used(self, server: str, uses: Iterable[tuple[int, str, bool]]) -> None:
        """Count matches (and the one firing): (rule index, client or "", fired?)."""
        counted = list(uses)
        if not counted:
            return
        with self._write() as db:
            for rule, client, fired in counted:
                db.execute("INSERT INTO shared_uses VALUES (?, ?, ?, 1, ?)"
                           " ON CONFLICT DO UPDATE SET matched = matched + 1,"
                           " fired = fired + excluded.fired",
                           (server, rule, client, int(fired)))

    # endregion

    def reset(self, server: str) -> None:
        """Forget ``server``'s attempts, first-seen times, counts and rule uses."""
        with self._write() as db:
            for table in _TABLES:
                db.execute(f"DELETE FROM {table} WHERE server = ?", (server,))

    def clear_all(self) -> None:
        """Forget everything: a fresh start of the servers on this store (the parent's)."""
        with self._write() as db:
            for table in _TABLES:
                db.execute(f"DELETE FROM {table}")

    def close(self) -> None:
        self._checkpointer.close()
        with self._lock:
            self._db.close()
            os.close(self._turns)
