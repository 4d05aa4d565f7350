"""One line per finished session: who, which profile, where it broke, how it ended.

``fakemx serve`` and ``fakemx lab`` subscribe a ``SessionLog`` to every server's
journal (``Journal.subscribe`` calls it on the loop thread), so stdout reads
(one line)::

    fakemx: session 12 127.0.0.1:53210 helo relay.example profile
    4.4.318-rst-after-mail: fakemx reset (RST) after MAIL; 0 messages

``--log-format json`` prints one JSON object per line instead, for log
collectors; the start-up lines are then objects too (``"event": "info"``).
``fakemx journal --follow`` prints the same lines from the store. What a client
sent (HELO, a reply that quotes it) is escaped with ``clientbytes.shown``: no
client can write a line break or a terminal escape into the log.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fakemx.batches import with_queued
from fakemx.clientbytes import shown, shown_or_none
from fakemx.journal import Event, Outcome, Session
from fakemx.stages import Stage
from fakemx.timeline import BreakKind

if TYPE_CHECKING:
    from fakemx.store import Store

HUMAN, JSON = "human", "json"
FOLLOW_POLL_SECONDS = 0.25
FOLLOW_WINDOW = 200  # sessions read back per poll: more than end between two polls


def record(session: Session, messages: int) -> dict[str, Any]:
    """The JSON form of a finished session: flat, client text escaped."""
    broke = session.first_error
    ended = session.ended if session.ended is not None else time.time()
    return {
        "event": "session",
        "time": datetime.fromtimestamp(ended, UTC).isoformat(timespec="milliseconds"),
        "id": session.id,
        "server": session.server,
        "profile": session.profile,
        "client_ip": session.client_ip,
        "client_port": session.client_port,
        "attempt": session.attempt,
        "helo": shown_or_none(session.helo),
        "tls": session.tls,
        "seconds": round(ended - session.started, 3),
        "outcome": str(session.outcome),
        "stage": str(session.stage),
        "ended_by": session.ended_by,
        "broke_at": None if broke is None else str(broke.stage),
        "broke": None if broke is None else str(broke),
        "messages": messages,
    }


def human(session: Session, messages: int) -> str:
    """``fakemx: session 12 127.0.0.1:53210 profile P: <break>; <end>; N messages``."""
    who = [f"session {session.id}", f"{session.client_ip}:{session.client_port}"]
    if session.helo is not None:
        who.append(f"helo {shown(session.helo)}")
    if session.attempt > 1:
        who.append(f"attempt {session.attempt}")
    who.append(f"profile {session.profile}")
    what = []
    broke = session.first_error
    if broke is not None and broke.kind != BreakKind.DROP:  # a drop is the end itself
        what.append(str(broke))
    what.append(session.ended_by)
    what.append(f"{messages} message{'' if messages == 1 else 's'}")
    return f"fakemx: {' '.join(who)}: {'; '.join(what)}"


def line(session: Session, messages: int, log_format: str = HUMAN) -> str:
    if log_format == JSON:
        return json.dumps(record(session, messages))
    return human(session, messages)


class SessionLog:
    """Prints a line per finished session, and fakemx's own lines, in one format.

    Subscribe it to each server's journal: ``mx.journal.subscribe(log)``. Lines
    go to stdout from a thread of their own, so a reader that stops reading (a
    full pipe) never blocks the event loop: past ``QUEUE_LINES`` waiting lines,
    new ones are counted and dropped, and a line says how many once it writes again.
    Written with ``os.write``, so a thread blocked on a full pipe holds no lock of
    ``sys.stdout`` at exit. ``close()`` writes what is queued (within ``CLOSE_SECONDS``).

    Session lines made on an event loop are handed to that thread every
    ``HANDOVER_SECONDS``, together: one wake-up of the thread per line cost the
    loop a switch of the GIL per session under load. fakemx's own lines (``info``)
    go at once, after the session lines before them.
    """

    QUEUE_LINES = 10_000
    WRITES_JOINED = 64  # queued items sent in one write
    CLOSE_SECONDS = 2.0
    HANDOVER_SECONDS = 0.05

    def __init__(self, log_format: str = HUMAN) -> None:
        self.log_format = log_format
        self._stream = sys.stdout
        self._stream.flush()  # what was printed before comes first
        try:
            self._fd: int | None = self._stream.fileno()
        except (AttributeError, ValueError, io.UnsupportedOperation):  # e.g. captured
            self._fd = None
        # (text, how many lines it holds), or None to stop; at most QUEUE_LINES lines queued
        self._queue: queue.Queue[tuple[str, int] | None] = queue.Queue()
        self._queued = self._dropped = 0
        self._lock = threading.Lock()
        self._pending: list[str] = []  # session lines not handed to the thread yet
        self._handover: asyncio.TimerHandle | None = None
        self._thread = threading.Thread(target=self._write_lines, name="fakemx-log",
                                        daemon=True)
        self._thread.start()

    def __call__(self, kind: str, session: Session) -> None:
        if kind != "ended":
            return
        text = line(session, len(session.message_ids), self.log_format)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop: no timer to hand it over
            self._put(text)
            return
        with self._lock:
            self._pending.append(text)
            if self._handover is None:
                self._handover = loop.call_later(self.HANDOVER_SECONDS, self._hand_over)

    def info(self, text: str) -> None:
        """A line of fakemx's own (ready, where the API is): as it is, or as a JSON object."""
        if self.log_format == JSON:
            text = json.dumps({"event": "info", "message": text})
        self._hand_over()
        self._put(text)

    def close(self) -> None:
        self._hand_over()
        self._queue.put(None)
        self._thread.join(self.CLOSE_SECONDS)

    def _hand_over(self) -> None:
        with self._lock:
            lines, self._pending, self._handover = self._pending, [], None
        if lines:
            self._put("\n".join(lines), len(lines))

    def _put(self, text: str, lines: int = 1) -> None:
        with self._lock:
            if self._queued + lines > self.QUEUE_LINES:
                self._dropped += lines
                return
            self._queued += lines
        self._queue.put((text, lines))

    def _write_lines(self) -> None:
        ending = False
        while not ending and (item := self._queue.get()) is not None:
            # Whatever else is queued goes out in the same write.
            items, ending = with_queued(item, self._queue.get_nowait, self.WRITES_JOINED)
            texts = [text for text, _ in items]
            taken = sum(lines for _, lines in items)
            with self._lock:
                dropped, self._dropped = self._dropped, 0
                self._queued -= taken
            if dropped:
                texts.insert(0, f"fakemx: {dropped} log lines dropped (stdout was not read)")
            try:
                self._write("\n".join(texts) + "\n")
            except (OSError, ValueError):  # stdout closed, its reader gone: serving goes on
                while not ending and self._queue.get() is not None:
                    pass
                return

    def _write(self, text: str) -> None:
        if self._fd is None:
            self._stream.write(text)
            self._stream.flush()
            return
        data = text.encode("utf-8", "backslashreplace")
        while data:
            data = data[os.write(self._fd, data):]


