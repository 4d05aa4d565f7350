"""The store's files: the state dir and the database, owner-only (they hold mail
and CA keys), and the database's tables (fakemx.store writes and reads them)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

DB_NAME = "fakemx.sqlite3"

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id INTEGER PRIMARY KEY,
    server TEXT NOT NULL,
    profile TEXT NOT NULL,
    client_ip TEXT NOT NULL,
    client_port INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    outcome TEXT NOT NULL,
    stage TEXT NOT NULL,
    ended_by TEXT NOT NULL,
    helo TEXT,
    tls TEXT,
    events TEXT NOT NULL,
    worker INTEGER
);
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL,
    server TEXT NOT NULL,
    received REAL NOT NULL,
    mail_from TEXT NOT NULL,
    rcpt_tos TEXT NOT NULL,
    size INTEGER NOT NULL,
    content BLOB NOT NULL,
    worker INTEGER
);
CREATE INDEX IF NOT EXISTS messages_session ON messages(session_id);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    next INTEGER NOT NULL
);
"""


def connect(path: Path, *, fsync: bool, timeout: float = 5.0) -> sqlite3.Connection:
    """A connection to one of the state dir's databases (the store's, the workers'
    shared one), as fakemx writes them: autocommit, used from several threads under
    the caller's lock; ``synchronous`` FULL with ``fsync``, else NORMAL (in WAL mode a
    commit then survives the process being killed, not the machine); and no
    checkpoint at a commit, which would run one (and its fdatasyncs) on the event loop
    every 1,000 pages: fakemx.checkpoint's thread runs them. ``timeout``: how long
    SQLite's busy handler waits for the write lock (by sleeping; 0, not at all). The
    database's creator also sets ``journal_mode=WAL``, which the file keeps."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=timeout)
    db.execute(f"PRAGMA synchronous={'FULL' if fsync else 'NORMAL'}")
    db.execute("PRAGMA wal_autocheckpoint=0")
    return db


def ensure_state_dir(path: Path) -> Path:
    """Create the state dir owner-only (it holds mail and CA keys), or make an
    existing one of ours owner-only."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = path.stat()
    if status.st_uid == os.geteuid() and status.st_mode & 0o077:
        path.chmod(0o700)
    return path


def owner_only_file(path: Path) -> None:
    """Create ``path`` 0600 before SQLite opens it: its WAL and shared-memory files
    take the database file's mode."""
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
