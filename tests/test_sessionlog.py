"""The session log: lines made on the loop reach stdout in order, in batches, with
fakemx's own lines after the session lines before them."""

from __future__ import annotations

import smtplib

import pytest

from fakemx import FakeMX
from fakemx.sessionlog import SessionLog


def test_session_lines_are_handed_over_in_order_and_info_lines_keep_their_place(
        capfd: pytest.CaptureFixture[str]) -> None:
    log = SessionLog()
    with FakeMX() as mx:
        mx.journal.subscribe(log)
        for _ in range(30):
            with smtplib.SMTP(mx.host, mx.port, timeout=5) as client:
                client.sendmail("a@sender.example", ["b@dest.example"], b"Subject: x\r\n\r\nx")
        mx.wait_for(ended=30)
        log.info("fakemx: after thirty")
        ids = [session.id for session in mx.sessions]
    log.close()
    lines = capfd.readouterr().out.splitlines()
    assert lines[-1] == "fakemx: after thirty"
    assert [line.split()[2] for line in lines[:-1]] == [str(i) for i in ids]
    assert all(line.endswith("client sent QUIT; 1 message") for line in lines[:-1])
