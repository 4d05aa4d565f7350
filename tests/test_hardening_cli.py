"""User mistakes on the command line: exit 2 and one line naming the option and the fix.

Every case runs the real ``fakemx`` process; none may end in "internal error ...
please report it" (exit 70) or a traceback. Also: the API token from a file, so
it does not show in ``ps``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from wire import dialogue

from fakemx import FakeMX

TIMEOUT_SECONDS = 30.0


def fakemx(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fakemx", *args], capture_output=True,
                          text=True, timeout=TIMEOUT_SECONDS, env=env)


def assert_one_line_usage_error(result: subprocess.CompletedProcess[str], option: str) -> str:
    """Exit 2, nothing on stdout, one stderr line that names ``option`` and says what to do."""
    err = result.stderr
    assert result.returncode == 2, (result.returncode, err)
    assert err.count("\n") == 1, err
    assert err.endswith("\n"), err
    assert "internal error" not in err, err
    assert "Traceback" not in err, err
    assert option in err, err
    assert err.rstrip().endswith(")"), f"no fix in parentheses: {err}"
    return err


@pytest.mark.parametrize(("command", "value"), [
    *[(["serve", "--port", "0"], value) for value in ["0", "-1", "nan", "inf", "-inf", "soon"]],
    (["lab", "--base-port", "0"], "0"),
    (["dns", "4.4.312-servfail", "--port", "0"], "inf"),
])
def test_time_scale_must_be_finite_and_above_zero(
    tmp_path: Path, command: list[str], value: str
) -> None:
    result = fakemx(*command, "--state-dir", str(tmp_path), f"--time-scale={value}")
    err = assert_one_line_usage_error(result, "--time-scale")
    assert "finite number above 0" in err


@pytest.mark.parametrize(("command", "option", "value"), [
    *[(["serve"], "--port", value) for value in ["70000", "65536", "-1", "http"]],
    (["serve", "--port", "0"], "--dns-port", "70000"),
    (["lab"], "--base-port", "99999"),
    (["lab"], "--base-port", "-1"),
    (["dns", "4.4.312-servfail"], "--port", "70000"),
])
def test_ports_must_be_0_to_65535(
    tmp_path: Path, command: list[str], option: str, value: str
) -> None:
    result = fakemx(*command, "--state-dir", str(tmp_path), f"{option}={value}")
    err = assert_one_line_usage_error(result, option)
    assert "0..65535" in err


@pytest.mark.parametrize("value", ["70000", "127.0.0.1:99999", "[::1]:65536"])
def test_api_port_must_be_0_to_65535(tmp_path: Path, value: str) -> None:
    result = fakemx("serve", "--port", "0", "--state-dir", str(tmp_path), "--api", value)
    err = assert_one_line_usage_error(result, "--api")
    assert "0..65535" in err


@pytest.mark.parametrize("hostname", ["mx\r\n250 injected", "two words", ""])
def test_hostname_cannot_add_greeting_lines(tmp_path: Path, hostname: str) -> None:
    result = fakemx("serve", "--port", "0", "--state-dir", str(tmp_path), "--hostname", hostname)
    assert_one_line_usage_error(result, "--hostname")


def test_lab_port_means_base_port(tmp_path: Path) -> None:
    result = fakemx("lab", "--port", "2600", "--state-dir", str(tmp_path))
    err = assert_one_line_usage_error(result, "--base-port 2600")
    assert "--port" in err  # names what was given, then what to give


def test_lab_base_port_leaves_room_for_every_profile(tmp_path: Path) -> None:
    result = fakemx("lab", "--base-port", "65500", "--state-dir", str(tmp_path))
    err = assert_one_line_usage_error(result, "--base-port")
    assert "--base-port 0 for free ports" in err


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["lab", "--base-port", "0"],
                                     ["ca"]])
@pytest.mark.parametrize("where", ["under_a_file", "a_file"])
def test_state_dir_that_cannot_be_a_directory(
    tmp_path: Path, command: list[str], where: str
) -> None:
    a_file = tmp_path / "plain-file"
    a_file.write_text("not a directory\n")
    state_dir = a_file / "state" if where == "under_a_file" else a_file
    result = fakemx(*command, "--state-dir", str(state_dir))
    err = assert_one_line_usage_error(result, "--state-dir")
    assert str(state_dir) in err


def test_state_dir_made_by_the_cli_is_owner_only(tmp_path: Path) -> None:
    state_dir = tmp_path / "new" / "state"
    result = fakemx("ca", "--state-dir", str(state_dir))
    assert result.returncode == 0, result.stderr
    assert state_dir.stat().st_mode & 0o777 == 0o700


def test_unwritable_outputs_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir" / "ca.pem"
    err = assert_one_line_usage_error(
        fakemx("ca", "--state-dir", str(tmp_path / "s"), "--out", str(missing)), "--out")
    assert str(missing) in err


def test_export_to_a_path_under_a_file_is_one_line(tmp_path: Path) -> None:
    with FakeMX(state_dir=tmp_path / "state") as mx:
        with socket.create_connection((mx.host, mx.port), timeout=TIMEOUT_SECONDS):
            pass
        mx.wait_for(ended=1)
    a_file = tmp_path / "plain-file"
    a_file.write_text("")
    result = fakemx("export", "--state-dir", str(tmp_path / "state"),
                    "--out", str(a_file / "eml"))
    assert_one_line_usage_error(result, "--out")


@contextmanager
def taken_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_lab_port_in_use_names_base_port(tmp_path: Path) -> None:
    with taken_port() as port:
        # The taken port is the lab's fourth: base-port + 3.
        result = fakemx("lab", "--base-port", str(port - 3), "--state-dir", str(tmp_path))
    err = assert_one_line_usage_error(result, "--base-port")
    assert "address already in use" in err
    assert re.search(r"--port\b", err) is None, err


def test_dns_port_in_use_names_dns_port(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = fakemx("serve", "4.4.312-servfail", "--port", "0", "--dns-port", str(port),
                        "--state-dir", str(tmp_path))
    err = assert_one_line_usage_error(result, "--dns-port")
    assert re.search(r"--port\b", err) is None, err


def test_journal_shows_client_bytes_escaped(tmp_path: Path) -> None:
    """Bytes that are not UTF-8, and a terminal escape, in a HELO: printed as \\xNN."""
    with FakeMX(state_dir=tmp_path) as mx:
        with socket.create_connection((mx.host, mx.port), timeout=TIMEOUT_SECONDS) as sock:
            file = sock.makefile("rb")
            assert file.readline().startswith(b"220")
            sock.sendall(b"EHLO \xff\xfe.example\x1b[2J\r\nQUIT\r\n")
            while file.readline():
                pass
        mx.wait_for(ended=1)
    result = subprocess.run([sys.executable, "-m", "fakemx", "journal", "--events",
                             "--state-dir", str(tmp_path)], capture_output=True,
                            timeout=TIMEOUT_SECONDS)
    assert result.returncode == 0, result.stderr
    assert b"C: EHLO \\xff\\xfe.example\\x1b[2J\n" in result.stdout
    assert b"\x1b" not in result.stdout


# region the API token from a file ----------------------------------------------------


@contextmanager
def serve_with_api(tmp_path: Path, *args: str,
                   env: dict[str, str] | None = None) -> Iterator[tuple[int, str]]:
    """``fakemx serve --api 0 ARGS``: yields its pid and the API's URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fakemx", "serve", "--port", "0", "--api", "0",
         "--state-dir", str(tmp_path), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        assert process.stdout is not None
        process.stdout.readline()  # serving ...
        api_line = process.stdout.readline().decode()
        found = re.fullmatch(r"fakemx: API on (http://\S+)\n", api_line)
        assert found, api_line + (process.stderr.read().decode() if process.stderr else "")
        yield process.pid, found[1]
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=TIMEOUT_SECONDS)
        assert process.returncode == 0, err
        assert b"Traceback" not in err


