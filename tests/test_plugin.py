"""The pytest plugin, exercised the way users meet it: inner pytest runs through ``pytester``."""

from __future__ import annotations

import subprocess
import sys

import plugin_harness
import pytest

from fakemx.profiles import catalog

pytest_plugins = ["pytester"]

HELPERS = plugin_harness.HELPERS + """
import socket
import sqlite3


def rcpt_code(mx):
    with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as smtp:
        smtp.ehlo("relay.example.net")
        smtp.mail("alice@sender.example")
        return smtp.rcpt("bob@dest.example")[0]
"""


@pytest.fixture(autouse=True)
def _inner_ini(pytester: pytest.Pytester) -> None:
    plugin_harness.inner_ini(pytester)


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    return plugin_harness.run(pytester, HELPERS + source, *args)


def test_plugin_is_registered_and_its_marker_documented(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.fakemx(profile=None, rules=(), *"])


def test_importing_the_plugin_imports_no_server_code() -> None:
    code = (
        "import sys, fakemx.pytest_plugin; "
        "print(sorted(m for m in ('aiosmtpd', 'pydantic', 'fakemx.server', 'trustme') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_fakemx_fixture_is_a_fresh_sink_per_test(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
seen = []


def test_one(fakemx, tmp_path):
    assert fakemx.profile.name == "sink"
    assert send(fakemx) == {}
    fakemx.wait_for(messages=1, ended=1, timeout=TIMEOUT)
    assert fakemx.messages[0].message["Subject"] == "hi"
    assert fakemx.state_dir.is_relative_to(tmp_path)
    seen.append(fakemx)


def test_two(fakemx):
    assert fakemx.sessions == [] and fakemx.messages == []
    assert fakemx.port != seen[0].port
    with pytest.raises(ConnectionRefusedError):  # the first test's server has stopped
        socket.create_connection((seen[0].host, seen[0].port), timeout=TIMEOUT)
""")
    result.assert_outcomes(passed=2)


def test_marker_names_the_profile_and_adds_rules(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
@pytest.mark.fakemx(profile="4.4.7-greylist-attempts")
def test_profile(fakemx):
    assert [rcpt_code(fakemx) for _ in range(3)] == [451, 451, 250]


@pytest.mark.fakemx("sink", rules=[{"stage": "rcpt", "reply": {"code": 550, "text": "5.1.1 No"}}])
def test_positional_profile_and_rules(fakemx):
    assert rcpt_code(fakemx) == 550


@pytest.mark.fakemx(rules=[{"stage": "mail", "stall": {"seconds": 300}}], time_scale=0.01,
                    max_message_size=2048)
def test_profile_fields_and_time_scale(fakemx):
    assert fakemx.time_scale == 0.01
    assert fakemx.profile.max_message_size == 2048
    assert fakemx.profile.rules[0].stall.seconds == pytest.approx(3.0)


@pytest.mark.fakemx(profile="4.4.7-defer-rcpt")
class TestOnAClass:
    def test_inherits_the_marker(self, fakemx):
        assert rcpt_code(fakemx) == 450
""")
    result.assert_outcomes(passed=4)


def test_a_bad_marker_is_a_one_line_setup_error(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
@pytest.mark.fakemx(rules=[{"stage": "rcpt", "reply": {"code": 42}}])
def test_bad_rule(fakemx):
    pass


@pytest.mark.fakemx(profile="4.4.317-greeting-42")
def test_unknown_profile(fakemx):
    pass


def test_unknown_profile_in_the_factory(fakemx_factory):
    fakemx_factory("4.4.316-connection-refuse")
""")
    result.assert_outcomes(errors=2, failed=1)
    # Each error is its header line and then exactly one line: no traceback, no
    # "During handling of the above exception", no source of load_profile.
    for header, line in [
        (r"ERROR at setup of test_bad_rule",
         r"@pytest.mark.fakemx on test_inner.py::test_bad_rule: rules\[0\].reply.code: "
         r"42 is not an SMTP reply code \(use 200-599\)"),
        (r"ERROR at setup of test_unknown_profile",
         r"@pytest.mark.fakemx on test_inner.py::test_unknown_profile: unknown profile "
         r"'4.4.317-greeting-42' \(nearest: 4.4.317-greeting-421, .*; see `fakemx list`\)"),
        (r"test_unknown_profile_in_the_factory",
         r"fakemx_factory: unknown profile '4.4.316-connection-refuse' "
         r"\(nearest: 4.4.316-connection-refused.*\)"),
    ]:
        result.stdout.re_match_lines([rf"_+ {header} _+$", rf"{line}$", r"[=_]{3,} "],
                                     consecutive=True)
    text = result.stdout.str()
    for traceback_part in ("Traceback", "During handling", "def load_profile", "raise "):
        assert traceback_part not in text


def test_factory_starts_several_servers_with_one_ca_and_stops_them_all(
    pytester: pytest.Pytester,
) -> None:
    result = run(pytester, """
started = []


def test_one_server_per_mx_host(fakemx_factory, fakemx_ca):
    primary = fakemx_factory("4.4.318-rst-after-connect")
    backup = fakemx_factory(name="mx2.dest.example")
    started.extend([primary, backup])
    assert primary.port != backup.port
    assert primary.state_dir != backup.state_dir
    assert primary.ca_pem == backup.ca_pem == fakemx_ca.read_bytes()
    with pytest.raises(OSError):  # reset: ECONNRESET or "server disconnected", by timing
        send(primary)
    assert send(backup) == {}


def test_all_stopped(fakemx_factory):
    for mx in started:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((mx.host, mx.port), timeout=TIMEOUT)
""")
    result.assert_outcomes(passed=2)


def test_override_fixtures_in_a_conftest(pytester: pytest.Pytester) -> None:
    pytester.makeconftest("""
import pytest


@pytest.fixture(scope="session")
def fakemx_time_scale():
    return 0.5


@pytest.fixture
def fakemx_state_dir(tmp_path):
    return tmp_path / "my-state"
""")
    result = run(pytester, """
def test_overrides(fakemx, tmp_path):
    assert fakemx.time_scale == 0.5
    assert fakemx.state_dir.parent == tmp_path / "my-state"
    assert send(fakemx) == {}
""")
    result.assert_outcomes(passed=1)


def test_server_side_errors_fail_the_test_at_teardown(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
def break_store(mx):
    db = sqlite3.connect(mx.state_dir / "fakemx.sqlite3")
    db.execute("CREATE TRIGGER full BEFORE INSERT ON messages BEGIN"
               " SELECT RAISE(ABORT, 'database or disk is full'); END")
    db.commit()
    db.close()


def test_store_fails_unnoticed_by_the_client(fakemx):
    break_store(fakemx)
    with pytest.raises(smtplib.SMTPDataError):
        send(fakemx)


def test_store_fails_on_purpose(fakemx):
    break_store(fakemx)
    with pytest.raises(smtplib.SMTPDataError):
        send(fakemx)
    assert len(fakemx.incidents) == 1
    fakemx.incidents.clear()
""")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_store_fails_unnoticed_by_the_client*",
        "*ServerSideError: fakemx 127.0.0.1:*: 1 server-side error: "
        "session 1 after the final dot: IntegrityError: database or disk is full",
    ])


