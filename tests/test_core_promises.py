"""Core promises (issue #13): what fakemx said it kept, it keeps; state two processes share
is not corrupted; ``wait_for`` means what it says."""

from __future__ import annotations

import math
import socket
import sqlite3
from pathlib import Path

import dns.exception
import pytest
from wire import connect, dialogue, read_reply, serve_process, wait_closed

from fakemx import FakeMX, FakeMXError, profile_from_data
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


def _dns_rcode(address: str, name: str = "example.test") -> str:
    import dns.message
    import dns.query
    import dns.rcode

    host, port = address.rsplit(":", 1)
    answer = dns.query.udp(dns.message.make_query(name, "MX"), host, port=int(port), timeout=2)
    return dns.rcode.to_text(answer.rcode())


def test_load_sets_a_profile_up_as_start_does() -> None:
    with FakeMX() as mx:
        assert mx.dns is None
        mx.load("4.4.312-servfail")  # before: no DNS server was started
        assert mx.dns is not None
        address = mx.dns.address
        assert _dns_rcode(address) == "SERVFAIL"
        mx.load("4.4.312-nxdomain")  # another zone, the same address
        assert mx.dns.address == address
        assert _dns_rcode(address) == "NXDOMAIN"
        mx.load("sink")  # before: the old zone kept answering SERVFAIL
        assert mx.dns is None
        with pytest.raises(dns.exception.Timeout):
            _dns_rcode(address)
        assert dialogue(mx.host, mx.port).code("body") == 250


def test_load_applies_the_profiles_seed() -> None:
    profile = profile_from_data({"seed": 7, "rules": [
        {"stage": "mail", "when": {"probability": 0.5},
         "reply": {"code": 451, "text": "4.7.1 later"}},
    ]}, "coin")

    def fates(mx: FakeMX) -> list[int | None]:
        return [dialogue(mx.host, mx.port).code("mail") for _ in range(12)]

    with FakeMX(profile) as fresh:
        expected = fates(fresh)
    with FakeMX() as mx:
        mx.load(profile)  # before: the profile's seed was ignored after a load
        assert fates(mx) == expected
    assert set(expected) == {250, 451}


def test_a_load_that_fails_leaves_the_old_profile_serving() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))  # the DNS port the new profile needs is in use
        busy_port = taken.getsockname()[1]
        refusing_dns = profile_from_data(
            {"listener": "refuse", "dns": {"records": [
                {"name": "example.test", "type": "MX", "value": "10 mx.example.test"}]}},
            "refusing-dns")
        with FakeMX(dns_port=busy_port) as mx:
            with pytest.raises(FakeMXError, match=r"(?i)address already in use"):
                mx.load(refusing_dns)
            # The listener was switched to refuse first; it is open again, and the
            # profile is the old one.
            assert mx.listener_state == "open"
            assert mx.profile.name == "sink"
            assert dialogue(mx.host, mx.port).code("body") == 250


def test_accept_lets_traffic_through_and_shadows_later_rules() -> None:
    profile = profile_from_data({"rules": [
        {"stage": "rcpt", "when": {"recipient": ["vip@*"]}, "accept": True},
        {"stage": "rcpt", "reply": {"code": 550, "text": "5.1.1 No such user"}},
    ]}, "test")
    with FakeMX(profile) as mx:
        assert dialogue(mx.host, mx.port, recipient="vip@dest.example").code("body") == 250
        assert dialogue(mx.host, mx.port, recipient="bob@dest.example").code("rcpt") == 550
        mx.wait_for(messages=1)
        assert mx.messages[0].rcpt_tos == ("vip@dest.example",)


@pytest.mark.parametrize("profile", ["4.7.320-self-signed", "4.7.320-untrusted-ca",
                                     "4.4.317-starttls-not-offered", "sink"])
def test_every_serve_writes_the_ca_relays_are_told_to_trust(tmp_path: Path,
                                                            profile: str) -> None:
    process, _port = serve_process(tmp_path, profile)
    with process:
        assert (tmp_path / "ca.pem").read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
        process.terminate()
        assert process.wait(timeout=10) == 0


def test_ready_means_a_sigterm_now_stops_cleanly(tmp_path: Path) -> None:
    for run in range(10):  # before: 4 of 8 such runs died by the default SIGTERM handler
        process, _port = serve_process(tmp_path / str(run))
        with process:
            process.terminate()  # the moment the ready line is read
            assert process.wait(timeout=10) == 0, run
        db = sqlite3.connect(tmp_path / str(run) / DB_NAME)
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)


@pytest.mark.parametrize(("option", "value"), [("time_scale", 0.0), ("time_scale", math.inf),
                                               ("hostname", "mx\r\n250 injected")])
def test_fakemx_refuses_what_can_never_work_in_one_line(option: str, value: object) -> None:
    with pytest.raises(FakeMXError) as caught:
        FakeMX(**{option: value})  # type: ignore[arg-type]
    assert "\n" not in str(caught.value)
    assert option in str(caught.value)
