"""Live updates for the web page: server-sent events fed by ``Journal.subscribe``.

Each page holds one ``GET /api/events`` stream. A session that starts or ends
is sent as ``event: session`` with ``{"kind": "started"|"ended", "session":
{...}}``; a change made through the API (profile, rules, listener, reset) as
``event: server`` with the server's new state. SSE rather than a websocket:
the page only listens, and EventSource reconnects by itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from fakemx.api.views import StudentMode, session_out
from fakemx.journal import Session
from fakemx.server import FakeMX

log = logging.getLogger(__name__)

# A page that stops reading (a tab in the background, a dead connection) must
# not make fakemx buffer without end. Each stream holds at most this many
# events, and this many bytes of them, waiting to be sent; one event more and
# the stream is cut off: what it holds is freed, it ends as soon as its
# connection moves again, and EventSource reconnects and reloads.
MAX_QUEUED_EVENTS = 256
MAX_QUEUED_BYTES = 1024 * 1024
# A comment line this often keeps proxies and browsers from closing an idle stream.
_KEEPALIVE_SECONDS = 15.0
_RETRY_MILLISECONDS = 2000


def _frame(event: str, data: dict[str, Any]) -> str:
    # ensure_ascii (json's default): a frame's length is its size in bytes
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class _Subscriber:
    """One open stream's frames waiting to be sent, bounded in number and in bytes.

    ``hiding``: a student's stream, which gets the student's view of each event.
    """

    def __init__(self, hiding: StudentMode | None = None) -> None:
        self.hiding = hiding
        self.frames: deque[str] = deque()
        self.bytes = 0
        self.ended = False
        self._ready = asyncio.Event()

    def offer(self, frame: str) -> bool:
        """Queue ``frame``; False when that would pass a bound (the reader is behind).

        A frame bigger than the byte bound still goes to a reader that has
        nothing waiting, so a big session reaches a page that keeps up.
        """
        if self.frames and (len(self.frames) >= MAX_QUEUED_EVENTS
                            or self.bytes + len(frame) > MAX_QUEUED_BYTES):
            return False
        self.frames.append(frame)
        self.bytes += len(frame)
        self._ready.set()
        return True

    def end(self) -> None:
        """Free what waits and end the stream at its next read."""
        self.frames.clear()
        self.bytes = 0
        self.ended = True
        self._ready.set()

    async def next(self) -> str | None:
        """The next frame, waiting for one; None once the stream has ended."""
        while not self.frames and not self.ended:
            self._ready.clear()
            await self._ready.wait()
        if self.ended:
            return None
        frame = self.frames.popleft()
        self.bytes -= len(frame)
        return frame


class EventHub:
    """Fans journal and control events out to every open event stream."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._streams: set[_Subscriber] = set()
        self._closed = False
        self._peak_events = 0
        self._peak_bytes = 0
        self._dropped = 0

    # Read-only figures, for tests and for anyone asking how the streams fare.

    @property
    def subscribers(self) -> int:
        """Open event streams that still receive events."""
        return len(self._streams)

    @property
    def peak_queued_events(self) -> int:
        """The most events one stream ever had waiting (at most ``MAX_QUEUED_EVENTS``)."""
        return self._peak_events

    @property
    def peak_queued_bytes(self) -> int:
        """The most bytes one stream ever had waiting (about ``MAX_QUEUED_BYTES``)."""
        return self._peak_bytes

    @property
    def dropped(self) -> int:
        """Streams cut off because their reader fell behind."""
        return self._dropped

    def watch(self, servers: Iterable[FakeMX]) -> None:
        for mx in servers:
            mx.journal.subscribe(self._on_session)

    def _on_session(self, kind: str, session: Session) -> None:
        # Called inside the SMTP server's connection handling: a failure here
        # must not break the session, so it is logged and the event skipped.
        if self._closed or not self._streams:
            return  # nobody listens: do not build the frame
        try:
            frame = _frame("session", {"kind": kind,
                                       "session": session_out(session).model_dump(mode="json")})
            hidden = frame
            if any(s.hiding is not None and s.hiding.hides(session.server)
                   for s in self._streams):
                hidden = _frame("session", {"kind": kind, "session": session_out(
                    session, hide_profile=True).model_dump(mode="json")})
        except Exception:
            log.exception("fakemx: could not publish a session event")
            return
        self._publish(frame, hidden, session.server)

    def server_changed(self, info: dict[str, Any],
                       student_info: dict[str, Any] | None = None) -> None:
        """A server's new state; ``student_info``: what a student's stream gets instead."""
        full = _frame("server", info)
        self._publish(full, full if student_info is None else _frame("server", student_info))

    def _publish(self, frame: str, student_frame: str | None = None,
                 server: str | None = None) -> None:
        """``frame`` to every stream; a student's stream gets ``student_frame`` instead
        (for a session of ``server``: only while that case is hidden)."""
        if self._closed:
            return

        def pick(stream: _Subscriber) -> str:
            if student_frame is None or stream.hiding is None:
                return frame
            if server is not None and not stream.hiding.hides(server):
                return frame
            return student_frame

        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._deliver(pick)
        else:  # a server run on another loop (FakeMX in a thread): hop over
            self._loop.call_soon_threadsafe(self._deliver, pick)

    def _deliver(self, pick: Callable[[_Subscriber], str]) -> None:
        for stream in list(self._streams):
            if stream.offer(pick(stream)):
                self._peak_events = max(self._peak_events, len(stream.frames))
                self._peak_bytes = max(self._peak_bytes, stream.bytes)
                continue
            self._streams.discard(stream)
            stream.end()
            self._dropped += 1
            log.info("fakemx: an event stream fell %d events behind and was cut off",
                     MAX_QUEUED_EVENTS)

    async def stream(self, hiding: StudentMode | None = None) -> AsyncIterator[str]:
        """One client's event stream, until it leaves, falls behind or the hub closes
        (``hiding``: a student's, shown what students may see)."""
        stream = _Subscriber(hiding)
        if self._closed:
            stream.end()
        else:
            self._streams.add(stream)
        try:
            yield f"retry: {_RETRY_MILLISECONDS}\n: fakemx events\n\n"
            while True:
                try:
                    async with asyncio.timeout(_KEEPALIVE_SECONDS):
                        frame = await stream.next()
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if frame is None:
                    return
                yield frame
        finally:
            self._streams.discard(stream)

    def close(self) -> None:
        """End every stream, so the HTTP server can shut down without waiting on them."""
        self._closed = True
        for stream in list(self._streams):
            stream.end()
        self._streams.clear()
