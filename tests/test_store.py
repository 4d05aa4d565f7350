"""The durable store: a message is committed before its 250, and can be exported."""

from __future__ import annotations

import smtplib
import socket
import sqlite3
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wire import command, connect, read_reply, until

from fakemx import FakeMX
from fakemx.checkpoint import CHECKPOINT_BYTES
from fakemx.store import Store, export_messages


def test_message_is_durable_before_the_250_arrives(tmp_path: Path) -> None:
    with FakeMX(state_dir=tmp_path) as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        for line in ("EHLO relay.example.net", "MAIL FROM:<a@sender.example>",
                     "RCPT TO:<b@dest.example>", "DATA"):
            command(sock, line)
        reply = command(sock, "Subject: durable\r\n\r\nbody\r\n.")
        assert reply.startswith(b"250 2.0.0 OK: queued as 1")
        # Another connection to the database (another process could do the same)
        # already sees the committed message the moment the 250 is read.
        reader = sqlite3.connect(tmp_path / "fakemx.sqlite3")
        row = reader.execute("SELECT mail_from, content FROM messages WHERE id = 1").fetchone()
        reader.close()
    assert row == ("a@sender.example", b"Subject: durable\r\n\r\nbody\r\n")


def test_the_wal_is_copied_into_the_database_while_serving(tmp_path: Path) -> None:
    # The checkpoints run in the store's own thread (fakemx/checkpoint.py), not at a
    # commit on the event loop: the database file grows while the server runs.
    database = tmp_path / "fakemx.sqlite3"
    body = b"Subject: big\r\n\r\n" + b"x" * 900 + b"\r\n"
    with FakeMX(state_dir=tmp_path) as mx, smtplib.SMTP(mx.host, mx.port, timeout=10) as c:
        for _ in range(6):
            c.sendmail("a@sender.example", ["b@dest.example"], body * 1000)
        assert len(body) * 1000 * 6 > CHECKPOINT_BYTES
        until(lambda: database.stat().st_size > CHECKPOINT_BYTES)
        reader = sqlite3.connect(database)
        assert reader.execute("SELECT count(*), sum(size) FROM messages").fetchone() == (
            6, 6 * len(body) * 1000)
        reader.close()


def test_sessions_are_journaled_with_commands_and_replies(tmp_path: Path) -> None:
    with FakeMX(state_dir=tmp_path) as mx:
        with smtplib.SMTP(mx.host, mx.port, timeout=5) as client:
            client.sendmail("a@sender.example", ["b@dest.example"], b"Subject: j\r\n\r\nx")
        mx.wait_for(ended=1)
    session = mx.sessions[0]
    assert session.commands[0] == f"EHLO {session.helo}"
    assert session.commands[1:4] == [
        "MAIL FROM:<a@sender.example> size=15", "RCPT TO:<b@dest.example>", "DATA"
    ]
    assert session.replies[0] == "220 mx.fakemx.test ESMTP fakemx"
    assert session.attempt == 1
    assert session.ended_by == "client sent QUIT"
    reader = sqlite3.connect(tmp_path / "fakemx.sqlite3")
    (outcome, events) = reader.execute("SELECT outcome, events FROM sessions").fetchone()
    assert outcome == "quit"
    assert "RCPT TO:<b@dest.example>" in events


def test_state_survives_a_restart_and_ids_keep_counting(tmp_path: Path) -> None:
    for expected_id in (1, 2):
        with FakeMX(state_dir=tmp_path) as mx, smtplib.SMTP(mx.host, mx.port, timeout=5) as c:
            c.ehlo("relay.example.net")
            c.mail("a@sender.example")
            c.rcpt("b@dest.example")
            _code, text = c.data(b"Subject: again\r\n\r\nx")
            assert text == f"2.0.0 OK: queued as {expected_id}".encode()
    assert (tmp_path.stat().st_mode & 0o777) == 0o700  # mail and keys: owner only


