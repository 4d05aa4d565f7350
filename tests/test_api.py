"""The HTTP API over real sockets: httpx against a running fakemx, smtplib as the relay."""

from __future__ import annotations

import json
import re
import signal
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api_harness import TIMEOUT_SECONDS, Running, running_api, send

from fakemx.cli import main


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    with running_api(tmp_path) as api:
        yield api


@pytest.fixture
def http(running: Running) -> httpx.Client:
    return running.http()


def server_path(running: Running, *parts: str) -> str:
    return "/".join(["/api/servers", running.server().name, *parts])


def test_switch_profile_then_the_relay_sees_it(running: Running, http: httpx.Client) -> None:
    mx = running.server()
    send(mx)  # positive control: the sink accepts

    response = http.put(server_path(running, "profile"), json={"catalog": "4.4.7-defer-rcpt"})
    assert response.status_code == 200, response.text
    assert response.json()["profile"] == "4.4.7-defer-rcpt"
    assert response.json()["code"] == "4.4.7"
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(mx)
    code, text = refused.value.recipients["bob@example.test"]
    assert code == 450
    assert b"4." in text

    inline = {"name": "mine", "rules": [{"stage": "mail", "reply": {"code": 421,
              "text": "4.3.2 going down", "close": True}}]}
    response = http.put(server_path(running, "profile"), json={"profile": inline})
    assert response.status_code == 200, response.text
    assert http.get(server_path(running, "profile")).json()["name"] == "mine"
    with pytest.raises(smtplib.SMTPSenderRefused) as sender_refused:
        send(mx)
    assert sender_refused.value.smtp_code == 421


def test_sessions_and_messages_appear(running: Running, http: httpx.Client) -> None:
    mx = running.server()
    send(mx, subject="first")
    send(mx, subject="second")
    mx.wait_for(ended=2, messages=2)

    page = http.get("/api/sessions").json()
    assert page["total"] == 2
    newest, oldest = page["items"]
    assert newest["id"] > oldest["id"]  # newest first
    assert newest["outcome"] == "quit"
    assert newest["server"] == mx.name
    texts = [event["text"] for event in newest["events"]]
    assert any(text.startswith("EHLO") for text in texts)
    assert "250 2.0.0 OK: queued as" in " ".join(texts)

    assert http.get("/api/sessions", params={"limit": 1}).json()["items"][0]["id"] == newest["id"]
    second = http.get("/api/sessions", params={"limit": 1, "offset": 1}).json()
    assert second["items"][0]["id"] == oldest["id"]
    assert http.get("/api/sessions", params={"client": "127.0.0.1"}).json()["total"] == 2
    assert http.get("/api/sessions", params={"client": "192.0.2.1"}).json()["total"] == 0
    assert http.get("/api/sessions", params={"outcome": "quit"}).json()["total"] == 2
    assert http.get("/api/sessions", params={"outcome": "dropped_rst"}).json()["total"] == 0
    assert http.get(f"/api/sessions/{oldest['id']}").json() == oldest

    messages = http.get("/api/messages").json()
    assert [m["subject"] for m in messages["items"]] == ["second", "first"]
    first = messages["items"][1]
    parsed = http.get(f"/api/messages/{first['id']}").json()
    assert parsed["mail_from"] == "alice@example.test"
    assert parsed["rcpt_tos"] == ["bob@example.test"]
    assert {"name": "Subject", "value": "first"} in parsed["headers"]
    assert parsed["text"].strip() == "Hi Bob."
    raw = http.get(f"/api/messages/{first['id']}/raw")
    assert raw.headers["content-type"] == "message/rfc822"
    assert raw.content == mx.messages[0].content
    assert f'filename="{first["id"]}.eml"' in raw.headers["content-disposition"]


def test_reset_clears_sessions_messages_and_greylist_memory(
    running: Running, http: httpx.Client
) -> None:
    mx = running.server()
    greylist = {"stage": "rcpt", "when": {"first_attempts": 1},
                "reply": {"code": 451, "text": "4.7.1 Greylisted"}}
    assert http.post(server_path(running, "rules"), json=greylist).status_code == 201
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(mx)
    send(mx)  # the retry passes: the server remembers the first attempt
    mx.wait_for(ended=2, messages=1)
    assert http.get(server_path(running)).json()["sessions"] == 2

    info = http.post(server_path(running, "reset")).json()
    assert (info["sessions"], info["messages"], info["rules"]) == (0, 0, 1)
    assert http.get("/api/sessions").json()["total"] == 0
    assert http.get("/api/messages").json()["total"] == 0
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(mx)  # greylisted again: the attempt counter was forgotten


