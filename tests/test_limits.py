"""Limits keep fakemx up: too many sessions, too many from one address, too many commands,
and a slow-loris of 5,000 trickling connections that must not starve a healthy client."""

from __future__ import annotations

import selectors
import signal
import socket
import time
from pathlib import Path

from wire import command, connect, dialogue, read_reply, serve_process, wait_closed

from fakemx import FakeMX, Outcome, profile_from_data


def limited(**limits: int) -> FakeMX:
    return FakeMX(profile_from_data({"limits": limits}, "test"))


def test_too_many_sessions_in_all() -> None:
    with limited(sessions=2) as mx:
        held = [connect(mx.host, mx.port) for _ in range(2)]
        for sock in held:
            assert read_reply(sock).startswith(b"220")
        with connect(mx.host, mx.port) as third:
            closed = wait_closed(third)
        assert closed.how == "fin"
        assert closed.data == b"421 4.3.2 Too many sessions, try again later\r\n"
        for sock in held:
            sock.close()
        mx.wait_for(ended=3)
        refused = next(s for s in mx.sessions if s.outcome is Outcome.CLOSED_AFTER_REPLY)
        notes = [e.text for e in refused.events]
        assert "limit: 421 4.3.2 Too many sessions, try again later" in notes
        assert dialogue(mx.host, mx.port).code("body") == 250  # room again


def test_too_many_sessions_from_one_address() -> None:
    with limited(sessions_per_client=1) as mx, connect(mx.host, mx.port) as first:
        assert read_reply(first).startswith(b"220")
        second = dialogue(mx.host, mx.port)
        assert second.text("greeting") == (
            "421 4.7.0 Too many sessions from 127.0.0.1, try again later\r\n"
        )
        assert dialogue(mx.host, mx.port, source="127.0.0.2").code("body") == 250


def test_too_many_commands_in_one_session() -> None:
    with limited(commands_per_session=3) as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        for _ in range(3):
            assert command(sock, "NOOP").startswith(b"250")
        sock.sendall(b"NOOP\r\n")
        closed = wait_closed(sock)
        assert closed.data == b"421 4.7.0 Too many commands in one session, closing connection\r\n"
        assert closed.how == "fin"


def greeted_all(sockets: list[socket.socket], timeout: float = 60) -> None:
    """Wait until every socket has its 220 (poll, no fixed sleep)."""
    pending = selectors.DefaultSelector()
    for sock in sockets:
        pending.register(sock, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while pending.get_map():
        assert time.monotonic() < deadline, f"{len(pending.get_map())} never greeted"
        for key, _ in pending.select(timeout=1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            assert sock.recv(4096).startswith(b"220")
            pending.unregister(sock)
    pending.close()


def test_slow_loris_does_not_starve_a_healthy_client(tmp_path: Path) -> None:
    """5,000 connections that trickle a byte at a time; a new client is still greeted."""
    server, port = serve_process(tmp_path)
    with server:
        loris: list[socket.socket] = []
        try:
            t0 = time.perf_counter()
            for n in range(5000):  # from ten addresses: 1,000 per address is the default cap
                sock = socket.create_connection(("127.0.0.1", port),
                                                source_address=(f"127.0.0.{2 + n % 10}", 0))
                sock.setblocking(False)
                loris.append(sock)
            greeted_all(loris)  # fakemx holds them all: now the slow-loris starts
            print(f"5,000 connected and greeted in {time.perf_counter() - t0:.1f} s")
            waits = []
            for byte in b"EHLO slowly":  # trickle: one byte to every connection per round
                for sock in loris:
                    sock.send(bytes([byte]))
                started = time.perf_counter()
                with socket.create_connection(("127.0.0.1", port), timeout=10) as healthy:
                    assert healthy.recv(3) == b"220"
                waits.append(time.perf_counter() - started)
            # Greeted every time, and promptly; the figure goes in the closing note.
            print(f"healthy client greeted after {max(waits) * 1000:.1f} ms at worst")
            assert max(waits) < 2.0
            assert dialogue("127.0.0.1", port).code("body") == 250
        finally:
            t1 = time.perf_counter()
            for sock in loris:
                sock.close()
            server.send_signal(signal.SIGTERM)
            assert server.wait(timeout=60) == 0
            print(f"stopped in {time.perf_counter() - t1:.1f} s")
