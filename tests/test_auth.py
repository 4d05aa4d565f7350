"""SMTP AUTH (#15): [auth] profiles through real clients (smtplib, aiosmtplib, swaks).

Each failure test first logs in where the same client should succeed (the
positive control), then meets the profile's reply. Postfix as the relay with a
SASL password map is in tests/e2e/test_postfix.py (``[about.postfix] sasl``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import shutil
import smtplib
import ssl
import subprocess
from pathlib import Path

import aiosmtplib
import pytest
from tlshelp import HOSTNAME, verifying_context
from wire import TIMEOUT, command, connect, read_reply, wait_closed

from fakemx import FakeMX, ProfileError, Stage, load_profile, profile_from_data
from fakemx.decide import Context, fires
from fakemx.lint import lint
from fakemx.model import When
from fakemx.profiles import load_file

PASSWORD = "s3cret-Pw"
HEALTHY = {"auth": {"mechanisms": ["PLAIN", "LOGIN", "CRAM-MD5"], "users": {"alice": PASSWORD},
                    "required": True}}
MESSAGE = "Subject: auth\r\n\r\nhello\r\n"
DOCS = Path(__file__).resolve().parent.parent / "docs" / "auth.md"
needs_swaks = pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")


def tls_client(mx: FakeMX) -> smtplib.SMTP:
    """smtplib after EHLO, STARTTLS (fakemx's certificate verified) and EHLO again."""
    client = smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT)
    client.starttls(context=verifying_context(mx))
    client.ehlo()
    return client


def log_in(mx: FakeMX, mechanism: str, login: str, password: str) -> tuple[int, bytes]:
    with tls_client(mx) as client:
        client.user, client.password = login, password
        method = getattr(client, "auth_" + mechanism.lower().replace("-", "_"))
        return client.auth(mechanism, method)


# region the healthy path -------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_smtplib_logs_in_with_each_mechanism_and_sends(mechanism: str, tmp_path: Path) -> None:
    with FakeMX(profile_from_data(HEALTHY, "t"), state_dir=tmp_path) as mx:
        with tls_client(mx) as client:
            assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN", "CRAM-MD5"]
            client.user, client.password = "alice", PASSWORD
            method = getattr(client, "auth_" + mechanism.lower().replace("-", "_"))
            assert client.auth(mechanism, method) == (235, b"2.7.0 Authentication successful")
            assert client.sendmail("a@example.net", ["b@example.test"], MESSAGE) == {}
        mx.wait_for(messages=1, ended=1)
        events = [(e.kind, e.text) for e in mx.sessions[0].events]
    assert ("fakemx", f"AUTH {mechanism} as alice: login and password right") in events
    assert any(kind == "client" and text.startswith(f"AUTH {mechanism}") for kind, text in events)
    # The password is in no journal line, no stored byte, in clear or in base64.
    secrets = [PASSWORD.encode(), base64.b64encode(PASSWORD.encode()),
               base64.b64encode(f"\0alice\0{PASSWORD}".encode())]
    assert not any(s.decode() in text for _, text in events for s in secrets)
    stored = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    assert not any(s in stored for s in secrets)


def test_catalog_positive_control_with_smtplib_login(caplog: pytest.LogCaptureFixture) -> None:
    with FakeMX("auth-required-ok") as mx, tls_client(mx) as client:
        assert client.login("alice", "secret") == (235, b"2.7.0 Authentication successful")
        assert client.sendmail("a@example.net", ["b@example.test"], MESSAGE) == {}
    # aiosmtpd logs "Session.login_data is deprecated" per login; fakemx's session does not.
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]


def test_smtps_offers_auth_from_the_first_byte() -> None:
    # aiosmtpd's own check knows STARTTLS only, and answered 538 under implicit TLS.
    data = {**HEALTHY, "tls": {"mode": "implicit"}}
    with FakeMX(profile_from_data(data, "t")) as mx:
        context = ssl.create_default_context(cafile=str(mx.ca_path))
        context.check_hostname = False  # smtplib would check the address it dialled
        with smtplib.SMTP_SSL(mx.host, mx.port, timeout=TIMEOUT, context=context) as client:
            client.ehlo()
            assert "auth" in client.esmtp_features
            assert client.login("alice", PASSWORD)[0] == 235


# endregion
# region what each failure looks like to a client ---------------------------------