def test_bad_rule_is_422_and_the_old_rules_stay(running: Running, http: httpx.Client) -> None:
    mx = running.server()
    good = {"stage": "mail", "name": "no-mail", "reply": {"code": 550, "text": "5.7.1 Go away"}}
    assert http.post(server_path(running, "rules"), json=good).status_code == 201
    before = http.get(server_path(running, "rules")).json()

    bad = {"stage": "rcpt", "reply": {"code": 700}}
    response = http.post(server_path(running, "rules"), json=bad)
    assert response.status_code == 422
    assert response.json() == {"status": 422,
                               "error": response.json()["error"]}  # nothing else
    assert "reply.code" in response.json()["error"]
    assert "\n" not in response.json()["error"]
    two_actions = {"stage": "rcpt", "drop": "rst", "reply": {"code": 450}}
    assert "exactly one action" in http.post(server_path(running, "rules"),
                                             json=two_actions).json()["error"]
    bad_profile = {"profile": {"rules": [good, bad]}}
    assert http.put(server_path(running, "profile"), json=bad_profile).status_code == 422
    assert http.put(server_path(running, "profile"),
                    json={"catalog": "no-such-profile"}).status_code == 422

    assert http.get(server_path(running, "rules")).json() == before
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send(mx)
    assert refused.value.smtp_code == 550

    removed = http.delete(server_path(running, "rules", "no-mail"))
    assert [r["label"] for r in removed.json()] == ["no-mail"]
    send(mx)


def test_unknown_things_are_404(running: Running, http: httpx.Client) -> None:
    for path in ["/api/servers/nope", "/api/servers/nope/rules", "/api/sessions/999999",
                 "/api/messages/999999", "/api/messages/999999/raw", "/api/catalog/nope",
                 "/api/codes/9.9.9", "/api/nothing-here"]:
        response = http.get(path)
        assert response.status_code == 404, path
        assert set(response.json()) == {"status", "error"}
    assert http.delete(server_path(running, "rules", "nope")).status_code == 404
    assert http.get("/api/sessions", params={"server": "nope"}).status_code == 404


def test_listener_refuse_then_open(running: Running, http: httpx.Client) -> None:
    mx = running.server()
    response = http.put(server_path(running, "listener"), json={"state": "refuse"})
    assert response.json()["listener"] == "refuse"
    with pytest.raises(ConnectionRefusedError):
        send(mx)
    assert http.put(server_path(running, "listener"), json={"state": "open"}).status_code == 200
    send(mx)
    bad = http.put(server_path(running, "listener"), json={"state": "closed"})
    assert bad.status_code == 422


def test_catalog_codes_and_ca(http: httpx.Client) -> None:
    entries = http.get("/api/catalog").json()
    names = {entry["name"] for entry in entries}
    assert {"sink", "4.4.316-connection-refused", "4.4.7-greylist-attempts"} <= names
    one = http.get("/api/catalog/4.4.316-connection-refused").json()
    assert one["code"] == "4.4.316"
    assert "what the relay sees" in one["explanation"]
    code = http.get("/api/codes/450 4.4.316").json()
    assert code["code"] == "4.4.316"
    assert "4.4.316-connection-refused" in code["profiles"]
    assert "Fixes:" in code["explanation"]
    ca = http.get("/api/ca.pem")
    assert ca.headers["content-type"] == "application/x-pem-file"
    assert ca.text.startswith("-----BEGIN CERTIFICATE-----")


def test_catalog_names_cannot_reach_files(running: Running, http: httpx.Client) -> None:
    """A catalog name is looked up in the catalog only: never a path, never a file here."""
    for name in ["../../etc/passwd", "/etc/passwd", "README.md", "pyproject"]:
        response = http.put(server_path(running, "profile"), json={"catalog": name})
        assert response.status_code == 422, name
    assert http.get("/api/catalog/README.md").status_code == 404


def test_events_stream_sessions_live(running: Running, http: httpx.Client) -> None:
    mx = running.server()
    kinds: list[str] = []
    with http.stream("GET", "/api/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")  # the stream is open: now send
        send(mx)
        for line in lines:
            if line.startswith("data: "):
                data = json.loads(line.removeprefix("data: "))
                kinds.append(data["kind"])
                if data["kind"] == "ended":
                    assert data["session"]["outcome"] == "quit"
                    break
    assert kinds == ["started", "ended"]


def test_guard_body_cap_origin_and_page(running: Running, http: httpx.Client) -> None:
    huge = {"stage": "rcpt", "name": "x" * 300_000, "drop": "rst"}
    response = http.post(server_path(running, "rules"), json=huge)
    assert response.status_code == 413
    assert response.json()["status"] == 413
    assert http.get(server_path(running, "rules")).json() == []

    other_site = http.post(server_path(running, "reset"),
                           headers={"origin": "http://attacker.example"})
    assert other_site.status_code == 403
    rebound = http.get("/api/servers", headers={"host": "fakemx.attacker.example"})
    assert rebound.status_code == 403

    page = http.get("/")
    assert page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert http.get("/web/app.js").status_code == 200
    assert http.get("/openapi.json").json()["info"]["title"] == "fakemx"


def test_token_protected_api(tmp_path: Path) -> None:
    with running_api(tmp_path, token="s3cret-token", api_host="0.0.0.0") as running:
        anonymous = running.http().get("/api/servers")
        assert anonymous.status_code == 401
        assert anonymous.json()["status"] == 401
        assert running.http(token="wrong").get("/api/servers").status_code == 401
        assert running.http(token="s3cret-token").get("/api/servers").status_code == 200
        assert running.http().get("/openapi.json").status_code == 401

        # A browser logs in once through the address bar and then carries a cookie.
        browser = running.http()
        login = browser.get("/", params={"token": "s3cret-token"}, follow_redirects=True)
        assert login.status_code == 200  # followed the redirect to /, cookie set
        assert login.url.query == b""
        assert browser.get("/api/version").status_code == 200