def session_from_row(row: dict[str, Any]) -> Session:
    """A stored session (``Store.session_rows``) back into a ``Session``."""
    return Session(
        id=row["id"], server=row["server"], profile=row["profile"],
        client_ip=row["client_ip"], client_port=row["client_port"], attempt=row["attempt"],
        started=row["started"], ended=row["ended"], outcome=Outcome(row["outcome"]),
        stage=Stage(row["stage"]), helo=row["helo"], tls=row["tls"],
        events=[Event(e["at"], e["kind"], e["text"]) for e in row["events"]],
    )


def follow(
    store: Store,
    write: Callable[[str], None],
    *,
    server: str | None = None,
    last: int = 10,
    log_format: str = HUMAN,
    poll_seconds: float = FOLLOW_POLL_SECONDS,
) -> None:
    """Write the ``last`` finished sessions, then each one as it ends; until interrupted.

    Polls the store (which the serving process writes within
    ``store.SESSION_FLUSH_SECONDS`` of a session's end); never returns.
    """
    seen: set[int] | None = None  # None: the first read
    while True:
        rows = store.session_rows(server=server, limit=FOLLOW_WINDOW)  # newest first
        fresh = rows[:last] if seen is None else [r for r in rows if r["id"] not in seen]
        for row in sorted(fresh, key=lambda r: (r["ended"] or 0.0, r["id"])):
            session = session_from_row(row)
            write(line(session, store.count_messages(session_id=session.id), log_format))
        seen = {row["id"] for row in rows}
        time.sleep(poll_seconds)
