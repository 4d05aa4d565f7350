"""Listener states and silence (4.4.315, 4.4.316, 4.4.7): refused, unanswered, ungreeted, slow."""

from __future__ import annotations

import socket
import time

import pytest
from wire import connect, dialogue, read_reply

from fakemx import FakeMX, Outcome, Stage


@pytest.mark.usefixtures("control")
def test_connection_refused_is_rst_on_syn() -> None:
    with FakeMX("4.4.316-connection-refused") as mx:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((mx.host, mx.port), timeout=2)
        assert mx.sessions == []  # nothing was accepted, so nothing to journal
        assert mx.listener_state == "refuse"


@pytest.mark.usefixtures("control")
def test_blackhole_connect_times_out() -> None:
    with FakeMX("4.4.315-connect-timeout") as mx:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            socket.create_connection((mx.host, mx.port), timeout=0.3)
        assert time.monotonic() - started >= 0.3  # the SYN really went unanswered
        assert mx.sessions == []


@pytest.mark.usefixtures("control")
def test_no_greeting_ever() -> None:
    with FakeMX("4.4.315-no-greeting") as mx:
        with connect(mx.host, mx.port) as sock:
            sock.settimeout(0.3)
            with pytest.raises(TimeoutError):  # connected, but the 220 never comes
                sock.recv(1)
            mx.wait_for(sessions=1)
            assert mx.sessions[0].outcome is Outcome.OPEN
        mx.wait_for(ended=1)  # the client gave up and closed
    session = mx.sessions[0]
    assert (session.outcome, session.stage) == (Outcome.CLIENT_CLOSED, Stage.GREETING)
    assert session.replies == []
    assert "stall for ever" in [e.text for e in session.events]


def test_slow_greeting_beats_a_short_client_timeout_but_not_a_patient_one() -> None:
    # 600 s in the profile (longer than Postfix's 300 s); 0.6 s at time_scale 0.001.
    with FakeMX("4.4.7-slow-greeting", time_scale=0.001) as mx:
        with connect(mx.host, mx.port) as impatient:
            impatient.settimeout(0.1)
            with pytest.raises(TimeoutError):
                impatient.recv(1)
        with connect(mx.host, mx.port) as patient:
            started = time.monotonic()
            assert read_reply(patient).startswith(b"220 ")
            assert time.monotonic() - started >= 0.3


def test_slow_reply_to_the_final_dot() -> None:
    with FakeMX("4.4.7-slow-end-of-data", time_scale=0.001) as mx:
        impatient = dialogue(mx.host, mx.port, timeout=0.2)  # the relay's timeout: 0.2 s
        patient = dialogue(mx.host, mx.port, timeout=3)
        mx.wait_for(ended=2)
    assert (impatient.ended_at, impatient.how) == ("body", "timeout")
    assert patient.code("body") == 250
    # The impatient client timed out and left; its message is not stored, the patient one is.
    assert len(mx.messages) == 1


def test_idle_timeout_closes_a_silent_client() -> None:
    with FakeMX(time_scale=0.001) as mx, connect(mx.host, mx.port) as sock:  # 300 s -> 0.3 s
        assert read_reply(sock).startswith(b"220")
        assert sock.recv(1) == b""  # closed by fakemx after 0.3 s of silence
        mx.wait_for(ended=1)
    assert mx.sessions[0].outcome is Outcome.TIMEOUT
