"""Core promises (issue #13): what fakemx said it kept, it keeps; state two processes share
is not corrupted; ``wait_for`` means what it says."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from wire import connect, dialogue, read_reply, serve_process, wait_closed

from fakemx import FakeMX, profile_from_data
from fakemx.store import DB_NAME


def test_two_processes_on_one_state_dir_lose_no_session(tmp_path: Path) -> None:
    first, first_port = serve_process(tmp_path)
    second, second_port = serve_process(tmp_path)
    with first, second:
        for port in (first_port, second_port, first_port, second_port):
            assert dialogue("127.0.0.1", port).code("body") == 250
        for process in (first, second):
            process.terminate()
            assert process.wait(timeout=10) == 0
    db = sqlite3.connect(tmp_path / DB_NAME)
    sessions = db.execute("SELECT id, server FROM sessions").fetchall()
    assert len(sessions) == 4, sessions  # before: each process numbered from 1, two survived
    messages = db.execute("SELECT session_id, server FROM messages").fetchall()
    assert len(messages) == 4
    owner = dict(sessions)
    for session_id, server in messages:  # each message points at its own session
        assert owner[session_id] == server


@pytest.mark.parametrize("action", [
    {"reply": {"code": 250, "text": "2.0.0 Ok: queued as FAKE"}},
    {"reply": {"code": 250, "text": "2.0.0 Ok", "close": "fin"}},
    {"stall": {"seconds": 0.01, "then": {"reply": {"code": 250, "text": "2.0.0 Ok"}}}},
])
def test_a_2xx_at_end_of_data_is_always_stored(action: dict[str, object]) -> None:
    profile = profile_from_data({"rules": [{"stage": "end_of_data", **action}]}, "test")
    with FakeMX(profile) as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        for line in (b"EHLO c.example", b"MAIL FROM:<a@x.example>", b"RCPT TO:<b@y.example>",
                     b"DATA"):
            sock.sendall(line + b"\r\n")
            read_reply(sock)
        sock.sendall(b"Subject: kept\r\n\r\nbody\r\n.\r\n")
        assert read_reply(sock).startswith(b"250 2.0.0 Ok")
        mx.wait_for(messages=1)  # before: the client saw 250 and nothing was stored
        assert mx.messages[0].message["Subject"] == "kept"


def test_wait_for_ended_means_the_session_has_its_end() -> None:
    profile = profile_from_data({"rules": [{"stage": "mail", "drop": "fin"}]}, "test")
    with FakeMX(profile) as mx:
        for n in range(1, 51):
            with connect(mx.host, mx.port) as sock:
                read_reply(sock)
                sock.sendall(b"EHLO c.example\r\nMAIL FROM:<a@x.example>\r\n")
                assert wait_closed(sock).how == "fin"
            mx.wait_for(ended=n)
            ended = [s for s in mx.sessions if s.ended is not None]
            assert len(ended) >= n  # before: the outcome was set before the end time