def test_several_servers_by_name(tmp_path: Path) -> None:
    names = ["sink", "4.4.7-defer-rcpt"]
    with running_api(tmp_path, ["sink", "4.4.7-defer-rcpt"], names=names) as running:
        http = running.http()
        assert [s["name"] for s in http.get("/api/servers").json()] == names
        send(running.server("sink"))
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            send(running.server("4.4.7-defer-rcpt"))
        for mx in running.servers:
            mx.wait_for(ended=1)
        assert http.get("/api/sessions").json()["total"] == 2
        only = http.get("/api/sessions", params={"server": "4.4.7-defer-rcpt"}).json()
        assert [s["server"] for s in only["items"]] == ["4.4.7-defer-rcpt"]

        switched = http.put("/api/servers/4.4.7-defer-rcpt/profile", json={"catalog": "sink"})
        assert switched.json()["name"] == "4.4.7-defer-rcpt"  # the name stays, the profile moves
        send(running.server("4.4.7-defer-rcpt"))
        assert http.get("/api/servers/sink").json()["profile"] == "sink"


# region the command line -------------------------------------------------------------


def test_cli_refuses_an_exposed_api_without_a_token(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("FAKEMX_API_TOKEN", raising=False)
    for command in (["serve", "--port", "0"], ["lab", "--base-port", "0"]):
        assert main([*command, "--state-dir", str(tmp_path), "--api", "0.0.0.0:0"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1, err
        assert "--api-token" in err
        assert "Traceback" not in err
    assert main(["serve", "--api", "nonsense:port"]) == 2
    assert "expected [HOST:]PORT" in capsys.readouterr().err


def test_cli_serve_with_api(tmp_path: Path) -> None:
    """A real ``fakemx serve --api``: ready lines for SMTP and API, control, clean stop."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fakemx", "serve", "--port", "0", "--api", "0",
         "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        serving = process.stdout.readline().decode()
        api_line = process.stdout.readline().decode()
        smtp = re.search(r"127\.0\.0\.1:(\d+)", serving)
        assert smtp is not None, serving
        smtp_port = int(smtp.group(1))
        url = re.fullmatch(r"fakemx: API on (http://127\.0\.0\.1:\d+)\n", api_line)
        assert url is not None, api_line
        with httpx.Client(base_url=url.group(1), timeout=TIMEOUT_SECONDS) as http:
            [server] = http.get("/api/servers").json()
            assert server["port"] == smtp_port
            http.put(f"/api/servers/{server['name']}/profile",
                     json={"catalog": "5.1.1-unknown-recipient"}).raise_for_status()
            with smtplib.SMTP("127.0.0.1", smtp_port, timeout=TIMEOUT_SECONDS) as client:
                assert client.ehlo()[0] == 250
                assert client.mail("a@example.test")[0] == 250
                assert client.rcpt("bob@example.test")[0] == 550
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=TIMEOUT_SECONDS * 2)
    assert process.returncode == 0, err
    assert b"Traceback" not in err


# endregion


def test_cli_lab_with_api(tmp_path: Path) -> None:
    """``fakemx lab --api``: every catalog server behind one API, addressed by profile name."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fakemx", "lab", "--base-port", "0", "--api", "0",
         "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        lines = iter(process.stdout.readline, b"")
        api_line = next(line for line in lines if line.startswith(b"fakemx: API on "))
        url = api_line.decode().removeprefix("fakemx: API on ").strip()
        with httpx.Client(base_url=url, timeout=TIMEOUT_SECONDS) as http:
            servers = http.get("/api/servers").json()
            catalog = http.get("/api/catalog").json()
            assert sorted(s["name"] for s in servers) == sorted(e["name"] for e in catalog)
            refused = http.get("/api/servers/4.4.316-connection-refused").json()
            assert refused["listener"] == "refuse"
            http.put("/api/servers/4.4.316-connection-refused/listener",
                     json={"state": "open"}).raise_for_status()
            with smtplib.SMTP("127.0.0.1", refused["port"], timeout=TIMEOUT_SECONDS) as client:
                assert client.noop()[0] == 250
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=TIMEOUT_SECONDS * 2)
    assert process.returncode == 0, err


def test_stops_while_a_page_listens(tmp_path: Path) -> None:
    """An open event stream ends when fakemx stops; it does not hold the shutdown."""
    server = running_api(tmp_path)
    running = server.__enter__()
    with httpx.Client(timeout=TIMEOUT_SECONDS) as page, page.stream(
        "GET", f"{running.url}/api/events"
    ) as stream:
        lines = stream.iter_lines()
        assert next(lines).startswith("retry:")
        server.__exit__(None, None, None)  # fails if the stop takes long
        assert [line for line in lines if line and not line.startswith(":")] == []