def test_api_token_file_keeps_the_token_out_of_ps(tmp_path: Path) -> None:
    token = "file-token-7f3a9c"
    token_file = tmp_path / "token"
    token_file.write_text(f"{token}\n")  # as `echo TOKEN > FILE` writes it
    with serve_with_api(tmp_path, "--api-token-file", str(token_file)) as (pid, url):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        assert token.encode() not in cmdline
        with httpx.Client(base_url=url, timeout=5) as http:
            assert http.get("/api/version").status_code == 401
            # RFC 7235 2.1: the auth scheme is case-insensitive.
            for scheme in ("Bearer", "bearer", "BEARER"):
                answer = http.get("/api/version", headers={"authorization": f"{scheme} {token}"})
                assert answer.status_code == 200, scheme
            assert http.get("/api/version",
                            headers={"authorization": f"bearer {token}x"}).status_code == 401
            assert http.get("/api/version",
                            headers={"authorization": f"Basic {token}"}).status_code == 401


def test_api_token_from_the_environment(tmp_path: Path) -> None:
    env = {**os.environ, "FAKEMX_API_TOKEN": "env-token-1b2c"}
    with serve_with_api(tmp_path, env=env) as (_pid, url), \
            httpx.Client(base_url=url, timeout=5) as http:
        assert http.get("/api/version").status_code == 401
        ok = http.get("/api/version", headers={"authorization": "bearer env-token-1b2c"})
        assert ok.status_code == 200


@pytest.mark.parametrize(("content", "problem"), [
    (None, "cannot read it"),
    ("", "empty"),
    ("\n", "empty"),
    ("one\ntwo\n", "more than one line"),
])
def test_api_token_file_mistakes_are_one_line(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    token_file = tmp_path / "token"
    if content is not None:
        token_file.write_text(content)
    result = fakemx("serve", "--port", "0", "--state-dir", str(tmp_path), "--api", "0",
                    "--api-token-file", str(token_file))
    err = assert_one_line_usage_error(result, "--api-token-file")
    assert problem in err


def test_help_documents_the_token_file_and_the_environment() -> None:
    result = fakemx("serve", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--api-token-file FILE" in text
    assert "$FAKEMX_API_TOKEN" in text


# endregion


def test_positive_control_good_options_still_serve(tmp_path: Path) -> None:
    """The same options with good values start and serve mail."""
    process = subprocess.Popen(
        [sys.executable, "-m", "fakemx", "serve", "--port", "0", "--time-scale", "0.01",
         "--state-dir", str(tmp_path / "fresh")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    with process:
        assert process.stdout is not None
        found = re.search(rb"127\.0\.0\.1:(\d+)", process.stdout.readline())
        assert found
        assert dialogue("127.0.0.1", int(found[1])).code("body") == 250
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT_SECONDS) == 0