def test_export_eml_and_maildir(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with FakeMX(state_dir=state) as mx, smtplib.SMTP(mx.host, mx.port, timeout=5) as c:
        c.sendmail("a@sender.example", ["b@dest.example"], b"Subject: one\r\n\r\n1")
        c.sendmail("a@sender.example", ["b@dest.example"], b"Subject: two\r\n\r\n2")
    store = Store(state)
    try:
        assert export_messages(store, tmp_path / "eml") == 2
        assert export_messages(store, tmp_path / "md", "maildir") == 2
    finally:
        store.close()
    assert (tmp_path / "eml" / "2.eml").read_bytes() == b"Subject: two\r\n\r\n2\r\n"
    assert len(list((tmp_path / "md" / "new").iterdir())) == 2
    assert list((tmp_path / "md" / "tmp").iterdir()) == []


def test_full_disk_answers_452_and_keeps_the_session(tmp_path: Path) -> None:
    with FakeMX(state_dir=tmp_path) as mx, smtplib.SMTP(mx.host, mx.port, timeout=5) as c:
        c.ehlo("relay.example.net")
        # Make the store refuse writes with the error SQLite gives on a full disk.
        mx_db = sqlite3.connect(tmp_path / "fakemx.sqlite3")
        mx_db.execute(
            "CREATE TRIGGER full BEFORE INSERT ON messages BEGIN"
            " SELECT RAISE(ABORT, 'database or disk is full'); END"
        )
        mx_db.commit()
        mx_db.close()
        c.mail("a@sender.example")
        c.rcpt("b@dest.example")
        assert c.data(b"Subject: x\r\n\r\nx") == (452, b"4.3.1 Insufficient system storage")
        assert c.noop()[0] == 250  # the session goes on


def test_find_messages_pages_on_from_an_id(tmp_path: Path) -> None:
    with FakeMX(state_dir=tmp_path) as mx, smtplib.SMTP(mx.host, mx.port) as client:
        for number in range(5):
            client.sendmail("a@example.test", ["b@example.test"], f"Subject: m{number}\r\n\r\n")
    store = Store(tmp_path)
    try:
        everything = [info.id for info in store.find_messages()]
        assert len(everything) == 5
        assert [info.id for info in store.find_messages(after=everything[2])] == everything[3:]
        assert [info.subject for info in store.find_messages(after=everything[3])] == ["m4"]
    finally:
        store.close()


@contextmanager
def write_lock_held(mx: FakeMX, state_dir: Path) -> Iterator[None]:
    """The store's write lock held, as another worker's commit holds it. A session
    first: it reserves the store's next block of session ids (one write per 100
    sessions, which does wait for the lock)."""
    with smtplib.SMTP(mx.host, mx.port, timeout=20) as first:
        assert first.noop()[0] == 250
    holder = sqlite3.connect(state_dir / "fakemx.sqlite3", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def send_body(sock: socket.socket, subject: str) -> None:
    read_reply(sock)
    for line in ("EHLO relay.example.net", "MAIL FROM:<a@sender.example>",
                 "RCPT TO:<b@dest.example>", "DATA"):
        command(sock, line)
    sock.sendall(f"Subject: {subject}\r\n\r\nbody\r\n.\r\n".encode())


def body_read(mx: FakeMX, sessions: int) -> None:
    """Until the server has read the body of ``sessions`` sessions (and so tried to
    store each), and its loop has since answered another client."""
    until(lambda: sum(any(e.text.startswith("body:") for e in s.events)
                      for s in mx.sessions) >= sessions)
    with smtplib.SMTP(mx.host, mx.port, timeout=20) as other:
        assert other.noop()[0] == 250


def test_a_held_write_lock_delays_the_250_and_stalls_no_other_session(tmp_path: Path) -> None:
    # SQLite waits for a held write lock by sleeping: on the event loop that stalled
    # every session (and after 5 s the message got a 452). The message waits in
    # fakemx/groupcommit.py's thread instead, and its 250 comes once it is committed.
    with FakeMX(state_dir=tmp_path) as mx, connect(mx.host, mx.port) as sock:
        with write_lock_held(mx, tmp_path):
            send_body(sock, "held")
            body_read(mx, 1)  # answered while the message waits for the lock
        assert read_reply(sock).startswith(b"250 2.0.0 OK: queued as ")
        with sqlite3.connect(tmp_path / "fakemx.sqlite3") as db:
            assert db.execute("SELECT count(*) FROM messages").fetchone() == (1,)


def test_a_message_whose_client_left_after_the_final_dot_is_journaled_if_stored(
        tmp_path: Path) -> None:
    # The client resets while its message waits for the write lock: the session ends
    # first, the commit after. What the store committed, the journal (the API,
    # FakeMX.messages) lists too, in its session.
    with FakeMX(state_dir=tmp_path) as mx:
        with write_lock_held(mx, tmp_path):
            for n in range(5):
                with connect(mx.host, mx.port) as sock:
                    send_body(sock, f"gone {n}")
                    body_read(mx, n + 1)
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
            mx.wait_for(ended=11)  # the 5 that left, and the 6 NOOPs

        def stored() -> set[int]:
            with sqlite3.connect(tmp_path / "fakemx.sqlite3") as db:
                return {row[0] for row in db.execute("SELECT id FROM messages")}

        until(lambda: len(stored()) == 5)
        until(lambda: {m.id for m in mx.messages} == stored())
        assert sorted(i for s in mx.sessions for i in s.message_ids) == sorted(stored())


def test_messages_sent_side_by_side_are_each_stored_under_the_id_of_their_250(
        tmp_path: Path) -> None:
    # Messages that find the write lock held share a commit (fakemx/groupcommit.py):
    # each 250 still names the row that holds that message.
    replies: dict[bytes, bytes] = {}

    def send(sender: int) -> None:
        with smtplib.SMTP(mx.host, mx.port, timeout=20) as c:
            c.ehlo("relay.example.net")
            for n in range(5):
                body = f"Subject: {sender}-{n}\r\n\r\nfrom {sender}, message {n}\r\n".encode()
                c.mail("a@sender.example")
                c.rcpt("b@dest.example")
                code, text = c.data(body)
                assert code == 250
                replies[body] = text

    with FakeMX(state_dir=tmp_path) as mx:
        threads = [threading.Thread(target=send, args=(i,)) for i in range(10)]
        with write_lock_held(mx, tmp_path):
            for thread in threads:
                thread.start()
            body_read(mx, 10)  # each client's first message waits for the lock
        for thread in threads:
            thread.join()
    assert len(replies) == 50
    with sqlite3.connect(tmp_path / "fakemx.sqlite3") as db:
        for body, text in replies.items():
            message_id = int(text.decode().rsplit(" ", 1)[1])
            (content,) = db.execute("SELECT content FROM messages WHERE id = ?",
                                    (message_id,)).fetchone()
            assert content == body
