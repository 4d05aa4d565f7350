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
from collections.abc import AsyncIterator, Iterable
from typing import Any

from fakemx.api_views import session_out
from fakemx.journal import Session
from fakemx.server import FakeMX

log = logging.getLogger(__name__)

# A page that stops reading (a tab in the background, a dead connection) must
# not make fakemx buffer without end: past this many events it is cut off, and
# EventSource reconnects and reloads.
_QUEUE_EVENTS = 1000
# A comment line this often keeps proxies and browsers from closing an idle stream.
_KEEPALIVE_SECONDS = 15.0
_RETRY_MILLISECONDS = 2000


def _frame(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


class EventHub:
    """Fans journal and control events out to every open event stream."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._streams: set[asyncio.Queue[str | None]] = set()
        self._closed = False

    def watch(self, servers: Iterable[FakeMX]) -> None:
        for mx in servers:
            mx.journal.subscribe(self._on_session)

    def _on_session(self, kind: str, session: Session) -> None:
        # Called inside the SMTP server's connection handling: a failure here
        # must not break the session, so it is logged and the event skipped.
        try:
            frame = _frame("session", {"kind": kind,
                                       "session": session_out(session).model_dump(mode="json")})
        except Exception:
            log.exception("fakemx: could not publish a session event")
            return
        self._publish(frame)

    def server_changed(self, info: dict[str, Any]) -> None:
        self._publish(_frame("server", info))

    def _publish(self, frame: str) -> None:
        if self._closed:
            return
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._deliver(frame)
        else:  # a server run on another loop (FakeMX in a thread): hop over
            self._loop.call_soon_threadsafe(self._deliver, frame)

    def _deliver(self, frame: str) -> None:
        for queue in list(self._streams):
            try:
                queue.put_nowait(frame)
            except asyncio.QueueFull:
                self._streams.discard(queue)
                queue.get_nowait()  # make room for the end marker
                queue.put_nowait(None)

    async def stream(self) -> AsyncIterator[str]:
        """One client's event stream, until it leaves or the hub closes."""
        queue: asyncio.Queue[str | None] = asyncio.Queue(_QUEUE_EVENTS)
        self._streams.add(queue)
        try:
            yield f"retry: {_RETRY_MILLISECONDS}\n: fakemx events\n\n"
            while not self._closed:
                try:
                    frame = await asyncio.wait_for(queue.get(), _KEEPALIVE_SECONDS)
                except TimeoutError:
                    yield ": keepalive\n\n"
                    continue
                if frame is None:
                    return
                yield frame
        finally:
            self._streams.discard(queue)

    def close(self) -> None:
        """End every stream, so the HTTP server can shut down without waiting on them."""
        self._closed = True
        for queue in list(self._streams):
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(None)
        self._streams.clear()
