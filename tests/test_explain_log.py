"""``fakemx explain --log``: real relay logs and real client errors, named by the catalog.

A private Postfix (tests/postfix.py) delivers to fakemx serving catalog profiles;
its own mail.log is fed to ``fakemx explain --log FILE`` and every profile's
failure line must come back with the profile's code and name. The smtplib
errors are the last traceback lines of real runs against fakemx, fed through
``--log -``. Exim, an Exchange NDR and nodemailer are not installed here: their
lines are in the formats their documentation shows (Exim's spec, "Log files";
Microsoft's NDR pages; nodemailer's smtp-connection errors), and say so.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import smtplib
import ssl
import tempfile
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from postfix import PrivatePostfix

from fakemx import FakeMX
from fakemx.cli import main
from fakemx.tls.certs import CA_FILE, load_or_create_ca

TIMEOUT = 5.0

# profile -> the routing domain's letter (tests/postfix.py): p opportunistic TLS,
# e TLS required (not verified), v TLS verified against fakemx's CA.
THROUGH_POSTFIX = {
    "4.4.316-connection-refused": "p",
    "4.4.317-greeting-421": "p",
    "4.4.318-fin-after-mail": "p",
    "5.1.1-unknown-recipient": "p",
    "4.4.7-greylist-attempts": "p",
    "4.4.317-starttls-not-offered": "e",
    "4.4.317-handshake-alert": "e",
    "4.7.320-expired": "v",
    "4.4.315-no-greeting": "p",
    "5.7.1-reject-client-ip": "p",
}


def explained(capsys: pytest.CaptureFixture[str], *args: str) -> dict[int, tuple[str, str]]:
    """``fakemx explain --log ...``: line number -> (code, catalog profiles named)."""
    capsys.readouterr()
    status = main(["explain", "--log", *args])
    out = capsys.readouterr().out
    assert status == 0, out
    found: dict[int, tuple[str, str]] = {}
    for block in re.split(r"\n(?=line \d+: )", out):
        head = re.match(r"line (\d+): (\S+)", block)
        if head:
            names = re.search(r"like catalog profiles: (.*)", block)
            found[int(head[1])] = (head[2], names[1] if names else "")
    return found


@pytest.fixture(scope="module")
def postfix_log() -> Iterator[tuple[Path, dict[str, int]]]:
    """Postfix's log after one message to each profile in THROUGH_POSTFIX, and their ports."""
    if shutil.which("postfix", path="/usr/sbin:/sbin:/usr/bin") is None:
        pytest.skip("Debian's postfix package is not installed (scripts/test installs it)")
    if os.geteuid() != 0:
        pytest.skip("a private Postfix instance needs root to start its master")
    with tempfile.TemporaryDirectory(prefix="fakemx-explain-log-") as state:
        load_or_create_ca(Path(state))
        root = Path(tempfile.mkdtemp(prefix="fakemx-explain-postfix-", dir="/tmp"))
        relay = PrivatePostfix(root, Path(state) / CA_FILE)
        relay.start()
        ports: dict[str, int] = {}
        try:
            for name, letter in THROUGH_POSTFIX.items():
                with FakeMX(name, state_dir=state, time_scale=0.01) as mx:
                    ports[name] = mx.port
                    sent = relay.send(f"bob@{letter}{mx.port}.test")
                    relay.wait_verdict(sent, timeout=60)
                relay.drop_queue()
            yield relay.log, ports
        finally:
            relay.stop()
            shutil.rmtree(root, ignore_errors=True)


@pytest.mark.parametrize("name", list(THROUGH_POSTFIX))
def test_postfix_log_lines_name_the_profile(
        name: str, postfix_log: tuple[Path, dict[str, int]],
        capsys: pytest.CaptureFixture[str]) -> None:
    log, ports = postfix_log
    lines = log.read_text(errors="replace").splitlines()
    port = ports[name]
    mine = {n for n, line in enumerate(lines, start=1)
            if f":{port}" in line or f"{port}.test" in line}
    answers = {n: v for n, v in explained(capsys, str(log)).items() if n in mine}
    code = name.split("-", 1)[0]
    assert answers, f"no line about port {port} explained:\n" + "\n".join(
        lines[n - 1] for n in sorted(mine))
    assert any(c == code and name in names for c, names in answers.values()), answers


