"""What a failing test shows of fakemx (issue #22): the report section, JUnit XML,
marker paths beside the test file, and ``Session.first_error``/``broke_at``.

The report tests run inner pytest sessions through ``pytester`` with real
smtplib clients, as a user's suite would.
"""

from __future__ import annotations

import re
import smtplib
import xml.etree.ElementTree as ET
from pathlib import Path

import plugin_harness
import pytest

from fakemx import FakeMX, Stage
from fakemx.timeline import Break, BreakKind

pytest_plugins = ["pytester"]

TIMEOUT = 5.0
MESSAGE = b"Subject: hi\r\n\r\nhi\r\n"

HELPERS = plugin_harness.HELPERS

# A relay that gets a reset after MAIL FROM: the example. One test fails, one passes.
RESET_AFTER_MAIL = """
@pytest.mark.fakemx(profile="4.4.318-rst-after-mail")
def test_reset(fakemx):
    send(fakemx)


def test_fine(fakemx):
    assert send(fakemx) == {}
"""

SECTION = re.compile(r"^-+ fakemx -+$", re.MULTILINE)


@pytest.fixture(autouse=True)
def _inner_ini(pytester: pytest.Pytester) -> None:
    plugin_harness.inner_ini(pytester)


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    return plugin_harness.run(pytester, HELPERS + source, *args)


def sections(result: pytest.RunResult) -> int:
    return len(SECTION.findall(result.stdout.str()))


# region the report section ----------------------------------------------------


def test_a_failing_test_shows_what_fakemx_saw_and_a_passing_one_does_not(
    pytester: pytest.Pytester,
) -> None:
    result = run(pytester, RESET_AFTER_MAIL)
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*SMTPServerDisconnected*",  # the client's side, as before
        "*- fakemx -*",
        "<FakeMX 4.4.318-rst-after-mail on 127.0.0.1:* listener=open sessions=1>",
        "session 1, attempt 1, 127.0.0.1:*: fakemx reset (RST) after MAIL",
        "* < 220 mx.fakemx.test ESMTP fakemx",
        "* > EHLO *",
        "* < 250-mx.fakemx.test | SIZE * | HELP",  # the EHLO reply on one line
        "* > MAIL FROM:<alice@sender.example> size=*",
        "* · rule mail-drop fires after MAIL  <-- broke here (drop after MAIL)",
        "* · fakemx reset (RST) after MAIL",
    ])
    assert sections(result) == 1  # test_fine passed: no section for it


def test_the_report_lists_stored_messages_and_escapes_what_the_client_sent(
    pytester: pytest.Pytester,
) -> None:
    result = run(pytester, """
def test_delivered_but_wrong(fakemx):
    assert send(fakemx) == {}
    with smtplib.SMTP(fakemx.host, fakemx.port, timeout=TIMEOUT) as smtp:
        smtp.docmd("NOOP", "esc\\x1b[31mred")  # a terminal escape sequence
        smtp.send(b"NOOP \\xff\\xfe\\r\\n")  # bytes that are not UTF-8
        smtp.getreply()
    fakemx.wait_for(ended=2, timeout=TIMEOUT)
    assert fakemx.messages == []  # fails: the message was stored
""")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines([
        "*- fakemx -*",
        "* > NOOP esc\\x1b[[]31mred",
        "* > NOOP \\xff\\xfe",
        "stored message (1):",
        "  message 1 (session 1): MAIL FROM:<alice@sender.example> "
        "RCPT TO:<bob@dest.example>, * bytes, Subject: hi",
    ])
    assert "\x1b" not in result.stdout.str()


