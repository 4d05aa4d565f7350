"""Security promises: fakemx never sends mail anywhere, profile text is data, export
stays in its directory, the state dir is the owner's only."""

from __future__ import annotations

import ast
import smtplib
from pathlib import Path

from wire import dialogue

from fakemx import FakeMX, profile_from_data
from fakemx.store import Store, export_messages

PACKAGE = Path(__file__).resolve().parent.parent / "fakemx"


PROBE = PACKAGE / "diagnose"  # `fakemx diagnose`: the one part that connects out


def test_fakemx_has_no_code_that_connects_out() -> None:
    """No SMTP client and no outgoing connection in the server: it cannot relay.

    The one connect() is the blackhole listener's filler, to fakemx's own socket;
    the probe (fakemx/diagnose) is checked by the next test.
    """
    outgoing = []
    for path in PACKAGE.rglob("*.py"):
        if PROBE in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names]
                module = getattr(node, "module", None) or ""
                if {"smtplib", "aiosmtplib"} & {module, *names}:
                    outgoing.append(f"{path.name}: imports {module or names}")
            if isinstance(node, ast.Attribute) and node.attr in (
                "create_connection", "open_connection", "connect", "sendmail", "connect_ex"
            ):
                owner = node.value.id if isinstance(node.value, ast.Name) else ""
                if owner != "sqlite3":  # opening the store is not a network connection
                    outgoing.append(f"{path.name}: {owner}.{node.attr}")
    assert outgoing == ["listener.py: filler.connect"], outgoing


def test_the_probe_sends_no_message() -> None:
    """Every command fakemx/diagnose writes is EHLO (HELO to a server without ESMTP),
    STARTTLS, MAIL FROM:<>, RCPT TO or QUIT.

    Read from the code: each string (or f-string's start) given to a send, sendall,
    command or expect call. The recipient cannot smuggle a DATA in: --rcpt and the
    API refuse whitespace (tests/test_diagnose.py, tests/test_diagnose_api.py).
    """
    sent: set[str] = set()
    for path in PROBE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("send", "sendall", "command", "expect")):
                continue
            for argument in node.args:
                first = argument.values[0] if isinstance(argument, ast.JoinedStr) else argument
                if isinstance(first, ast.Constant) and isinstance(first.value, str | bytes):
                    text = first.value.decode() if isinstance(first.value, bytes) else first.value
                    if text[:1].isupper():
                        sent.add(text.split(" ")[0].split(":")[0].strip())
    assert sent == {"EHLO", "HELO", "STARTTLS", "MAIL", "RCPT", "QUIT"}, sent


def test_profile_text_is_data_not_code() -> None:
    # str.format would reach attributes through the placeholders; fakemx fills a fixed set.
    text = "4.7.1 {client_ip} {client_ip.__class__} {0} {__import__}"
    rules = [{"stage": "rcpt", "reply": {"code": 550, "text": text}}]
    profile = profile_from_data({"rules": rules}, "test")
    with FakeMX(profile) as mx, smtplib.SMTP(mx.host, mx.port, timeout=5) as client:
        client.ehlo("relay.example.net")
        client.mail("a@sender.example")
        code, reply = client.rcpt("b@dest.example")
    assert (code, reply) == (550, b"4.7.1 127.0.0.1 {client_ip.__class__} {0} {__import__}")


def test_export_cannot_write_outside_its_directory(tmp_path: Path) -> None:
    state, out = tmp_path / "state", tmp_path / "out"
    hostile = b"Subject: ../../../etc/passwd\r\nMessage-ID: <../../x>\r\n\r\nx"
    with FakeMX(state_dir=state) as mx, smtplib.SMTP(mx.host, mx.port, timeout=5) as client:
        client.sendmail("../../a@sender.example", ["../b@dest.example"], hostile)
    store = Store(state)
    try:
        assert export_messages(store, out, "eml") == 1
        assert export_messages(store, out / "md", "maildir") == 1
    finally:
        store.close()
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert {w for w in written if not w.startswith("state/")} == {
        "out/1.eml", *(f"out/md/new/{p.name}" for p in (out / "md" / "new").iterdir())
    }


def test_state_dir_is_owner_only(tmp_path: Path) -> None:
    with FakeMX(state_dir=tmp_path / "state"):
        pass
    assert ((tmp_path / "state").stat().st_mode & 0o777) == 0o700
    assert ((tmp_path / "state" / "ca.key").stat().st_mode & 0o777) == 0o600
    for name in ("fakemx.sqlite3", "fakemx.sqlite3-wal", "fakemx.sqlite3-shm"):
        path = tmp_path / "state" / name
        assert not path.exists() or (path.stat().st_mode & 0o777) == 0o600, name


def test_an_existing_state_dir_and_store_become_owner_only(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    (state / "fakemx.sqlite3").touch(mode=0o644)
    (state / "fakemx.sqlite3").chmod(0o644)
    with FakeMX(state_dir=state) as mx:
        assert dialogue(mx.host, mx.port).code("body") == 250
        assert ((state / "fakemx.sqlite3-wal").stat().st_mode & 0o777) == 0o600
    assert (state.stat().st_mode & 0o777) == 0o700
    assert ((state / "fakemx.sqlite3").stat().st_mode & 0o777) == 0o600