def test_wrong_password_gets_535_5_7_8_with_smtplib() -> None:
    with FakeMX("5.7.8-auth-wrong-credentials") as mx:
        assert log_in(mx, "PLAIN", "alice", "secret")[0] == 235  # positive control
        with tls_client(mx) as client, pytest.raises(smtplib.SMTPAuthenticationError) as error:
            client.login("alice", "wrong-password")
        mx.wait_for(ended=2)
        notes = [e.text for e in mx.sessions[1].events if e.kind == "fakemx"]
    assert (error.value.smtp_code, error.value.smtp_error) == (
        535, b"5.7.8 Authentication credentials invalid")
    assert any("as alice: wrong login or password" in note for note in notes)
    assert mx.sessions[1].broke_at is Stage.AUTH


@pytest.mark.parametrize(("profile", "login", "reply"), [
    ("5.7.0-auth-required", "alice", b"5.7.0 Authentication required"),
    # Exchange Online's words, by a rule at MAIL with when.authenticated = false
    ("5.7.57-client-not-authenticated", "alice@example.test",
     b"5.7.57 Client not authenticated to send mail. [mx.fakemx.test]"),
])
def test_mail_before_login_gets_530_and_after_login_goes(
        profile: str, login: str, reply: bytes) -> None:
    with FakeMX(profile) as mx:
        with tls_client(mx) as client:  # the positive control: logged in, mail goes
            client.login(login, "secret")
            assert client.sendmail("a@example.net", ["b@example.test"], MESSAGE) == {}
        with tls_client(mx) as client, pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("a@example.net", ["b@example.test"], MESSAGE)
    assert (refused.value.smtp_code, refused.value.smtp_error) == (530, reply)


def test_auth_only_after_starttls_538_before() -> None:
    with FakeMX(profile_from_data(HEALTHY, "t")) as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        ehlo = command(sock, "EHLO relay.example.net")
        assert b"STARTTLS" in ehlo
        assert b"AUTH" not in ehlo
        assert command(sock, "AUTH PLAIN AGFsaWNlAHNlY3JldA==") == (
            b"538 5.7.11 Encryption required for requested authentication mechanism\r\n")
        assert command(sock, "MAIL FROM:<a@example.net>").startswith(b"530 5.7.0")
        mx.wait_for(sessions=1)
        assert "AUTH PLAIN ********" in mx.sessions[0].commands  # the credentials masked


def test_encryption_required_profile_advertises_auth_in_clear_and_refuses_it() -> None:
    with FakeMX("5.7.11-auth-encryption-required") as mx, smtplib.SMTP(
            mx.host, mx.port, timeout=TIMEOUT) as client:
        client.ehlo()
        assert "starttls" not in client.esmtp_features
        assert client.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        with pytest.raises(smtplib.SMTPAuthenticationError) as error:
            client.login("alice", "secret")
    assert error.value.smtp_code == 538


def test_without_auth_in_the_profile_auth_is_not_offered() -> None:
    # Postfix without SASL answers so; fakemx used to offer AUTH after STARTTLS and
    # fail every login.
    with FakeMX() as mx, tls_client(mx) as client:
        assert "auth" not in client.esmtp_features
        assert client.docmd("AUTH", "PLAIN AGFsaWNlAHNlY3JldA==") == (
            503, b"5.5.1 Error: authentication not enabled")
        assert client.sendmail("a@example.net", ["b@example.test"], MESSAGE) == {}


@pytest.mark.parametrize(("profile", "login", "code", "text"), [
    ("4.7.0-auth-temporary-failure", "alice", 454, "4.7.0 Temporary authentication failure"),
    ("5.7.9-auth-mechanism-too-weak", "alice", 534,
     "5.7.9 Application-specific password required. Learn more at\n"
     "5.7.9 https://support.google.com/mail/?p=InvalidSecondFactor"),
    ("5.7.3-auth-unsuccessful-exchange", "alice@example.test", 535,
     "5.7.3 Authentication unsuccessful [mx.fakemx.test]"),
    ("5.7.139-auth-disabled-for-tenant", "alice@example.test", 535,
     "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the"
     " Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [mx.fakemx.test]"),
])
async def test_aiosmtplib_meets_the_rule_at_the_auth_stage(
        profile: str, login: str, code: int, text: str) -> None:
    # The positive control: the same profile without its rule lets the same login in.
    healthy = load_profile(profile).model_copy(update={"rules": []})
    for served, expected in ((healthy, (235, "2.7.0 Authentication successful")),
                             (load_profile(profile), (code, text))):
        async with FakeMX(served) as mx:
            context = ssl.create_default_context(cafile=str(mx.ca_path))
            context.check_hostname = False  # aiosmtplib checks the address it dialled
            client = aiosmtplib.SMTP(hostname=mx.host, port=mx.port, timeout=TIMEOUT,
                                     start_tls=True, tls_context=context)
            async with client:
                try:
                    response = await client.login(login, "secret")
                    got = (response.code, response.message)
                except aiosmtplib.SMTPAuthenticationError as error:
                    got = (error.code, error.message)
            assert got == expected
            if expected[0] != 235:
                await mx.await_for(ended=1)
                assert any(e.text == f"rule auth-reply fires {Stage.AUTH.label}"
                           for e in mx.sessions[0].events)


