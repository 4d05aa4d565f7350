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
import re
import smtplib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from tlshelp import served_leaf
from wire import connect, read_reply

from fakemx import FakeMX
from fakemx.api.events import MAX_QUEUED_BYTES, MAX_QUEUED_EVENTS, EventHub
from fakemx.api.server import ApiServer

TIMEOUT_SECONDS = 10.0


@dataclass
class Api:
    mx: FakeMX
    url: str
    port: int
    hub: EventHub
    server: ApiServer


@contextmanager
def api_over_sink(state_dir: Path, **api_options: float) -> Iterator[Api]:
    """The default sink and its API on one loop in a thread, as ``fakemx serve --api`` runs."""
    ready = threading.Event()
    box: dict[str, object] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        box["stop"], box["loop"] = stop, asyncio.get_running_loop()
        try:
            async with FakeMX(state_dir=state_dir) as mx, \
                    ApiServer([mx], port=0, **api_options) as api:
                assert api.events is not None
                box["api"] = Api(mx, api.url, api.address.port, api.events, api)
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
def stuck_reader(port: int) -> Iterator[socket.socket]:
    """An HTTP client that opens /api/events, reads the first chunk and then stops reading."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fill up soon
    sock.settimeout(TIMEOUT_SECONDS)
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET /api/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
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
        with stuck_reader(api.port) as stuck:
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


def how_it_ends(sock: socket.socket) -> str:
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        return "reset"
    return "fin"


def test_a_reader_that_never_reads_again_loses_its_connection(tmp_path: Path) -> None:
    # The hub bounds what waits for a slow page, but only the kernel can end a
    # connection whose reader keeps its window shut: TCP_USER_TIMEOUT on the API's
    # sockets does. Before, the connection (and its descriptor) stayed for as long
    # as the reader liked.
    with api_over_sink(tmp_path, stalled_reader_seconds=1.0) as api, \
            stuck_reader(api.port) as stuck:
        poll(lambda: api.hub.subscribers == 1, "the stream to subscribe")
        sent = 0
        while api.server.connections:  # sessions fill its window; then the kernel ends it
            assert sent < 5000, "the stalled connection was never ended"
            smtp_session(api.mx)
            sent += 1
        poll(lambda: api.hub.subscribers == 0, "the stream to end with its connection")
        assert how_it_ends(stuck) == "reset"  # what the reader finds when it comes back


def test_big_sessions_are_bounded_in_bytes(tmp_path: Path) -> None:
    """Sessions of thousands of events: a stuck page holds about a megabyte, not gigabytes."""
    with api_over_sink(tmp_path) as api, stuck_reader(api.port):
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


# region the OCSP responder -----------------------------------------------------------


def raw_http(port: int, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` as it is; the status line and body of the answer (one per connection)."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_SECONDS) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body


def post_ocsp(port: int, body: bytes) -> tuple[bytes, bytes]:
    return raw_http(port, b"POST /ocsp HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: application/ocsp-request\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (len(body), body))


def ocsp_status(body: bytes) -> ocsp.OCSPResponseStatus:
    return ocsp.load_der_ocsp_response(body).response_status


SHA256_OID = bytes.fromhex("0609608648016503040201")  # 2.16.840.1.101.3.4.2.1, DER


@contextmanager
def revoked_server() -> Iterator[tuple[FakeMX, int, bytes]]:
    """The revoked-certificate profile, its OCSP port and a good SHA-256 request (DER)."""
    with FakeMX("4.7.320-revoked") as mx:
        assert mx.revocation is not None
        leaf = served_leaf(mx)
        issuer = x509.load_pem_x509_certificate(mx.ca_pem)
        request = (ocsp.OCSPRequestBuilder().add_certificate(leaf, issuer, hashes.SHA256())
                   .add_extension(x509.OCSPNonce(b"\x01" * 16), critical=False).build())
        yield mx, mx.revocation.port, request.public_bytes(serialization.Encoding.DER)


def test_ocsp_answers_an_unknown_hash_algorithm_with_an_ocsp_error() -> None:
    with revoked_server() as (mx, port, good):
        status, body = post_ocsp(port, good)  # the positive control: same request, SHA-256
        assert status == b"HTTP/1.1 200 OK"
        assert ocsp_status(body) is ocsp.OCSPResponseStatus.SUCCESSFUL
        assert good.count(SHA256_OID) == 1
        # cryptography builds only SHA-1/SHA-2 CertIDs: change the hash OID's last arc
        # to SHA3-256 (...2.8) and to one no one assigned (...2.99).
        for last_arc in (0x08, 0x63):
            unusual = good.replace(SHA256_OID, SHA256_OID[:-1] + bytes([last_arc]))
            status, body = post_ocsp(port, unusual)
            assert status == b"HTTP/1.1 200 OK", last_arc
            assert ocsp_status(body) is ocsp.OCSPResponseStatus.UNAUTHORIZED
    mx.check()  # nothing failed inside fakemx


def test_ocsp_and_crl_answer_garbage_with_an_error_not_a_traceback() -> None:
    with revoked_server() as (mx, port, good):
        malformed = ocsp.OCSPResponseStatus.MALFORMED_REQUEST
        for body in (b"", b"garbage", b"\x30\x03\x02\x01\x00", good[: len(good) // 2],
                     good + b"\x00trailing"):
            status, answer = post_ocsp(port, body)
            assert status == b"HTTP/1.1 200 OK", body
            assert ocsp_status(answer) is malformed, body
        # RFC 6960 A.1: GET with the request base64 in the path.
        status, answer = raw_http(port, b"GET /ocsp/%%%%%%%% HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == b"HTTP/1.1 400 Bad Request" or ocsp_status(answer) is malformed
        for request in (b"NONSENSE\r\n\r\n",
                        b"POST /ocsp HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
                        b"POST /ocsp HTTP/1.1\r\nContent-Length: lots\r\n\r\n"):
            status, _ = raw_http(port, request)
            assert status == b"HTTP/1.1 400 Bad Request", request
        # A client that gives up before its body is complete.
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_SECONDS) as sock:
            sock.sendall(b"POST /ocsp HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort")
            sock.shutdown(socket.SHUT_WR)
            assert sock.recv(100).startswith(b"HTTP/1.1 400 Bad Request")
        # Still answering: the good request after all that.
        status, answer = post_ocsp(port, good)
        assert ocsp_status(answer) is ocsp.OCSPResponseStatus.SUCCESSFUL
    mx.check()


# endregion


# region profiles through the API -----------------------------------------------------


def greeting(mx: FakeMX) -> bytes:
    """What fakemx sends before its answer to QUIT: the greeting, however many lines."""
    with socket.create_connection((mx.host, mx.port), timeout=TIMEOUT_SECONDS) as sock:
        sock.sendall(b"QUIT\r\n")
        received = b""
        while chunk := sock.recv(4096):
            received += chunk
    before_quit, _, _ = received.rpartition(b"221 ")
    return before_quit


def test_a_banner_cannot_add_reply_lines(tmp_path: Path) -> None:
    with api_over_sink(tmp_path) as api, httpx.Client(base_url=api.url, timeout=5) as http:
        rules = f"/api/servers/{api.mx.name}/rules"
        # Positive control: a one-line banner is taken and shown as it is.
        added = http.post(rules, json={"stage": "greeting", "mask_banner": "*****"})
        assert added.status_code == 201, added.text
        assert greeting(api.mx) == b"220 *****\r\n"
        http.delete(f"{rules}/greeting-mask_banner").raise_for_status()
        for banner in ("*****\r\n250 injected", "*****\n554 injected", "a\rb"):
            refused = http.post(rules, json={"stage": "greeting", "mask_banner": banner})
            assert refused.status_code == 422, banner
            assert "must be one line" in refused.json()["error"]
        assert http.get(rules).json() == []
        assert greeting(api.mx).startswith(b"220 mx.fakemx.test ESMTP")


def test_numbers_that_are_not_limits_are_refused(tmp_path: Path) -> None:
    with api_over_sink(tmp_path) as api, httpx.Client(base_url=api.url, timeout=5) as http:
        profile = f"/api/servers/{api.mx.name}/profile"
        zero = http.put(profile, json={"profile": {"max_message_size": 0}})
        assert zero.status_code == 422
        assert "0 is not a size" in zero.json()["error"]
        # JSON has no inf or nan, but Python's parser (and so the API's) reads these.
        for body in (b'{"profile": {"idle_timeout_seconds": Infinity}}',
                     b'{"profile": {"rules": [{"stage": "mail", "stall": {"seconds": NaN}}]}}'):
            refused = http.put(profile, content=body,
                               headers={"content-type": "application/json"})
            assert refused.status_code == 422, body
        assert http.get(profile).json()["max_message_size"] == 33_554_432
        assert http.get("/api/servers").status_code == 200  # still valid JSON to show


# endregion


# region client bytes that are not UTF-8 ----------------------------------------------

HOSTILE_HELO = b"\xff\xfe.example\x1b[2J"
HOSTILE_SENDER = b"\xff@x.example"
HOSTILE_RECIPIENT = b"b\xfe@example.test"
HOSTILE_MESSAGE = (b"Subject: caf\xe9 \xff\x1b]0;owned\x07\r\nX-Raw: \xfe\r\n"
                   b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
                   b"body \xff line\r\nsecond line\r\n")


def hostile_transaction(mx: FakeMX) -> None:
    """A whole transaction whose HELO, addresses and message are not UTF-8 (a raw socket)."""
    with socket.create_connection((mx.host, mx.port), timeout=TIMEOUT_SECONDS) as sock:
        file = sock.makefile("rb")

        def command(line: bytes) -> bytes:
            sock.sendall(line + b"\r\n")
            reply = file.readline()
            while reply[3:4] == b"-":
                reply = file.readline()
            return reply

        assert file.readline().startswith(b"220")
        assert command(b"EHLO " + HOSTILE_HELO).startswith(b"250")
        assert command(b"MAIL FROM:<" + HOSTILE_SENDER + b">").startswith(b"250")
        assert command(b"RCPT TO:<" + HOSTILE_RECIPIENT + b">").startswith(b"250")
        assert command(b"DATA").startswith(b"354")
        assert command(HOSTILE_MESSAGE + b".").startswith(b"250")
        assert command(b"QUIT").startswith(b"221")


def test_client_bytes_that_are_not_utf8_never_fail_a_view(tmp_path: Path) -> None:
    with api_over_sink(tmp_path) as api, httpx.Client(base_url=api.url, timeout=5) as http:
        page = Reader(api, last_helo=r"\xff\xfe.example\x1b[2J")
        page.start()
        assert page.opened.wait(TIMEOUT_SECONDS)
        hostile_transaction(api.mx)
        api.mx.wait_for(ended=1, messages=1)
        page.join(TIMEOUT_SECONDS)
        assert page.finished  # the live event carried the session, escaped

        sessions = http.get("/api/sessions")
        assert sessions.status_code == 200, sessions.text
        [listed] = sessions.json()["items"]
        session = http.get(f"/api/sessions/{listed['id']}").json()
        assert session == listed
        assert session["helo"] == r"\xff\xfe.example\x1b[2J"
        texts = [event["text"] for event in session["events"]]
        assert r"EHLO \xff\xfe.example\x1b[2J" in texts
        assert r"MAIL FROM:<\xff@x.example>" in texts

        messages = http.get("/api/messages")
        assert messages.status_code == 200, messages.text
        [summary] = messages.json()["items"]
        assert summary["mail_from"] == r"\xff@x.example"
        assert summary["rcpt_tos"] == [r"b\xfe@example.test"]
        message = http.get(f"/api/messages/{summary['id']}")
        assert message.status_code == 200, message.text
        body = message.json()
        assert "\x1b" not in body["subject"]
        assert body["subject"].endswith(r"\x1b]0;owned\x07")
        assert body["text"].startswith("body ")
        assert body["text"].endswith("line\r\nsecond line\r\n")  # a body keeps its lines
        # The raw message is the client's bytes, unchanged.
        raw = http.get(f"/api/messages/{summary['id']}/raw")
        assert raw.content.endswith(HOSTILE_MESSAGE)


# endregion


def test_a_stop_with_a_stalled_event_stream_is_quick_and_quiet(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "fakemx", "serve", "--port", "0", "--api", "0",
         "--state-dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with process:
        assert process.stdout is not None
        ports: dict[str, int] = {}
        while len(ports) < 2:
            line = process.stdout.readline()
            assert line, "fakemx serve --api printed no ready lines"
            if found := re.search(r"(serving|API on)\D+127\.0\.0\.1:(\d+)", line):
                ports[found[1]] = int(found[2])
        with stuck_reader(ports["API on"]):
            for _ in range(12):  # big sessions: the stalled stream's buffers fill at once
                with connect("127.0.0.1", ports["serving"]) as burst:
                    burst.sendall(b"EHLO burst.example\r\nMAIL FROM:<a@b.example>\r\n" + b"".join(
                        b"RCPT TO:<r%d@d.example>\r\n" % n for n in range(5000)) + b"QUIT\r\n")
                    while burst.recv(65536):
                        pass
            process.terminate()
            _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert stderr == ""  # before: a traceback per stalled stream, after the grace ran out
