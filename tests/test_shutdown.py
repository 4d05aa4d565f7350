"""Graceful shutdown: on SIGTERM fakemx stops accepting, lets a message in flight finish,
answers 421 4.3.2 to idle sessions, stores everything it said 250 to, and exits 0."""

from __future__ import annotations

import signal
import socket
import sqlite3
from pathlib import Path

import pytest
from wire import command, connect, read_reply, serve_process, wait_closed


def test_sigterm_finishes_the_message_in_flight_and_says_421(tmp_path: Path) -> None:
    process, port = serve_process(tmp_path)
    with process:
        with connect("127.0.0.1", port) as idle, connect("127.0.0.1", port) as busy:
            read_reply(idle)
            read_reply(busy)
            for line in ("EHLO relay.example.net", "MAIL FROM:<a@s.example>",
                         "RCPT TO:<b@d.example>", "DATA"):
                command(busy, line)
            busy.sendall(b"Subject: in flight\r\n\r\nfirst half\r\n")
            process.send_signal(signal.SIGTERM)
            # The idle session is told at once ...
            goodbye = wait_closed(idle)
            assert goodbye.how == "fin"
            assert goodbye.data.startswith(b"421 4.3.2 Service shutting down")
            # ... the one sending a message may finish it, gets its 250, then the 421.
            busy.sendall(b"second half\r\n.\r\n")
            end = wait_closed(busy)
            assert end.data.startswith(b"250 2.0.0 OK: queued as 1\r\n421 4.3.2"), end
        assert process.wait(timeout=10) == 0
        with pytest.raises(ConnectionRefusedError):  # no longer accepting
            socket.create_connection(("127.0.0.1", port), timeout=2)
    db = sqlite3.connect(tmp_path / "fakemx.sqlite3")
    (content,) = db.execute("SELECT content FROM messages").fetchone()
    outcomes = sorted(row[0] for row in db.execute("SELECT outcome FROM sessions"))
    db.close()
    assert content == b"Subject: in flight\r\n\r\nfirst half\r\nsecond half\r\n"
    assert outcomes == ["shutdown", "shutdown"]