def test_a_server_side_error_is_reported_at_teardown(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
import sqlite3


def test_store_fails_unnoticed_by_the_client(fakemx):
    db = sqlite3.connect(fakemx.state_dir / "fakemx.sqlite3")
    db.execute("CREATE TRIGGER full BEFORE INSERT ON messages BEGIN"
               " SELECT RAISE(ABORT, 'database or disk is full'); END")
    db.commit()
    db.close()
    with pytest.raises(smtplib.SMTPDataError):
        send(fakemx)
""")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_store_fails_unnoticed_by_the_client*",
        "*- fakemx -*",
        "* < 452 4.3.1 Insufficient system storage  <-- broke here (reply after the final dot)",
        "server-side error (1):",
        "  session 1 after the final dot: IntegrityError: database or disk is full",
    ])
    assert sections(result) == 1


def test_fakemx_report_no_turns_the_section_off(pytester: pytest.Pytester) -> None:
    result = run(pytester, RESET_AFTER_MAIL, "--fakemx-report=no")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines(["*SMTPServerDisconnected*"])
    assert sections(result) == 0
    assert "broke here" not in result.stdout.str()


def test_the_report_is_short_by_default_and_complete_with_vv(pytester: pytest.Pytester) -> None:
    source = """
@pytest.mark.fakemx(profile="4.4.7-defer-rcpt")
def test_seven_attempts(fakemx):
    for _ in range(7):
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            send(fakemx, recipient="bob-" + "x" * 150 + "@dest.example")
    fakemx.wait_for(ended=7, timeout=TIMEOUT)
    assert fakemx.messages
"""
    short = run(pytester, source)
    short.assert_outcomes(failed=1)
    short.stdout.fnmatch_lines([
        "(2 earlier sessions not shown; -vv shows all)",
        "session 3, attempt 3, *: client sent QUIT",
        "* < 250-mx.fakemx.test | SIZE * | HELP",
        "* > RCPT TO:<bob-xxxx*x...",  # cut
        "* < 450 4.2.0 <bob-*x@dest.example>: Recipient address rejected: try again later"
        "  <-- broke here (reply after RCPT)",
    ])
    text = short.stdout.str()
    assert "session 1," not in text
    assert "session 2," not in text
    assert all(len(line) <= 120 for line in text.splitlines() if line.startswith("  ")
               and "broke here" not in line)

    full = run(pytester, source, "-vv")
    full.assert_outcomes(failed=1)
    full.stdout.fnmatch_lines([
        "session 1, attempt 1, *: client sent QUIT",
        "* < 250-mx.fakemx.test",
        "* < 250-SIZE *",
        "* < 250 HELP",
        "* > RCPT TO:<bob-" + "x" * 150 + "@dest.example>",
        "session 7, attempt 7, *: client sent QUIT",
    ])
    assert "not shown" not in full.stdout.str()


def test_a_long_session_keeps_its_start_its_break_and_its_end(pytester: pytest.Pytester) -> None:
    source = """
@pytest.mark.fakemx(rules=[{"stage": "rcpt", "reply": {"code": 550, "text": "5.1.1 No"}}])
def test_chatty_client(fakemx):
    with smtplib.SMTP(fakemx.host, fakemx.port, timeout=TIMEOUT) as smtp:
        smtp.ehlo("relay.example.net")
        for n in range(30):
            smtp.docmd("NOOP", f"before-{n}")
        smtp.mail("alice@sender.example")
        assert smtp.rcpt("bob@dest.example")[0] == 550
        for n in range(30):
            smtp.docmd("NOOP", f"after-{n}")
    fakemx.wait_for(ended=1, timeout=TIMEOUT)
    assert fakemx.messages
"""
    short = run(pytester, source)
    short.assert_outcomes(failed=1)
    short.stdout.fnmatch_lines([
        "* > NOOP before-0",
        "*... * lines not shown (-vv shows all)",
        "* > RCPT TO:<bob@dest.example>",
        "* < 550 5.1.1 No  <-- broke here (reply after RCPT)",
        "* > NOOP after-0",
        "*... * lines not shown (-vv shows all)",
        "* > NOOP after-29",
    ])
    assert "NOOP before-20" not in short.stdout.str()

    full = run(pytester, source, "-vv")
    full.assert_outcomes(failed=1)
    full.stdout.fnmatch_lines(["* > NOOP before-20", "* > NOOP after-10"])
    assert "not shown" not in full.stdout.str()


def test_the_section_survives_xdist(pytester: pytest.Pytester) -> None:
    result = run(pytester, RESET_AFTER_MAIL, "-n", "2")
    result.assert_outcomes(failed=1, passed=1)
    result.stdout.fnmatch_lines([
        "*- fakemx -*",
        "* · rule mail-drop fires after MAIL  <-- broke here (drop after MAIL)",
    ])


def test_junit_xml_carries_the_timeline_as_a_property(pytester: pytest.Pytester) -> None:
    xml = pytester.path / "junit.xml"
    result = run(pytester, RESET_AFTER_MAIL, f"--junitxml={xml}")
    result.assert_outcomes(failed=1, passed=1)
    cases = {case.get("name"): case for case in ET.parse(xml).iter("testcase")}
    failed = [p.get("value") or "" for p in cases["test_reset"].iter("property")
              if p.get("name") == "fakemx"]
    assert len(failed) == 1
    assert "> MAIL FROM:<alice@sender.example>" in failed[0]
    assert "rule mail-drop fires after MAIL  <-- broke here (drop after MAIL)" in failed[0]
    assert list(cases["test_fine"].iter("property")) == []


# endregion
# region marker paths --------------------------------------------------------------


def test_marker_paths_are_relative_to_the_test_file_not_the_working_directory(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    suite = pytester.mkdir("suite")
    (suite / "profiles").mkdir()
    (suite / "profiles" / "refuse-rcpt.toml").write_text(
        '[[rules]]\nstage = "rcpt"\nreply = { code = 550, text = "5.7.1 beside the test" }\n'
    )
    (suite / "defer-mail.toml").write_text(
        '[[rules]]\nstage = "mail"\nreply = { code = 451, text = "4.3.0 beside the test" }\n'
    )
    (suite / "test_paths.py").write_text(HELPERS + """

@pytest.mark.fakemx(profile="profiles/refuse-rcpt.toml")
def test_subdirectory(fakemx):
    assert fakemx.profile.name == "refuse-rcpt"
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(fakemx)


@pytest.mark.fakemx("defer-mail.toml", rules=[{"stage": "data", "reply": {"code": 554}}])
def test_file_name_with_rules(fakemx):
    assert fakemx.profile.name == "defer-mail"
    with pytest.raises(smtplib.SMTPSenderRefused):
        send(fakemx)


@pytest.mark.fakemx(profile="4.4.7-defer-rcpt")
def test_catalog_names_are_not_paths(fakemx):
    assert fakemx.profile.name == "4.4.7-defer-rcpt"


@pytest.mark.fakemx(profile="profiles/missing.toml")
def test_missing(fakemx):
    pass
""")
    elsewhere = pytester.mkdir("elsewhere")
    monkeypatch.chdir(elsewhere)
    result = pytester.runpytest(
        "-p", "no:cacheprovider", f"--rootdir={elsewhere}", str(suite / "test_paths.py")
    )
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines([
        f"*{suite / 'profiles' / 'missing.toml'}: no such file (check the path)",
    ])


# endregion
# region Session.first_error, broke_at, repr ------------------------------------------


def deliver(mx: FakeMX) -> None:
    """One message, the way a relay sends it; the failure itself is not the point here."""
    try:
        with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as smtp:
            smtp.sendmail("a@sender.example", ["b@dest.example"], MESSAGE)
    except (smtplib.SMTPException, OSError):
        pass
    mx.wait_for(ended=1, timeout=TIMEOUT)


def test_a_healthy_session_has_no_first_error() -> None:
    with FakeMX() as mx:
        deliver(mx)
        assert len(mx.messages) == 1  # positive control: it was delivered
        assert mx.sessions[0].first_error is None
        assert mx.sessions[0].broke_at is None


@pytest.mark.parametrize(
    ("profile", "stage", "kind", "text"),
    [
        ("4.4.318-rst-after-mail", Stage.MAIL, BreakKind.DROP, "fakemx reset (RST) after MAIL"),
        ("4.4.318-fin-after-rcpt", Stage.RCPT, BreakKind.DROP, "fakemx closed (FIN) after RCPT"),
        ("4.4.7-defer-rcpt", Stage.RCPT, BreakKind.REPLY, "450 4.2.0 <b@dest.example>: "),
        ("4.4.317-greeting-421", Stage.GREETING, BreakKind.REPLY, "421 4.3.2 "),
        ("4.4.7-defer-data", Stage.DATA, BreakKind.REPLY, "451 4.3.0 "),
        ("4.4.7-defer-end-of-data", Stage.END_OF_DATA, BreakKind.REPLY, "451 4.3.0 "),
        ("4.4.318-stall-then-close", Stage.MAIL, BreakKind.STALL, "stall "),
        ("4.4.318-firewall-smtp-inspection", Stage.GREETING, BreakKind.RULE, "rule greeting-"),
    ],
)
def test_first_error_names_the_stage_kind_and_text(
    profile: str, stage: Stage, kind: BreakKind, text: str
) -> None:
    with FakeMX(profile, time_scale=0.01) as mx:
        deliver(mx)
        session = mx.sessions[0]
        found = session.first_error
        assert isinstance(found, Break)
        assert (found.stage, found.kind) == (stage, kind)
        assert found.text.startswith(text)
        assert session.broke_at is stage
        assert session.events[found.index].kind in ("server", "fakemx")


def test_the_break_point_is_the_lab_pages() -> None:
    """timeline.py mirrors breakIndex in app.js; this fails when one changes without the other."""
    from fakemx import timeline

    app = (Path(timeline.__file__).parent / "api" / "web" / "app.js").read_text(encoding="utf-8")
    listed = re.search(r"const BROKEN_BY_FAKEMX = \[(.*?)\];", app)
    assert listed
    assert set(re.findall(r'"(\w+)"', listed.group(1))) == timeline._BROKEN_BY_FAKEMX
    rule = re.escape('e.kind === "fakemx" && e.text.startsWith("rule ")')
    page = re.search(r"function breakIndex\(session\) \{(.*?)\n\}", app, re.DOTALL)
    assert page
    order = [
        re.search(re.escape('e.kind === "server" && /^[45]\\d\\d/.test(e.text)'), page.group(1)),
        re.search(rule, page.group(1)),
        re.search(r"BROKEN_BY_FAKEMX\.includes\(session\.outcome\) \? events\.length - 1",
                  page.group(1)),
    ]
    assert all(order)
    assert [m.start() for m in order if m] == sorted(m.start() for m in order if m)


def test_repr_names_profile_address_listener_and_sessions() -> None:
    mx = FakeMX("4.4.318-rst-after-mail")
    assert repr(mx) == "<FakeMX 4.4.318-rst-after-mail on 127.0.0.1:0 listener=stopped sessions=0>"
    with mx:
        deliver(mx)
        assert repr(mx) == (
            f"<FakeMX 4.4.318-rst-after-mail on 127.0.0.1:{mx.port} listener=open sessions=1>"
        )
        mx.set_listener("refuse")
        assert f"on 127.0.0.1:{mx.port} listener=refuse sessions=1>" in repr(mx)


GUIDE = Path(__file__).parent.parent / "docs" / "testing-your-relay.md"
GUIDE_PRELUDE = """import pytest
from relay import Relay, Status

from fakemx import FakeMX

MESSAGE = b"Subject: hello\\r\\n\\r\\nHello.\\r\\n"


"""


def _block(text: str, language: str) -> str:
    found = re.search(rf"^```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert found, f"no ```{language} block"
    return found.group(1)


def _comparable(report: str) -> list[str]:
    """The report without what changes from run to run: ports, times, cipher, widths."""
    lines = []
    for line in report.strip().splitlines():
        line = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", line)
        line = re.sub(r"^ +\+\d+ ms ", "+N ms ", line)
        line = re.sub(r"TLS established: .*", "TLS established: ...", line)
        line = re.sub(r"^[-_]+ (.*?) [-_]+$", r"--- \1 ---", line)
        lines.append(re.sub(r"test_guide\.py:\d+", "test_guide.py:N", line))
    return lines


def test_the_guide_shows_the_report_its_failing_example_really_gives(
    pytester: pytest.Pytester,
) -> None:
    section = GUIDE.read_text(encoding="utf-8").split("## 3. When a test fails")[1]
    section = section.split("\n## ")[0]
    relay = Path(__file__).parent / "examples" / "relay.py"
    (pytester.path / "relay.py").write_text(relay.read_text(encoding="utf-8"))
    pytester.makepyfile(test_guide=GUIDE_PRELUDE + _block(section, "python"))
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    printed = result.stdout.str()
    start = printed.index("_ test_a_reset_is_retried _")
    printed = printed[printed.rindex("\n", 0, start) + 1 : printed.index("= short test summary")]
    printed = printed[: printed.rindex("\n")]
    assert _comparable(printed) == _comparable(_block(section, "text"))
    assert "--fakemx-report=no" in section


# endregion
