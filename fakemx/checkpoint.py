"""The store's WAL copied into its database file by a thread of its own.

SQLite in WAL mode appends every commit to the ``-wal`` file; a *checkpoint*
copies those pages into the database file and syncs both (``fdatasync``, even
with ``synchronous=NORMAL``). By default the connection that commits runs one
whenever the WAL passes 1,000 pages: for fakemx that was the event loop, every
150 or so messages of 10 kB, each time for tens of milliseconds on a busy disk
(measured: 1.3 s of 12 s serving 3,000 messages, every session waiting). Here
the store's own connection never checkpoints (``wal_autocheckpoint=0``) and this
thread does, on a connection of its own, in PASSIVE mode (it never blocks the
writer; SQLite lets go of the GIL meanwhile).

Nothing about durability changes: a commit is durable once it is in the WAL
(``synchronous=NORMAL`` survives the process being killed; FULL syncs the WAL at
each commit, on the committing thread, as before). A checkpoint only moves pages
already committed; a process killed mid-way leaves a WAL that the next opening
of the database replays.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

# SQLite's own autocheckpoint is 1,000 pages of 4 kB: about as many bytes committed.
CHECKPOINT_BYTES = 4 * 2**20


class Checkpointer:
    """Checkpoints ``path`` once ``wrote`` has counted ``CHECKPOINT_BYTES`` since the last."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._since = 0  # bytes committed since the last wake-up (counted on the writer's thread)
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def wrote(self, size: int) -> None:
        """The writer committed about ``size`` bytes (a message, a batch of sessions)."""
        self._since += size
        if self._since < CHECKPOINT_BYTES:
            return
        self._since = 0
        if self._thread is None:  # started by the first writes: a reading store has none
            self._thread = threading.Thread(target=self._run, name="fakemx-checkpoint",
                                            daemon=True)
            self._thread.start()
        self._wake.set()

    def close(self) -> None:
        """Stop the thread (the last connection to close checkpoints whatever is left)."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=5000")
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                with contextlib.suppress(sqlite3.Error):  # e.g. a full disk: the WAL keeps it
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            db.close()