def test_a_drop_at_the_auth_stage_resets_after_the_credentials() -> None:
    data = {**HEALTHY, "rules": [{"stage": "auth", "drop": "rst"}]}
    with FakeMX(profile_from_data(data, "t")) as mx, connect(mx.host, mx.port) as sock:
        read_reply(sock)
        command(sock, "EHLO relay.example.net")
        command(sock, "STARTTLS")
        with verifying_context(mx).wrap_socket(sock, server_hostname=HOSTNAME) as tls:
            command(tls, "EHLO relay.example.net")
            tls.sendall(b"AUTH PLAIN " + base64.b64encode(f"\0alice\0{PASSWORD}".encode())
                        + b"\r\n")
            assert wait_closed(tls).how in ("rst", "fin")  # TLS may see the reset as EOF
        mx.wait_for(ended=1)
    assert mx.sessions[0].broke_at is Stage.AUTH
    assert mx.sessions[0].outcome == "dropped_rst"


def test_a_2xx_rule_at_auth_logs_any_password_in_and_close_hangs_up_after_its_reply() -> None:
    lenient = {**HEALTHY, "rules": [{"stage": "auth", "reply": {
        "code": 235, "text": "2.7.0 Welcome, whoever you are"}}]}
    with FakeMX(profile_from_data(lenient, "t")) as mx, tls_client(mx) as client:
        assert client.login("mallory", "guess") == (235, b"2.7.0 Welcome, whoever you are")
        assert client.sendmail("a@example.net", ["b@example.test"], MESSAGE) == {}
    closing = {**HEALTHY, "rules": [{"stage": "auth", "stall": {"seconds": 0.05, "then": {
        "reply": {"code": 421, "text": "4.7.0 Too many login failures", "close": True}}}}]}
    with FakeMX(profile_from_data(closing, "t")) as mx:
        with raw_tls_session(mx) as tls:
            tls.sendall(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0wrong") + b"\r\n")
            closed = wait_closed(tls)
        mx.wait_for(ended=1)  # the TLS close completes once the client closes too
    assert closed.data == b"421 4.7.0 Too many login failures\r\n"
    assert mx.sessions[0].broke_at is Stage.AUTH


# endregion
# region the exchange itself -------------------------------------------------------


def raw_tls_session(mx: FakeMX) -> ssl.SSLSocket:
    sock = connect(mx.host, mx.port)
    read_reply(sock)
    command(sock, "EHLO relay.example.net")
    command(sock, "STARTTLS")
    tls = verifying_context(mx).wrap_socket(sock, server_hostname=HOSTNAME)
    command(tls, "EHLO relay.example.net")
    return tls


def test_cram_md5_by_hand_and_the_answers_journaled_masked() -> None:
    with FakeMX(profile_from_data(HEALTHY, "t")) as mx, raw_tls_session(mx) as tls:
        challenge = command(tls, "AUTH CRAM-MD5")
        assert challenge.startswith(b"334 ")
        nonce = base64.b64decode(challenge[4:].strip())
        assert nonce.startswith(b"<")
        assert nonce.endswith(b"@mx.fakemx.test>")
        digest = hmac.new(PASSWORD.encode(), nonce, hashlib.md5).hexdigest()
        answer = base64.b64encode(f"alice {digest}".encode()).decode()
        assert command(tls, answer) == b"235 2.7.0 Authentication successful\r\n"
        assert command(tls, "AUTH PLAIN x").startswith(b"503")  # already logged in
        mx.wait_for(sessions=1)
        texts = [e.text for e in mx.sessions[0].events]
    assert "********" in texts
    assert answer not in " ".join(texts)


def test_login_challenges_and_a_cancel_get_one_reply_each() -> None:
    optional = {"auth": {**HEALTHY["auth"], "required": False}}
    with FakeMX(profile_from_data(optional, "t")) as mx, raw_tls_session(mx) as tls:
        assert command(tls, "AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"  # "Username:"
        assert command(tls, base64.b64encode(b"alice").decode()) == b"334 UGFzc3dvcmQ6\r\n"
        assert command(tls, "*") == b"501 5.7.0 Auth aborted\r\n"  # RFC 4954 4
        assert command(tls, "NOOP") == b"250 OK\r\n"  # nothing else was queued
        assert command(tls, "AUTH NTLM").startswith(b"504 5.5.4")
        assert command(tls, "MAIL FROM:<a@example.net>").startswith(b"250")  # AUTH optional
        assert command(tls, "AUTH PLAIN x") == (
            b"503 5.5.1 Error: MAIL transaction in progress\r\n")
        assert command(tls, "RSET") == b"250 OK\r\n"
        assert command(tls, "AUTH CRAM-MD5 eA==") == (
            b"501 5.5.2 CRAM-MD5 takes no initial response\r\n")
        assert command(tls, "AUTH PLAIN") == b"334 \r\n"
        assert command(tls, "not base64!") == b"501 5.5.2 Can't decode base64\r\n"
        assert command(tls, "AUTH LOGIN").startswith(b"334 ")
        assert command(tls, "A" * 3000).startswith(b"500 5.5.6")
        mx.wait_for(sessions=1)
        mx.check()  # a client's long line is no error inside fakemx


def test_a_client_that_leaves_mid_exchange_left_during_auth() -> None:
    plain_text = {"auth": {"users": {"alice": PASSWORD}, "require_tls": False}}
    with FakeMX(profile_from_data(plain_text, "t")) as mx:
        with connect(mx.host, mx.port) as sock:
            read_reply(sock)
            assert b"AUTH PLAIN LOGIN" in command(sock, "EHLO relay.example.net")
            assert command(sock, "AUTH LOGIN") == b"334 VXNlcm5hbWU6\r\n"
        mx.wait_for(ended=1)
        mx.check()
    assert mx.sessions[0].ended_by == "client closed the connection after AUTH"


def swaks_can(mechanism: str) -> bool:
    """swaks does CRAM-MD5 with Perl's Digest::HMAC_MD5 (Debian: libdigest-hmac-perl)."""
    if mechanism != "CRAM-MD5":
        return True
    return subprocess.run(["perl", "-MDigest::HMAC_MD5", "-e", "1"], capture_output=True,
                          check=False).returncode == 0


@needs_swaks
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_swaks_logs_in_and_meets_535(mechanism: str) -> None:
    if not swaks_can(mechanism):
        pytest.skip("swaks needs Digest::HMAC_MD5 for CRAM-MD5 (scripts/test installs it)")
    with FakeMX("auth-required-ok") as mx:  # offers all three; a wrong password gets 535
        def swaks(password: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                ["swaks", "--server", f"{mx.host}:{mx.port}", "--to", "bob@example.test",
                 "--from", "alice@example.net", "--tls", "--auth", mechanism,
                 "--auth-user", "alice", "--auth-password", password, "--timeout", "5"],
                capture_output=True, text=True, timeout=30)
        ok = swaks("secret")
        assert ok.returncode == 0, ok.stdout
        assert "235 2.7.0 Authentication successful" in ok.stdout
        refused = swaks("wrong")
        assert refused.returncode == 28, refused.stdout  # swaks: error in AUTH transaction
        assert "535 5.7.8 Authentication credentials invalid" in refused.stdout


# endregion
# region the profile format ----------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ('[auth]\nmechanisms = ["NTLM"]', "auth.mechanisms[0]: Input should be 'PLAIN', 'LOGIN' or"
     " 'CRAM-MD5'"),
    ('[auth]\nmechanisms = ["PLAIN", "PLAIN"]', "auth.mechanisms: names a mechanism"
     " twice: list each once"),
    ("[auth]\nmechanisms = []", "auth.mechanisms: List should have at least 1 item"),
    ('[auth]\nusers = ["alice"]', "auth.users: Input should be a valid dictionary"),
    ('[[rules]]\nstage = "mail"\nwhen = { authenticated = "maybe" }\ndrop = "fin"',
     "rules[0].when.authenticated: Input should be a valid boolean"),
    ('[[rules]]\nstage = "mail"\nwhen = { login = ["alice"] }\ndrop = "fin"',
     "rules[0]: when.login only applies at stage 'auth'"),
    ('[[rules]]\nstage = "auth"\nwhen = { mechanism = ["NTLM"] }\ndrop = "fin"',
     "rules[0].when.mechanism[0]: Input should be 'PLAIN', 'LOGIN' or 'CRAM-MD5'"),
])
def test_bad_auth_tables_give_one_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as error:
        load_file(path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(("data", "expected"), [
    ({"rules": [{"stage": "auth", "reply": {"code": 454}}]},
     "rules[0]: never fires: the profile has no [auth], so no client logs in"),
    ({"rules": [{"stage": "mail", "when": {"authenticated": True}, "drop": "fin"}]},
     "rules[0]: never fires: the profile has no [auth]"),
    ({**HEALTHY, "rules": [{"stage": "ehlo", "drop": "rst"},
                           {"stage": "auth", "reply": {"code": 454}}]},
     "rules[1]: never fires: rules[0] always ends the session at stage ehlo, before auth"),
])
def test_lint_finds_auth_rules_that_cannot_fire(data: dict[str, object], expected: str) -> None:
    lines = [f.line("p.toml") for f in lint(profile_from_data(data, "p.toml"))]
    assert any(expected in line for line in lines), lines
    # for logged-out clients, and with [auth], the same rules are fine
    assert lint(profile_from_data({**HEALTHY, "rules": [
        {"stage": "mail", "when": {"authenticated": False}, "drop": "fin"},
        {"stage": "auth", "reply": {"code": 454}}]}, "ok")) == []


def docs_example(name: str) -> str:
    """The TOML block in docs/auth.md that starts with ``# example: NAME``."""
    blocks: dict[str, str] = dict(re.findall(
        r"```toml\n# example: (\S+)\n(.*?)```", DOCS.read_text(), re.DOTALL))
    return blocks[name]


def test_the_docs_examples_do_what_the_docs_say(tmp_path: Path) -> None:
    for name in ("submission", "tenant-disabled"):
        (tmp_path / f"{name}.toml").write_text(docs_example(name))
    with FakeMX(load_file(tmp_path / "submission.toml")) as mx:
        with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as client:
            client.ehlo()
            assert "auth" not in client.esmtp_features  # require_tls
        assert log_in(mx, "CRAM-MD5", "alice", "secret")[0] == 235
    with FakeMX(load_file(tmp_path / "tenant-disabled.toml")) as mx, tls_client(mx) as client:
        assert client.esmtp_features["auth"] == " LOGIN"
        with pytest.raises(smtplib.SMTPAuthenticationError) as error:
            client.login("alice@example.test", "secret")
        # AUTH is optional there (no required = true): mail goes without a login
        assert client.sendmail("a@example.net", ["b@example.test"], MESSAGE) == {}
    assert error.value.smtp_error.startswith(b"5.7.139 Authentication unsuccessful")


@needs_swaks
def test_a_rule_for_weak_mechanisms_lets_cram_md5_through(tmp_path: Path) -> None:
    (tmp_path / "weak.toml").write_text(docs_example("weak-plain"))
    with FakeMX(load_file(tmp_path / "weak.toml")) as mx:
        with tls_client(mx) as client:  # smtplib prefers CRAM-MD5: in
            assert client.login("alice", "secret") == (235, b"2.7.0 Authentication successful")
        with pytest.raises(smtplib.SMTPAuthenticationError) as weak:
            log_in(mx, "LOGIN", "alice", "secret")
        assert weak.value.smtp_code == 534
        swaks = subprocess.run(
            ["swaks", "--server", f"{mx.host}:{mx.port}", "--to", "bob@example.test", "--tls",
             "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "secret",
             "--timeout", "5"], capture_output=True, text=True, timeout=30)
    assert swaks.returncode == 28, swaks.stdout
    assert "534 5.7.9 Authentication mechanism is too weak" in swaks.stdout


def test_when_authenticated_is_a_plain_condition() -> None:
    ctx = Context(stage=Stage.MAIL, client_ip="127.0.0.1")
    assert fires(When(authenticated=False), ctx)
    assert not fires(When(authenticated=True), ctx)
    assert fires(When(authenticated=True), Context(stage=Stage.MAIL, client_ip="127.0.0.1",
                                                   authenticated=True))
    assert fires(When(), ctx)
    login = Context(stage=Stage.AUTH, client_ip="127.0.0.1", mechanism="PLAIN",
                    login="Alice@Example.test")
    assert fires(When(mechanism=["PLAIN", "LOGIN"], login=["alice@*"]), login)
    assert not fires(When(mechanism=["CRAM-MD5"]), login)
    assert not fires(When(login=["bob@*"]), login)

# endregion
