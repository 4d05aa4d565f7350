"""The HTTP API against hostile or careless clients, over real sockets only.

- A page that stops reading its event stream is cut off once it is a bounded
  number of events (or bytes) behind; a page that reads keeps every event.
- Client bytes that are not UTF-8 never make a view answer 500.
- fakemx's OCSP responder answers every request it cannot use with an OCSP
  error or an HTTP 400, never a traceback and a closed connection.
"""

from __future__ import annotations

import asyncio
import json
import smtplib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from wire import read_reply

from fakemx import FakeMX
from fakemx.api_events import MAX_QUEUED_BYTES, MAX_QUEUED_EVENTS, EventHub
from fakemx.api_server import ApiServer

TIMEOUT_SECONDS = 10.0


@dataclass
class Api:
    mx: FakeMX
    url: str
    port: int
    hub: EventHub


@contextmanager
def api_over_sink(state_dir: Path) -> Iterator[Api]:
    """The default sink and its API on one loop in a thread, as ``fakemx serve --api`` runs."""
    ready = threading.Event()
    box: dict[str, object] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        box["stop"], box["loop"] = stop, asyncio.get_running_loop()
        try:
            async with FakeMX(state_dir=state_dir) as mx, ApiServer([mx], port=0) as api:
                assert api.events is not None
                box["api"] = Api(mx, api.url, api.address.port, api.events)
                ready.set()
                await stop.wait()
        finally:
            ready.set()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), name="hardening-api")
    thread.start()
    assert ready.wait(TIMEOUT_SECONDS)
    api = box.get("api")
    assert isinstance(api, Api), "fakemx with its API did not start"
    try:
        yield api
    finally:
        loop, stop = box["loop"], box["stop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        assert isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        thread.join(TIMEOUT_SECONDS)
        assert not thread.is_alive()
        api.mx.check()


def poll(condition: object, what: str, timeout: float = 60.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


# region the event stream -------------------------------------------------------------


@contextmanager
def stuck_reader(api: Api) -> Iterator[socket.socket]:
    """An HTTP client that opens /api/events, reads the first chunk and then stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill up soon
    sock.settimeout(TIMEOUT_SECONDS)
    sock.connect(("127.0.0.1", api.port))
    sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{api.port}\r\n\r\n".encode())
    head = b""
    while b"retry:" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    with sock:
        yield sock


class Reader(threading.Thread):
    """A page that keeps reading: collects the ids of ended sessions until ``last_helo``."""

    def __init__(self, api: Api, last_helo: str) -> None:
        super().__init__(name="event-reader")
        self.url = api.url
        self.last_helo = last_helo
        self.ended: list[int] = []
        self.opened = threading.Event()
        self.finished = False

    def run(self) -> None:
        with httpx.Client(timeout=TIMEOUT_SECONDS * 6) as http, \
                http.stream("GET", f"{self.url}/api/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("retry:"):
                    self.opened.set()
                if not line.startswith("data: "):
                    continue
                data = json.loads(line.removeprefix("data: "))
                if data["kind"] != "ended":
                    continue
                self.ended.append(data["session"]["id"])
                if data["session"]["helo"] == self.last_helo:
                    self.finished = True
                    return


def smtp_session(mx: FakeMX, helo: str = "client.example") -> None:
    with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT_SECONDS) as client:
        client.ehlo(helo)
        client.sendmail("alice@example.test", ["bob@example.test"], "Subject: hi\r\n\r\nhi\r\n")


def chatty_session(mx: FakeMX, commands: int) -> None:
    """One session of ``commands`` pipelined NOOPs: a big session, a big event."""
    with socket.create_connection((mx.host, mx.port), timeout=TIMEOUT_SECONDS) as sock:
        file = sock.makefile("rb")
        assert read_reply(sock).startswith(b"220")
        sock.sendall(b"EHLO chatty.example\r\n" + b"NOOP\r\n" * commands + b"QUIT\r\n")
        while file.readline():  # every reply, until fakemx closes after 221
            pass


def drain_until_end(sock: socket.socket) -> bytes:
    """Read the stuck stream now: it must end (the last chunk of a chunked body)."""
    received = b""
    while not received.endswith(b"\r\n0\r\n\r\n"):
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the stream ended"
        received += chunk
    return received


def test_a_page_that_stops_reading_is_cut_off_and_a_reading_page_gets_everything(
    tmp_path: Path,
) -> None:
    with api_over_sink(tmp_path) as api:
        reader = Reader(api, last_helo="last.example")
        reader.start()
        assert reader.opened.wait(TIMEOUT_SECONDS)
        with stuck_reader(api) as stuck:
            poll(lambda: api.hub.subscribers == 2, "both streams to subscribe")
            sent = 0
            while api.hub.dropped == 0:  # the stuck page falls behind
                assert sent < 5000, "the stuck stream was never cut off"
                smtp_session(api.mx)
                sent += 1
                assert api.hub.peak_queued_events <= MAX_QUEUED_EVENTS
            assert api.hub.subscribers == 1  # only the reading page is left
            # Cut off is final: more sessions do not queue for it again.
            for _ in range(3):
                smtp_session(api.mx)
            smtp_session(api.mx, helo="last.example")
            reader.join(TIMEOUT_SECONDS * 6)
            assert reader.finished
            # The reading page got every session, in order, none lost to the stuck one.
            assert reader.ended == sorted(s.id for s in api.mx.sessions)
            assert len(reader.ended) == sent + 4
            # The stuck page's stream ends as soon as it reads again (and reconnects).
            assert drain_until_end(stuck).count(b"event: session") < 2 * sent
        poll(lambda: api.hub.subscribers == 0, "every stream to end")
        assert api.hub.peak_queued_events <= MAX_QUEUED_EVENTS
        # A page opened now gets events: fresh state, nothing held from before.
        late = Reader(api, last_helo="late.example")
        late.start()
        assert late.opened.wait(TIMEOUT_SECONDS)
        smtp_session(api.mx, helo="late.example")
        late.join(TIMEOUT_SECONDS)
        assert late.finished
        assert late.ended == [max(s.id for s in api.mx.sessions)]


def test_big_sessions_are_bounded_in_bytes(tmp_path: Path) -> None:
    """Sessions of thousands of events: a stuck page holds about a megabyte, not gigabytes."""
    with api_over_sink(tmp_path) as api, stuck_reader(api):
        poll(lambda: api.hub.subscribers == 1, "the stream to subscribe")
        sessions = 0
        while api.hub.dropped == 0:
            assert sessions < 500, "the stuck stream was never cut off"
            chatty_session(api.mx, commands=500)
            sessions += 1
        api.mx.wait_for(ended=sessions)
        biggest = max(len(json.dumps(s.as_dict())) for s in api.mx.sessions)
        assert biggest > 20_000  # big events, so the byte bound is what cut it off
        assert api.hub.peak_queued_bytes <= MAX_QUEUED_BYTES + biggest
        assert api.hub.peak_queued_events < MAX_QUEUED_EVENTS
        assert api.hub.subscribers == 0


# endregion
