"""The Python API against real sockets: sync clients (smtplib) on a threaded server,
async clients (aiosmtplib) on the caller's loop.

Every client call has a timeout; waits go through ``wait_for``/``await_for``, never sleeps.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
import sqlite3
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest

from fakemx import (
    FakeMX,
    ListenerState,
    Outcome,
    ProfileError,
    Rule,
    ServerSideError,
    Stage,
    UnknownProfileError,
    UnknownRuleError,
)

TIMEOUT = 5.0
SENDER = "alice@sender.example"
RECIPIENT = "bob@dest.example"


@pytest.fixture
def mx() -> Iterator[FakeMX]:
    with FakeMX() as server:
        yield server


def client(mx: FakeMX) -> smtplib.SMTP:
    smtp = smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT)
    smtp.ehlo("relay.example.net")
    return smtp


def rcpt_code(mx: FakeMX, recipient: str = RECIPIENT) -> int:
    """One session up to RCPT: the code RCPT gets (the positive control is 250)."""
    with client(mx) as smtp:
        smtp.mail(SENDER)
        return smtp.rcpt(recipient)[0]


def mail(subject: str = "hello") -> EmailMessage:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = SENDER, RECIPIENT, subject
    message.set_content("The body.\n")
    return message


# region lifecycle and observation (sync) ------------------------------------------


def test_port_zero_gives_each_server_its_own_free_port() -> None:
    with FakeMX() as one, FakeMX() as two:
        assert one.port != two.port
        assert 0 not in (one.port, two.port)
        assert one.address == f"127.0.0.1:{one.port}"


def test_messages_are_parsed_with_their_envelope(mx: FakeMX) -> None:
    with client(mx) as smtp:
        smtp.send_message(mail("first"), from_addr=SENDER, to_addrs=[RECIPIENT, "carol@x.example"])
    mx.wait_for(messages=1, ended=1, timeout=TIMEOUT)
    [stored] = mx.messages
    assert stored.mail_from == SENDER
    assert stored.rcpt_tos == (RECIPIENT, "carol@x.example")
    assert isinstance(stored.message, EmailMessage)
    assert stored.message["Subject"] == "first"
    assert stored.message.get_content().splitlines() == ["The body."]


def test_sessions_record_client_attempt_events_and_how_they_ended(mx: FakeMX) -> None:
    for _ in range(2):
        with client(mx) as smtp:
            smtp.noop()
    mx.wait_for(ended=2, timeout=TIMEOUT)
    first, second = mx.sessions
    assert (first.attempt, second.attempt) == (1, 2)
    assert first.client_ip == "127.0.0.1"
    assert first.outcome is Outcome.QUIT
    assert first.ended_by == "client sent QUIT"
    assert first.helo == "relay.example.net"
    assert "NOOP" in first.commands
    assert first.replies[0].startswith("220 ")


def test_wait_for_returns_at_once_when_it_holds_and_raises_when_it_cannot(mx: FakeMX) -> None:
    mx.wait_for(sessions=0, messages=0, timeout=TIMEOUT)
    with pytest.raises(TimeoutError, match=r"still 0 sessions \(0 ended\), 0 messages"):
        mx.wait_for(messages=1, timeout=0.05)


def test_ca_is_available_as_file_and_pem(mx: FakeMX) -> None:
    assert mx.ca_path.read_bytes() == mx.ca_pem
    assert mx.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")


# endregion
# region run-time control (sync) ----------------------------------------------------


def test_added_rule_applies_from_the_next_connection_only(mx: FakeMX) -> None:
    with client(mx) as open_before:
        mx.add_rule(stage="rcpt", reply={"code": 451, "text": "4.7.1 Try later"})
        open_before.mail(SENDER)
        assert open_before.rcpt(RECIPIENT)[0] == 250  # its profile snapshot predates the rule
    assert rcpt_code(mx) == 451


def test_rules_are_validated_like_profile_files_and_a_bad_one_changes_nothing(
    mx: FakeMX,
) -> None:
    before = mx.profile
    with pytest.raises(ProfileError) as caught:
        mx.add_rule({"stage": "rcpt", "reply": {"code": 42}})
    assert str(caught.value) == (
        "mx.add_rule(): reply.code: 42 is not an SMTP reply code (use 200-599)"
    )
    with pytest.raises(ProfileError, match="exactly one action"):
        mx.add_rule(stage="rcpt", drop="fin", reply={"code": 550})
    assert mx.profile is before
    assert rcpt_code(mx) == 250


def test_rule_objects_and_dicts_are_both_accepted(mx: FakeMX) -> None:
    mx.add_rule(Rule(stage=Stage.MAIL, name="no-mail", reply={"code": 550, "text": "5.7.1 No"}))
    mx.add_rule({"stage": "rcpt", "name": "no-rcpt", "reply": {"code": 450}})
    assert [rule.label for rule in mx.profile.rules] == ["no-rcpt", "no-mail"]


def test_remove_rule_by_name_and_unknown_names_are_one_line_errors(mx: FakeMX) -> None:
    mx.add_rule(stage="rcpt", reply={"code": 451}, name="grey")
    assert rcpt_code(mx) == 451
    [removed] = mx.remove_rule("grey")
    assert removed.name == "grey"
    assert rcpt_code(mx) == 250
    mx.add_rule(stage="mail", drop="rst")
    with pytest.raises(UnknownRuleError) as caught:
        mx.remove_rule("grey")
    assert str(caught.value) == "no rule named 'grey' in the running profile (rules: mail-drop)"
    assert mx.remove_rule("mail-drop")  # unnamed rules go by <stage>-<action>


def test_scoped_rule_undoes_itself_even_when_the_block_fails(mx: FakeMX) -> None:
    with mx.rule(stage="rcpt", reply={"code": 550, "text": "5.1.1 No such user"}) as rule:
        assert rule.stage is Stage.RCPT
        assert rcpt_code(mx) == 550
    assert rcpt_code(mx) == 250
    codes: list[int] = []

    def fail_inside() -> None:
        with mx.rule({"stage": "rcpt", "reply": {"code": 452}}):
            codes.append(rcpt_code(mx))
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        fail_inside()
    assert codes == [452]
    assert mx.profile.rules == []


def test_scoped_rules_nest_and_the_newest_is_checked_first(mx: FakeMX) -> None:
    with mx.rule(stage="rcpt", reply={"code": 450}):
        with mx.rule(stage="rcpt", reply={"code": 551}):
            assert rcpt_code(mx) == 551
        assert rcpt_code(mx) == 450


def test_run_time_rules_are_scaled_like_the_profile() -> None:
    with FakeMX(time_scale=0.01) as mx:
        rule = mx.add_rule(stage="mail", stall={"seconds": 300})
        assert rule.stall is not None
        assert rule.stall.seconds == pytest.approx(3.0)


def test_load_switches_profile_from_the_next_connection(mx: FakeMX) -> None:
    mx.load("4.4.317-greeting-421")
    with pytest.raises(smtplib.SMTPConnectError) as caught:
        smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT)
    assert caught.value.smtp_code == 421
    with pytest.raises(UnknownProfileError, match="nearest"):
        mx.load("4.4.317-greeting-42")
    assert mx.profile.name == "4.4.317-greeting-421"
    mx.load(None)  # back to the sink
    assert rcpt_code(mx) == 250


def test_listener_refuse_blackhole_and_open_again(mx: FakeMX) -> None:
    mx.set_listener("refuse")
    assert mx.listener_state is ListenerState.REFUSE
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((mx.host, mx.port), timeout=TIMEOUT)
    mx.set_listener(ListenerState.BLACKHOLE)
    with pytest.raises(TimeoutError):
        socket.create_connection((mx.host, mx.port), timeout=0.2)  # no SYN-ACK ever comes
    mx.set_listener("open")
    assert rcpt_code(mx) == 250


def test_reset_forgets_sessions_messages_and_attempt_counters() -> None:
    with FakeMX("4.4.7-greylist-attempts") as mx:
        assert rcpt_code(mx) == 451
        mx.wait_for(ended=1, timeout=TIMEOUT)
        mx.reset()
        assert mx.sessions == []
        assert mx.messages == []
        assert rcpt_code(mx) == 451  # attempt 1 again, so greylisted again
        mx.wait_for(ended=1, timeout=TIMEOUT)
        assert [s.attempt for s in mx.sessions] == [1]


def test_control_needs_a_running_server() -> None:
    mx = FakeMX()
    with pytest.raises(RuntimeError, match="not running"):
        mx.add_rule(stage="rcpt", reply={"code": 451})


# endregion
# region server-side errors ---------------------------------------------------------


def _break_store(state_dir: Path) -> None:
    """Make the store refuse message writes, as SQLite does on a full disk."""
    db = sqlite3.connect(state_dir / "fakemx.sqlite3")
    db.execute(
        "CREATE TRIGGER full BEFORE INSERT ON messages BEGIN"
        " SELECT RAISE(ABORT, 'database or disk is full'); END"
    )
    db.commit()
    db.close()


def test_a_store_failure_keeps_its_wire_reply_and_is_raised_by_check(tmp_path: Path) -> None:
    with FakeMX(state_dir=tmp_path) as mx:
        mx.check()  # nothing yet
        _break_store(tmp_path)
        with client(mx) as smtp:
            smtp.mail(SENDER)
            smtp.rcpt(RECIPIENT)
            assert smtp.data(b"Subject: x\r\n\r\nx") == (452, b"4.3.1 Insufficient system storage")
        with pytest.raises(ServerSideError) as caught:
            mx.check()
        assert "1 server-side error: session 1 after the final dot: IntegrityError" in str(
            caught.value
        )
        assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
        mx.incidents.clear()  # a test that provokes one on purpose forgets it
        mx.check()


# endregion
# region async use on the caller's loop --------------------------------------------


async def test_async_server_with_an_async_client() -> None:
    async with FakeMX() as mx:
        errors, _ = await aiosmtplib.send(
            mail("async"), hostname=mx.host, port=mx.port, timeout=TIMEOUT, start_tls=False
        )  # TLS has its own tests (tests/test_tls*.py)
        assert errors == {}
        await mx.await_for(messages=1, ended=1, timeout=TIMEOUT)
        assert mx.messages[0].message["Subject"] == "async"


async def test_blocking_verbs_refuse_on_the_servers_own_loop_and_name_the_async_form() -> None:
    async with FakeMX() as mx:
        with pytest.raises(RuntimeError, match=r"use `await mx.aload\(...\)`"):
            mx.load("4.4.317-greeting-421")
        with pytest.raises(RuntimeError, match=r"use `await mx.aset_listener\(...\)`"):
            mx.set_listener("refuse")
        with pytest.raises(RuntimeError, match=r"use `await mx.await_for\(...\)`"):
            mx.wait_for(sessions=1)
        assert mx.profile.name == "sink"  # nothing was half-done


async def test_async_verbs_switch_profile_and_listener() -> None:
    async with FakeMX() as mx:
        await mx.aload("4.4.317-greeting-421")
        smtp = aiosmtplib.SMTP(hostname=mx.host, port=mx.port, timeout=TIMEOUT)
        with pytest.raises(aiosmtplib.SMTPConnectResponseError) as caught:
            await smtp.connect()
        assert caught.value.code == 421
        await mx.aset_listener("refuse")
        with pytest.raises(aiosmtplib.SMTPConnectError):
            await aiosmtplib.SMTP(hostname=mx.host, port=mx.port, timeout=TIMEOUT).connect()
        await mx.aload(None)  # the sink listens again
        assert mx.listener_state is ListenerState.OPEN


async def test_rule_verbs_and_reset_work_on_the_loop_without_await() -> None:
    async with FakeMX() as mx:
        smtp = aiosmtplib.SMTP(hostname=mx.host, port=mx.port, timeout=TIMEOUT, start_tls=False)
        with mx.rule(stage="mail", reply={"code": 451, "text": "4.3.0 Later"}):
            await smtp.connect()
            with pytest.raises(aiosmtplib.SMTPSenderRefused) as caught:
                await smtp.sendmail(SENDER, [RECIPIENT], b"Subject: x\r\n\r\nx")
            assert caught.value.code == 451
            await smtp.quit()
        assert mx.profile.rules == []
        await mx.await_for(ended=1, timeout=TIMEOUT)
        mx.reset()
        assert mx.sessions == []


def test_async_verbs_also_work_from_another_loop_on_a_threaded_server(mx: FakeMX) -> None:
    async def from_a_test_loop() -> None:
        await mx.aload("4.4.7-defer-rcpt")
        await mx.await_for(sessions=0, timeout=TIMEOUT)

    asyncio.run(from_a_test_loop())
    assert rcpt_code(mx) == 450


# endregion
