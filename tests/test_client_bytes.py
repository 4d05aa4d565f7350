"""Client bytes are data: bytes that are not UTF-8 are stored and journaled losslessly,
shown escaped, and never turn into an error for this client or anyone else."""

from __future__ import annotations

import smtplib
import socket
import sqlite3
from pathlib import Path

from wire import connect, dialogue, read_reply, serve_process

from fakemx import FakeMX, profile_from_data
from fakemx.store import DB_NAME

BAD_HELO = b"\xff\xfe.example"
BAD_SENDER = b"al\xffce@sender.example"


def raw_transaction(sock: socket.socket, helo: bytes, sender: bytes) -> list[bytes]:
    """EHLO, MAIL, RCPT, DATA, a body and QUIT, sent as the bytes given; every reply."""
    replies = [read_reply(sock)]
    for line in (b"EHLO " + helo, b"MAIL FROM:<" + sender + b">", b"RCPT TO:<bob@dest.example>",
                 b"DATA", b"Subject: raw\r\n\r\nbody\r\n.", b"QUIT"):
        sock.sendall(line + b"\r\n")
        replies.append(read_reply(sock))
    return replies


def test_invalid_utf8_from_one_client_never_fails_the_others(tmp_path: Path) -> None:
    with FakeMX(state_dir=tmp_path) as mx:
        with connect(mx.host, mx.port) as sock:
            replies = raw_transaction(sock, BAD_HELO, BAD_SENDER)
        assert [r[:3] for r in replies] == [b"220", b"250", b"250", b"250", b"354", b"250",
                                            b"221"]
        for n in range(20):  # before the fix every one of these got 500 (UnicodeEncodeError)
            with smtplib.SMTP(mx.host, mx.port) as client:
                client.sendmail("a@x.example", [f"r{n}@dest.example"], b"Subject: ok\r\n\r\nx")
        mx.wait_for(messages=21, ended=21)
        mx.check()  # no server-side error recorded

    db = sqlite3.connect(tmp_path / DB_NAME)
    helos = [row[0] for row in db.execute("SELECT helo FROM sessions ORDER BY id")]
    assert helos[0] == BAD_HELO  # the client's own bytes, kept as they came
    assert len(helos) == 21  # every session written
    senders = [row[0] for row in db.execute("SELECT mail_from FROM messages ORDER BY id")]
    assert senders[0] == BAD_SENDER
    assert senders[1:] == ["a@x.example"] * 20


def test_invalid_utf8_reads_back_losslessly_and_shows_escaped(tmp_path: Path) -> None:
    from fakemx.store import Store

    with FakeMX(state_dir=tmp_path) as mx:
        with connect(mx.host, mx.port) as sock:
            raw_transaction(sock, BAD_HELO, BAD_SENDER)
        mx.wait_for(messages=1, ended=1)
        live = mx.sessions[0]
        assert live.helo is not None
        assert live.helo.encode("utf-8", "surrogateescape") == BAD_HELO
        assert live.shown()["helo"] == "\\xff\\xfe.example"
    store = Store(tmp_path)
    try:
        row = store.session_rows()[0]
        assert row["helo"].encode("utf-8", "surrogateescape") == BAD_HELO
        stored = next(store.messages())
        assert stored.mail_from.encode("utf-8", "surrogateescape") == BAD_SENDER
    finally:
        store.close()


def test_placeholders_with_client_bytes_keep_the_rule_reply() -> None:
    profile = profile_from_data({"rules": [
        {"stage": "mail", "reply": {"code": 451, "text": "4.7.1 {helo} sent {sender}"}},
    ]}, "test")
    with FakeMX(profile) as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        sock.sendall(b"EHLO \xff\x1b[2J.example\r\n")
        assert read_reply(sock).startswith(b"250")
        sock.sendall(b"MAIL FROM:<\xfe@x.example>\r\n")
        reply = read_reply(sock)
        assert reply == b"451 4.7.1 \\xff\\x1b[2J.example sent \\xfe@x.example\r\n"
        mx.check()


def test_a_sigterm_after_invalid_bytes_exits_cleanly(tmp_path: Path) -> None:
    process, port = serve_process(tmp_path)
    with process:
        with connect("127.0.0.1", port) as sock:
            raw_transaction(sock, BAD_HELO, BAD_SENDER)
        assert dialogue("127.0.0.1", port).code("body") == 250
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    db = sqlite3.connect(tmp_path / DB_NAME)
    assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 2
