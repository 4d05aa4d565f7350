"""The store's files: the state dir and the database, owner-only (they hold mail
and CA keys), and the database's tables (fakemx.store writes and reads them)."""

from __future__ import annotations

import os
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
