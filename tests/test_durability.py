"""Nothing accepted is lost: kill -9 fakemx while a client sends, restart, and every
message whose 250 the client saw is in the store, whole; no partial message is visible."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path

from wire import command, connect, dialogue, read_reply, serve_process

from fakemx import FakeMX
from fakemx.store import Store

MESSAGES = 1000


def body(number: int) -> bytes:
    lines = [f"Subject: message {number}", ""] + [f"{number:05d} line {n}" for n in range(40)]
    return ("\r\n".join(lines) + "\r\n").encode()


def sender(port: int, acknowledged: dict[int, int], stop: threading.Event) -> None:
    """Send MESSAGES messages, 50 per connection; note each 250's queue id."""
    number = 0
    try:
        while number < MESSAGES:
            with connect("127.0.0.1", port) as sock:
                read_reply(sock)
                command(sock, "EHLO relay.example.net")
                for _ in range(50):
                    command(sock, "MAIL FROM:<a@s.example>")
                    command(sock, "RCPT TO:<b@d.example>")
                    command(sock, "DATA")
                    sock.sendall(body(number) + b".\r\n")
                    reply = read_reply(sock)
                    found = re.match(rb"250 2\.0\.0 OK: queued as (\d+)", reply)
                    assert found, reply
                    acknowledged[int(found[1])] = number
                    number += 1
    except OSError:
        pass  # the server was killed under us: expected
    finally:
        stop.set()


def test_kill_9_loses_nothing_that_got_250(tmp_path: Path) -> None:
    process, port = serve_process(tmp_path)
    with process:
        acknowledged: dict[int, int] = {}
        stopped = threading.Event()
        client = threading.Thread(target=sender, args=(port, acknowledged, stopped))
        client.start()
        # Kill in the middle of the stream, not at a quiet moment.
        while len(acknowledged) < MESSAGES // 3 and not stopped.is_set():
            stopped.wait(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        client.join(timeout=30)
    assert MESSAGES // 3 <= len(acknowledged) < MESSAGES, "the kill did not land mid-stream"

    # Restart on the same state dir: it serves again, and ids go on after the last one kept.
    with FakeMX(state_dir=tmp_path) as restarted:
        assert dialogue(restarted.host, restarted.port).code("body") == 250
    store = Store(tmp_path)
    try:
        stored = {m.id: m for m in store.messages()}
    finally:
        store.close()
    for queue_id, number in acknowledged.items():
        assert queue_id in stored, f"message {number} got 250 (queued as {queue_id}) but is lost"
        assert stored[queue_id].content == body(number)
    for message in stored.values():  # whatever else is there is whole, never partial
        if message.content.startswith(b"From: alice"):
            continue  # the probe sent after the restart
        number = int(message.content.split(b"\r\n", 1)[0].rsplit(b" ", 1)[1])
        assert message.content == body(number)