def test_catalog_params_selects_by_code_and_glob_with_profile_names_as_ids(
    pytester: pytest.Pytester,
) -> None:
    result = run(pytester, """
from fakemx.pytest_plugin import catalog_params


@pytest.mark.parametrize("profile", catalog_params(code="4.4.318", names="*-rst-*"))
def test_by_code(profile):
    assert profile.about.code == "4.4.318"


@pytest.mark.parametrize("fakemx", catalog_params(names="5.7.1-*", exclude="*-helo"),
                         indirect=True)
def test_indirect(fakemx):
    assert fakemx.profile.name.startswith("5.7.1-")
""", "--collect-only", "-q")
    rst = sorted(
        p.name for p in catalog() if p.about and p.about.code == "4.4.318" and "-rst-" in p.name
    )
    policy = [p.name for p in catalog() if p.name.startswith("5.7.1-") and "-helo" not in p.name]
    assert rst
    assert policy
    result.stdout.fnmatch_lines(
        [f"test_inner.py::test_by_code[[]{name}[]]" for name in rst]
        + [f"test_inner.py::test_indirect[[]{name}[]]" for name in policy]
    )


def test_catalog_params_runs_the_fixture_on_each_profile(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
from fakemx.pytest_plugin import catalog_params


# Without [auth]: a profile that requires AUTH refuses MAIL (530) by its settings alone.
@pytest.mark.parametrize("fakemx", catalog_params(
    code="5.*", where=lambda p: not p.rules and p.auth is None), indirect=True)
def test_rule_less_policy_profiles(fakemx):
    assert fakemx.profile.rules == []
    assert rcpt_code(fakemx) == 250  # 5.3.4 refuses only large messages, at DATA
""")
    result.assert_outcomes(passed=len([p for p in catalog() if not p.rules and p.auth is None
                                       and p.about and p.about.code.startswith("5.")]))


def test_an_empty_catalog_selection_is_an_error(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
from fakemx.pytest_plugin import catalog_params


@pytest.mark.parametrize("profile", catalog_params(code="9.9.9"))
def test_nothing(profile):
    pass
""")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*catalog_params(code='9.9.9'*selects no profile*"])


def test_parallel_under_xdist(pytester: pytest.Pytester) -> None:
    result = run(pytester, """
@pytest.mark.parametrize("n", range(8))
def test_many(fakemx, fakemx_factory, n):
    other = fakemx_factory()
    assert send(fakemx) == {} and send(other) == {}
    fakemx.wait_for(messages=1, timeout=TIMEOUT)
""", "-n", "2")
    result.assert_outcomes(passed=8)