def smtplib_error(run: Callable[[], object]) -> str:
    """The last line of the traceback a real smtplib run raises."""
    try:
        run()
    except Exception as exc:
        return traceback.format_exception_only(exc)[-1].strip()
    raise AssertionError("the run did not fail")


def test_smtplib_errors_from_real_runs(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def deliver(mx: FakeMX, tls: bool = False) -> None:
        with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as client:
            if tls:
                client.starttls(context=ssl.create_default_context(cafile=str(mx.ca_path)))
            client.sendmail("alice@sender.example", ["bob@example.test"], b"Subject: x\r\n\r\nx")

    expected: list[tuple[str, str]] = []
    errors: list[str] = []
    for name, tls in (("4.4.316-connection-refused", False), ("4.4.317-greeting-421", False),
                      ("4.4.318-rst-after-mail", False), ("5.1.1-unknown-recipient", False),
                      ("4.4.7-greylist-time", False), ("4.7.320-expired", True),
                      ("4.4.317-starttls-not-offered", True)):
        with FakeMX(name) as mx:
            errors.append(smtplib_error(lambda mx=mx, tls=tls: deliver(mx, tls)))
        expected.append((name.split("-", 1)[0], name))
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(errors) + "\n"))
    answers = explained(capsys, "-")
    for number, (code, name) in enumerate(expected, start=1):
        assert number in answers, f"not explained: {errors[number - 1]}"
        assert answers[number][0] == code, (errors[number - 1], answers[number])
        assert name in answers[number][1], (errors[number - 1], answers[number])


# In the formats their documentation shows (no Exim, Exchange or Node.js on this machine;
# Postfix's expiry takes its maximal_queue_lifetime, a day at least).
DOCUMENTED = [
    ("2026-11-30 17:00:00 1tGxyz-000123-AB == bob@example.test R=dnslookup T=remote_smtp"
     " defer (111): Connection refused", "4.4.316"),
    ("2026-11-30 17:00:00 1tGxyz-000123-AB ** bob@example.test R=dnslookup T=remote_smtp"
     " H=mx.example.test [192.0.2.1]: SMTP error from remote mail server after RCPT"
     " TO:<bob@example.test>: 550 5.1.1 <bob@example.test>: Recipient address rejected: User"
     " unknown in virtual mailbox table", "5.1.1"),
    ("2026-11-30 17:00:00 1tGxyz-000123-AB == bob@example.test R=dnslookup T=remote_smtp"
     " defer (-18): Remote host mx.example.test [192.0.2.1] closed connection in response to"
     " MAIL FROM:<>", "4.4.318"),
    ("2026-11-30 17:00:00 1tGxyz-000123-AB == bob@example.test R=dnslookup T=remote_smtp"
     " defer (-53): retry time not reached for any host after a long failure period", None),
    ("Nov 30 17:00:05 relay postfix/qmgr[12]: 4F2A4: from=<>, status=expired, returned to"
     " sender", "4.4.7"),
    ("Remote Server returned '450 4.4.316 Connection refused [Message=Socket error code 10061]'",
     "4.4.316"),
    ("Remote Server returned '550 4.4.7 QUEUE.Expired; message expired'", "4.4.7"),
    ("Error: Greeting never received", "4.4.315"),
    ("Error: connect ECONNREFUSED 127.0.0.1:2525", "4.4.316"),
    ("Error: Can't send mail - all recipients were rejected: 550 5.7.1 <blocked-user@x.test>:"
     " Recipient address rejected: Access denied", "5.7.1"),
]


@pytest.mark.parametrize(("line", "code"), DOCUMENTED)
def test_documented_formats(line: str, code: str | None,
                            capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(line + "\n"))
    capsys.readouterr()
    status = main(["explain", "--log", "-"])
    out = capsys.readouterr().out
    if code is None:  # a line that is no delivery failure is not explained
        assert status == 1
        assert out.strip() == "1 lines read, 0 show a failure fakemx can name"
        return
    assert status == 0
    assert out.startswith(f"line 1: {code} "), out
    assert "  fix: " in out


def test_log_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "--log", "/nonexistent/mail.log"]) == 2
    assert capsys.readouterr().err == ("fakemx: --log /nonexistent/mail.log: cannot read: No"
                                       " such file or directory (give a log file, or - for"
                                       " stdin)\n")
    assert main(["explain", "4.4.316", "--log", "-"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["explain"]) == 2
    assert "give a code such as 4.4.316" in capsys.readouterr().err
