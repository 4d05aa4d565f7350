"""The CLI: in-process through main(argv), and as a real process for serve and lab."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest
from wire import connect, dialogue, read_reply

from fakemx.cli import main
from fakemx.profiles import catalog

ADDRESS = re.compile(rb"(\d+\.\d+\.\d+\.\d+):(\d+)")


def test_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert len(entries) >= 20
    assert {"name", "code", "title", "relay_sees"} <= set(entries[0])
    codes = {entry["code"] for entry in entries}
    assert {"4.4.315", "4.4.316", "4.4.317", "4.4.318", "4.4.7"} <= codes


def test_list_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    assert "4.4.316  4.4.316-connection-refused" in capsys.readouterr().out


def test_explain_code_and_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "450 4.4.316"]) == 0
    out = capsys.readouterr().out
    assert "open TCP port 25 on the firewall" in out
    assert "4.4.316-connection-refused" in out
    assert main(["explain", "4.4.7-greylist-attempts"]) == 0
    assert "code: 4.4.7" in capsys.readouterr().out


def test_explain_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["explain", "9.9.9"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "neither a known code nor a profile" in err


def test_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = Path("profiles/4.4.316-connection-refused.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('[[rules]]\nstage = "rcpt"\nreply = { code = 700 }\n')
    assert main(["check", str(good)]) == 0
    assert main(["check", str(good), str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"{bad}: rules[0].reply.code: 700 is not an SMTP reply code (use 200-599)\n"


def test_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "rules" in schema["properties"]


def test_unknown_profile(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "4.4.316-conection-refused"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        "fakemx: unknown profile '4.4.316-conection-refused' (nearest: 4.4.316-connection-refused"
    )
    assert err.endswith("see `fakemx list`)\n")
    assert err.count("\n") == 1


def test_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--state-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"fakemx: cannot listen on 127.0.0.1:{port}: address already in use "
        "(choose another --port, or --port 0 for a free one)\n"
    )


@contextmanager
def running(*args: str) -> Iterator[tuple[subprocess.Popen[bytes], bytes]]:
    """Start ``python -m fakemx ARGS`` and yield it with its first output line."""
    with subprocess.Popen(
        [sys.executable, "-m", "fakemx", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        try:
            assert process.stdout is not None
            yield process, process.stdout.readline()
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


def test_serve_prints_a_ready_line_and_stops_on_sigterm(tmp_path: Path) -> None:
    with running("serve", "sink", "--port", "0", "--state-dir", str(tmp_path)) as (process, line):
        match = ADDRESS.search(line)
        assert match, line
        host, port = match[1].decode(), int(match[2])
        assert dialogue(host, port).code("body") == 250
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    assert (tmp_path / "fakemx.sqlite3").is_file()


def test_serve_a_profile_file(tmp_path: Path) -> None:
    profile = tmp_path / "mine.toml"
    profile.write_text('[[rules]]\nstage = "mail"\nreply = { code = 451, text = "4.3.0 mine" }\n')
    with running("serve", str(profile), "--port", "0", "--state-dir", str(tmp_path)) as (
        process, line
    ):
        match = ADDRESS.search(line)
        assert match, line
        transcript = dialogue(match[1].decode(), int(match[2]))
        assert transcript.text("mail") == "451 4.3.0 mine\r\n"
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0


def test_lab_serves_every_profile(tmp_path: Path) -> None:
    with running("lab", "--base-port", "0", "--state-dir", str(tmp_path)) as (process, header):
        assert process.stdout is not None
        # A relay elsewhere on this machine may still retry to a port a profile now has:
        # its sessions are logged while the lab starts.
        while header.startswith(b"fakemx: session "):
            header = process.stdout.readline()
        assert header.split() == [b"ADDRESS", b"PROFILE", b"CODE", b"WHAT", b"THE", b"RELAY",
                                  b"SEES"]
        assert process.stdout is not None
        rows: dict[str, tuple[str, int]] = {}
        resolvers: dict[str, tuple[str, int]] = {}
        for line in iter(process.stdout.readline, b""):
            if line.startswith(b"fakemx: lab ready"):
                break
            if line.startswith(b"fakemx: session "):
                continue
            if line.startswith(b"DNS for "):
                name, address = line[8:].split(b": ", 1)
                found = ADDRESS.search(address)
                assert found, line
                resolvers[name.decode()] = (found[1].decode(), int(found[2]))
                continue
            match = ADDRESS.match(line)
            assert match, line
            rows[line.split()[1].decode()] = (match[1].decode(), int(match[2]))
        assert len(rows) >= 20
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(rows["4.4.316-connection-refused"], timeout=2)
        with connect(*rows["4.4.317-greeting-421"]) as sock:
            assert read_reply(sock).startswith(b"421 4.3.2")
        # Each DNS profile's resolver address is listed, and it answers for the
        # profile's lab domain, which a relay looks up (SERVFAIL here).
        assert set(resolvers) == {p.name for p in catalog() if p.dns is not None}
        host, port = resolvers["4.4.312-servfail"]
        query = dns.message.make_query("4.4.312-servfail.lab.fakemx.test", "MX")
        answer = dns.query.udp(query, host, port=port, timeout=5)
        assert dns.rcode.to_text(answer.rcode()) == "SERVFAIL"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
