"""Issue #18, run it anywhere: --version, FAKEMX_* variables, the container, the session
log, message search/delete/retention/export, packaging and the CI recipes.

Real processes (``python -m fakemx``), sockets, SMTP and HTTP; no mocks, no fixed sleeps.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import re
import shutil
import site
import smtplib
import socket
import sqlite3
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

import httpx
import pytest
import yaml
from processes import ADDRESS, TIMEOUT, clean_env, fakemx_run, process
from wire import dialogue

import fakemx
from fakemx import FakeMX, config
from fakemx.cli import _parser, main

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "run-anywhere-token"


def send(port: int, sender: str, recipient: str, subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=TIMEOUT) as client:
        client.sendmail(sender, [recipient], f"Subject: {subject}\r\n\r\nbody\r\n".encode())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# region 1. --version ----------------------------------------------------------------


def test_version_is_the_installed_package_version() -> None:
    result = fakemx_run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"fakemx {metadata.version('fakemx')}\n"
    assert metadata.version("fakemx") == fakemx.__version__


# region 2. one configuration model ---------------------------------------------------


def test_variables_configure_serve_and_flags_win(tmp_path: Path) -> None:
    env = clean_env(FAKEMX_PROFILE="4.4.318-rst-after-mail", FAKEMX_PORT="0",
                    FAKEMX_STATE_DIR=str(tmp_path), FAKEMX_HOSTNAME="mx.env.test",
                    FAKEMX_API="127.0.0.1:0", FAKEMX_API_TOKEN=TOKEN)
    with process("serve", "--hostname", "mx.flag.test", env=env) as fakemx:
        port = fakemx.port("fakemx: serving 4.4.318-rst-after-mail on")
        api = fakemx.api()
        transcript = dialogue("127.0.0.1", port)
        assert transcript.text("greeting").startswith("220 mx.flag.test")  # the flag won
        assert transcript.how == "rst"
        answer = httpx.get(f"{api}/api/servers", headers={"authorization": f"Bearer {TOKEN}"})
        assert answer.json()[0]["profile"] == "4.4.318-rst-after-mail"
    assert (tmp_path / "fakemx.sqlite3").is_file()


@pytest.mark.parametrize(("variable", "value", "problem"), [
    ("FAKEMX_PORT", "99999", "0..65535"),
    ("FAKEMX_TIME_SCALE", "0", "finite number above 0"),
    ("FAKEMX_SEED", "soon", "whole number"),
    ("FAKEMX_HOSTNAME", "two words", "host name"),
    ("FAKEMX_LOG_FORMAT", "xml", "human or json"),
    ("FAKEMX_API", "here", "[HOST:]PORT"),
    ("FAKEMX_KEEP_MESSAGES", "0", "whole number from 1"),
    ("FAKEMX_KEEP_DAYS", "-1", "days above 0"),
])
def test_a_bad_variable_is_one_line_naming_it(
    tmp_path: Path, variable: str, value: str, problem: str
) -> None:
    result = fakemx_run("serve", "--state-dir", str(tmp_path),
                        env=clean_env(**{"FAKEMX_PORT": "0", variable: value}))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(f"fakemx: {variable}={value!r}: "), result.stderr
    assert problem in result.stderr


def test_flag_errors_stay_as_they_were_and_the_variable_is_not_read(tmp_path: Path) -> None:
    result = fakemx_run("serve", "--port", "99999", env=clean_env(FAKEMX_PORT="x"))
    assert result.returncode == 2
    assert "--port" in result.stderr
    assert "FAKEMX_PORT" not in result.stderr


def test_both_token_variables_and_an_exposed_api_without_one(tmp_path: Path) -> None:
    both = fakemx_run("serve", "--port", "0", "--state-dir", str(tmp_path), "--api", "0",
                      env=clean_env(FAKEMX_API_TOKEN="a", FAKEMX_API_TOKEN_FILE="/x"))
    assert both.returncode == 2
    assert "FAKEMX_API_TOKEN and FAKEMX_API_TOKEN_FILE are both set" in both.stderr
    exposed = fakemx_run("serve", "--port", "0", "--state-dir", str(tmp_path),
                         env=clean_env(FAKEMX_API="0.0.0.0:0"))
    assert exposed.returncode == 2
    assert exposed.stderr.count("\n") == 1
    assert exposed.stderr.startswith("fakemx: FAKEMX_API 0.0.0.0: "), exposed.stderr
    assert "FAKEMX_API_TOKEN" in exposed.stderr


def test_every_variable_is_in_the_docs_table_and_the_help() -> None:
    text = (ROOT / "docs/run-anywhere.md").read_text()
    documented = set(re.findall(r"^\| `(FAKEMX_[A-Z_]+)` \|", text, re.MULTILINE))
    assert documented == set(config.environment_names())
    for command in ("serve", "lab"):
        help_text = fakemx_run(command, "--help").stdout
        for option in config.OPTIONS:
            if command in option.commands:
                assert f"[${option.env}]" in " ".join(help_text.split()), option.env


def test_run_starts_the_lab_when_fakemx_mode_says_so(tmp_path: Path) -> None:
    env = clean_env(FAKEMX_MODE="lab", FAKEMX_BASE_PORT="0", FAKEMX_STATE_DIR=str(tmp_path))
    with process("run", env=env) as fakemx:
        fakemx.wait_for("fakemx: lab ready")
    bad = fakemx_run("run", env=clean_env(FAKEMX_MODE="labb"))
    assert bad.returncode == 2
    assert bad.stderr == ("fakemx: FAKEMX_MODE='labb': not a mode (use serve, one profile,"
                          " or lab, every catalog profile)\n")


def dockerfile_env() -> dict[str, str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found = re.search(r"^ENV (.+)$", text, re.MULTILINE)
    assert found
    return dict(pair.split("=", 1) for pair in found[1].split())


def test_the_image_serves_one_profile_by_variables_and_keeps_the_compose_lab() -> None:
    text = (ROOT / "Dockerfile").read_text()
    found = re.search(r"^CMD (\[.*\])$", text, re.MULTILINE)
    assert found
    assert json.loads(found[1]) == ["fakemx", "run"]
    env = dockerfile_env()
    assert set(env) - {"PYTHONUNBUFFERED", "PATH"} <= set(config.environment_names())
    args = _parser().parse_args([env["FAKEMX_MODE"]])
    config.resolve(args, {**env, "FAKEMX_API_TOKEN": TOKEN})
    assert (args.command, args.host, args.port) == ("serve", "0.0.0.0", 2525)
    assert (args.api, str(args.state_dir)) == ("0.0.0.0:8025", "/var/lib/fakemx")
    assert "COPY deploy/healthcheck.py /opt/fakemx/bin/fakemx-healthcheck" in text
    assert 'CMD ["fakemx-healthcheck"]' in text
    # The compose lab's command overrides the image's; its flags win over the image's
    # variables, and its API is where the health check asks.
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    command = [str(part) for part in services["fakemx"]["command"]]
    lab = _parser().parse_args(command[1:])
    config.resolve(lab, {**env, "FAKEMX_API_TOKEN": TOKEN})
    assert (lab.command, lab.base_port, lab.api) == ("lab", 2600, env["FAKEMX_API"])


# region the health check -------------------------------------------------------------


def healthcheck(**variables: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(ROOT / "deploy/healthcheck.py")],
                          capture_output=True, text=True, timeout=TIMEOUT,
                          env=clean_env(**variables))


def test_healthcheck_asks_the_api_and_opens_no_smtp_session(tmp_path: Path) -> None:
    env = clean_env(FAKEMX_PROFILE="4.4.316-connection-refused", FAKEMX_PORT="0",
                    FAKEMX_STATE_DIR=str(tmp_path), FAKEMX_API="127.0.0.1:0",
                    FAKEMX_API_TOKEN=TOKEN)
    with process("run", env=env) as fakemx:
        fakemx.wait_for("fakemx: serving")
        api = fakemx.api()
        api_port = api.rsplit(":", 1)[1]
        ok = healthcheck(FAKEMX_API=f"0.0.0.0:{api_port}", FAKEMX_API_TOKEN=TOKEN)
        assert ok.returncode == 0, ok.stderr
        wrong = healthcheck(FAKEMX_API=f"0.0.0.0:{api_port}", FAKEMX_API_TOKEN="wrong")
        assert wrong.returncode == 1
        assert "HTTP 401" in wrong.stderr
        sessions = httpx.get(f"{api}/api/sessions",
                             headers={"authorization": f"Bearer {TOKEN}"}).json()
        assert sessions["total"] == 0


def test_healthcheck_without_the_api_checks_the_smtp_port(tmp_path: Path) -> None:
    env = clean_env(FAKEMX_PORT="0", FAKEMX_STATE_DIR=str(tmp_path))
    with process("serve", env=env) as fakemx:
        port = fakemx.port("fakemx: serving")
        assert healthcheck(FAKEMX_PORT=str(port)).returncode == 0
    closed = healthcheck(FAKEMX_PORT=str(free_port()))
    assert closed.returncode == 1
    assert closed.stderr.startswith("fakemx-healthcheck: not ready: SMTP")


# region 3. a line per session ------------------------------------------------------------


def test_serve_logs_a_line_per_session_with_client_text_escaped(tmp_path: Path) -> None:
    env = clean_env(FAKEMX_STATE_DIR=str(tmp_path))
    with process("serve", "4.4.318-rst-after-mail", "--port", "0", env=env) as fakemx:
        port = fakemx.port("fakemx: serving")
        dialogue("127.0.0.1", port, helo="relay\x1b[31m.example")
        line = fakemx.wait_for("fakemx: session ")
    assert re.fullmatch(
        r"fakemx: session \d+ 127\.0\.0\.1:\d+ helo relay\\x1b\[31m\.example profile"
        r" 4\.4\.318-rst-after-mail: fakemx reset \(RST\) after MAIL; 0 messages", line), line


def test_json_log_is_one_object_per_line(tmp_path: Path) -> None:
    env = clean_env(FAKEMX_STATE_DIR=str(tmp_path), FAKEMX_LOG_FORMAT="json")
    with process("serve", "--port", "0", env=env) as fakemx:
        ready = json.loads(fakemx.wait_for("serving"))
        assert ready["event"] == "info"
        port = int(ADDRESS.findall(ready["message"])[0])
        send(port, "alice@sender.example", "bob@dest.example", "hello")
        record = json.loads(fakemx.wait_for('"event": "session"'))
    assert (record["profile"], record["messages"]) == ("sink", 1)
    assert (record["outcome"], record["broke"], record["broke_at"]) == ("quit", None, None)
    assert record["ended_by"] == "client sent QUIT"
    assert isinstance(record["helo"], str)


@pytest.mark.parametrize("as_json", [False, True])
def test_journal_follow_prints_each_session_as_it_ends(tmp_path: Path, as_json: bool) -> None:
    env = clean_env(FAKEMX_STATE_DIR=str(tmp_path))
    with process("serve", "4.4.7-defer-rcpt", "--port", "0", env=env) as server:
        port = server.port("fakemx: serving")
        follow = ["journal", "--follow", *(["--json"] if as_json else [])]
        with process(*follow, env=env) as journal:
            assert dialogue("127.0.0.1", port).code("rcpt") == 450
            line = journal.wait_for("session")
    if as_json:
        record = json.loads(line)
        assert (record["profile"], record["broke_at"]) == ("4.4.7-defer-rcpt", "rcpt")
    else:
        assert "profile 4.4.7-defer-rcpt: reply after RCPT: 450 4.2.0 <bob@dest.example>" in line


# region 4. messages ------------------------------------------------------------------------


@pytest.fixture
def three_messages(tmp_path: Path) -> Path:
    with FakeMX(state_dir=tmp_path) as mx:
        send(mx.port, "alice@sender.example", "bob@dest.example", "Invoice 1")
        send(mx.port, "carol@other.example", "bob@dest.example", "Holiday")
        send(mx.port, "alice@sender.example", "dave@dest.example", "invoice 2")
    return tmp_path


def listed(capsys: pytest.CaptureFixture[str], state: Path, *args: str) -> list[int]:
    assert main(["messages", "--state-dir", str(state), "--json", *args]) == 0
    return [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()]


def test_messages_search_by_envelope_subject_and_time(
    three_messages: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert listed(capsys, three_messages) == [1, 2, 3]
    assert listed(capsys, three_messages, "--from", "ALICE@") == [1, 3]
    assert listed(capsys, three_messages, "--to", "bob@", "--subject", "invoice") == [1]
    assert listed(capsys, three_messages, "--since", "1h") == [1, 2, 3]
    assert listed(capsys, three_messages, "--until", "1h") == []
    assert listed(capsys, three_messages, "--since", "2000-01-01", "--until", "2999-01-01") \
        == [1, 2, 3]
    assert main(["messages", "--state-dir", str(three_messages), "--since", "soon"]) == 2
    assert "'soon' is not a time" in capsys.readouterr().err


def test_messages_delete_then_export_with_the_envelope(
    three_messages: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with contextlib.closing(sqlite3.connect(three_messages / "fakemx.sqlite3")) as db:
        stored = db.execute("SELECT content FROM messages WHERE id = 3").fetchone()[0]
    assert main(["messages", "--state-dir", str(three_messages), "--from", "carol",
                 "--delete"]) == 0
    assert "deleted 1 message from" in capsys.readouterr().out
    assert listed(capsys, three_messages) == [1, 3]
    out = tmp_path / "out"
    assert main(["export", "--state-dir", str(three_messages), "--out", str(out)]) == 0
    eml = (out / "3.eml").read_bytes()
    head, _, _rest = eml.partition(b"\r\nSubject: invoice 2")
    assert head.startswith(b"Return-Path: <alice@sender.example>\r\n"
                           b"X-Original-To: dave@dest.example\r\n"
                           b"Delivered-To: dave@dest.example\r\n"
                           b"Received: from ")
    assert b" with ESMTP id 3 for <dave@dest.example>;\r\n\t" in head
    assert eml.endswith(stored)  # the message as received, under the added headers
    raw = tmp_path / "raw"
    assert main(["export", "--state-dir", str(three_messages), "--out", str(raw),
                 "--as-received"]) == 0
    assert (raw / "3.eml").read_bytes() == stored


def test_retention_at_start_and_after_each_message(tmp_path: Path) -> None:
    with FakeMX(state_dir=tmp_path) as mx:
        send(mx.port, "old@sender.example", "bob@dest.example", "old")
        send(mx.port, "new@sender.example", "bob@dest.example", "new")
    with contextlib.closing(sqlite3.connect(tmp_path / "fakemx.sqlite3")) as db, db:
        db.execute("UPDATE messages SET received = received - 3 * 86400 WHERE id = 1")
    env = clean_env(FAKEMX_STATE_DIR=str(tmp_path), FAKEMX_KEEP_MESSAGES="2")
    with process("serve", "--port", "0", "--keep-days", "1", env=env) as fakemx:
        port = fakemx.port("fakemx: serving")
        assert ids(tmp_path) == [2]  # the 3-day-old one went at start
        send(port, "a@sender.example", "bob@dest.example", "three")
        send(port, "a@sender.example", "bob@dest.example", "four")
        assert ids(tmp_path) == [3, 4]  # at most 2, applied before each 250


def ids(state: Path) -> list[int]:
    with contextlib.closing(sqlite3.connect(state / "fakemx.sqlite3")) as db:
        return [row[0] for row in db.execute("SELECT id FROM messages ORDER BY id")]


def test_api_search_and_delete(tmp_path: Path) -> None:
    env = clean_env(FAKEMX_STATE_DIR=str(tmp_path), FAKEMX_API="127.0.0.1:0")
    with process("serve", "--port", "0", env=env) as fakemx:
        port = fakemx.port("fakemx: serving")
        api = fakemx.api()
        send(port, "alice@sender.example", "bob@dest.example", "Invoice 1")
        send(port, "carol@other.example", "bob@dest.example", "Holiday")
        with httpx.Client(base_url=api, timeout=TIMEOUT) as http:
            def found(**query: str) -> list[int]:
                page = http.get("/api/messages", params=query)
                assert page.status_code == 200, page.text
                return [item["id"] for item in page.json()["items"]]

            assert found(subject="INVOICE") == [1]
            assert found(sender="carol", recipient="bob@") == [2]
            assert found(since="946684800") == [2, 1]  # 2000-01-01, in Unix seconds
            assert found(until=str(time.time() - 3600)) == []
            deleted = http.delete("/api/messages", params={"sender": "carol"})
            assert deleted.json() == {"deleted": 1, "ids": [2]}
            assert found() == [1]
            assert http.get("/api/messages/2").status_code == 404
            assert http.get("/api/messages", params={"since": "today"}).status_code == 422
    assert ids(tmp_path) == [1]


# region 5. packaging ---------------------------------------------------------------------

_OFFLINE = ("Could not find a version", "No matching distribution", "Failed to establish",
            "Temporary failure in name resolution", "Network is unreachable")


def test_sdist_and_wheel_build_and_pass_twine_check(tmp_path: Path) -> None:
    for module in ("build", "twine"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (it is in the test extras:"
                        " pip install -e '.[test]')")
    # With hatchling here, build without an isolated environment: no package index needed.
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-isolation"]
    built = subprocess.run([sys.executable, "-m", "build", *isolation, "--outdir",
                            str(tmp_path), str(ROOT)], capture_output=True, text=True,
                           timeout=600)
    if built.returncode != 0 and any(s in built.stdout + built.stderr for s in _OFFLINE):
        pytest.skip("python -m build needs hatchling from the package index, which cannot be"
                    " reached here (install hatchling to build without it)")
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    dists = sorted(str(path) for path in tmp_path.iterdir())
    version = metadata.version("fakemx")
    assert [Path(d).name for d in dists] == [f"fakemx-{version}-py3-none-any.whl",
                                             f"fakemx-{version}.tar.gz"]
    checked = subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *dists],
                             capture_output=True, text=True, timeout=120)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with zipfile.ZipFile(dists[0]) as wheel:
        names = wheel.namelist()
        entry_points = wheel.read(f"fakemx-{version}.dist-info/entry_points.txt").decode()
    assert "fakemx/profiles/sink.toml" in names
    assert "fakemx/config.py" in names
    assert "fakemx = fakemx.cli:main" in entry_points
    installed_wheel_runs(Path(dists[0]), tmp_path)


def installed_wheel_runs(wheel: Path, tmp_path: Path) -> None:
    """The wheel installed as the image installs it (Dockerfile), into a venv of its own
    (the dependencies seen from this environment): its catalog is the one inside it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # Not --system-site-packages: run from a venv (Debian's Python: scripts/test makes
    # ./.venv), that is the base interpreter's, which lacks the dependencies. A .pth file
    # adds this environment's own, after the venv's site-packages and so its fakemx.
    (site_packages,) = venv.glob("lib/python*/site-packages")
    (site_packages / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    "--no-deps", "--disable-pip-version-check", str(wheel)],
                   check=True, timeout=300)
    fakemx_command = str(venv / "bin" / "fakemx")
    env = clean_env(FAKEMX_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("PYTHONPATH", None)  # the venv's own fakemx, not a source tree's
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import fakemx.profiles as p; print(p.__file__, p.catalog_paths()"
                            ".__next__())"], capture_output=True, text=True, cwd=tmp_path,
                           env=env, timeout=60, check=True).stdout
    module, first_profile = where.split()
    assert module.startswith(str(venv)), where
    assert first_profile.startswith(str(venv)), where
    listed = subprocess.run([fakemx_command, "list"], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert "4.4.316-connection-refused" in listed.stdout
    with process("serve", "--port", "0", "--state-dir", str(tmp_path / "state"),
                 env=env, command=[fakemx_command]) as served:
        port = served.port("fakemx: serving sink on")
        send(port, "alice@example.com", "bob@example.net", "from the wheel")


# region 6. CI recipes ----------------------------------------------------------------------


def recipe_env(name: str) -> dict[str, str]:
    data = yaml.safe_load((ROOT / "docs/ci" / name).read_text())
    if name == "github-actions.yml":
        [job] = data["jobs"].values()
        variables = job["services"]["fakemx"]["env"]
    else:
        [service] = data["relay-tests"]["services"]
        variables = service["variables"]
    return {str(k): str(v) for k, v in variables.items()}


@pytest.mark.parametrize("name", ["github-actions.yml", "gitlab-ci.yml"])
def test_ci_recipe_starts_fakemx_by_variables_and_the_wait_script_sees_it(
    tmp_path: Path, name: str
) -> None:
    variables = recipe_env(name)
    assert set(variables) <= set(config.environment_names())
    assert {"FAKEMX_PROFILE", "FAKEMX_API"} <= set(variables)
    # The recipe's settings, on loopback and free ports instead of the service's own.
    env = clean_env(**{**variables, "FAKEMX_HOST": "127.0.0.1", "FAKEMX_PORT": "0",
                       "FAKEMX_API": "127.0.0.1:0", "FAKEMX_API_TOKEN": TOKEN,
                       "FAKEMX_STATE_DIR": str(tmp_path)})
    with process("run", env=env) as fakemx:
        api = fakemx.api()
        if shutil.which("curl") is None:
            pytest.skip("curl is not installed (the wait script uses it)")
        waited = subprocess.run(["sh", str(ROOT / "docs/ci/wait-for-fakemx.sh")],
                                capture_output=True, text=True, timeout=TIMEOUT,
                                env=clean_env(FAKEMX_URL=api, FAKEMX_API_TOKEN=TOKEN,
                                              FAKEMX_WAIT_SECONDS="10"))
        assert waited.returncode == 0, waited.stderr
        servers = httpx.get(f"{api}/api/servers",
                            headers={"authorization": f"Bearer {TOKEN}"}).json()
        assert servers[0]["profile"] == variables["FAKEMX_PROFILE"]
