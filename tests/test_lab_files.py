"""The container lab: the compose file validates and runs only commands the CLI has."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from wire import dialogue

from fakemx import FakeMX
from fakemx.cli import LAB_DOMAIN, _parser, main
from fakemx.profiles import catalog

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict[str, object]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


def fakemx_command() -> list[str]:
    services = compose()["services"]
    assert isinstance(services, dict)
    command = services["fakemx"]["command"]
    assert command[0] == "fakemx"
    return [str(part) for part in command[1:]]


def compose_environment() -> dict[str, str]:
    """The fakemx service's environment, with tokens of a test's own for the .env ones."""
    environment = compose()["services"]["fakemx"]["environment"]  # type: ignore[index]
    return {name: f"{name.lower()}-of-this-test" if value.startswith("${") else str(value)
            for name, value in environment.items()}


def compose_config(tmp_path: Path, token: str | None) -> subprocess.CompletedProcess[str]:
    """``docker-compose config -q``, with an empty .env so a developer's own cannot count."""
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose (Debian's package) is not installed; scripts/test installs it")
    env_file = tmp_path / "empty.env"
    env_file.write_text("")
    env = {k: v for k, v in os.environ.items()
           if k not in ("FAKEMX_API_TOKEN", "FAKEMX_STUDENT_TOKEN")}
    if token is not None:
        env["FAKEMX_API_TOKEN"] = token
        env["FAKEMX_STUDENT_TOKEN"] = "students-" + token
    return subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"),
                           "--env-file", str(env_file), "config", "-q"],
                          capture_output=True, text=True, timeout=60, env=env)


def test_compose_file_validates(tmp_path: Path) -> None:
    result = compose_config(tmp_path, token="a-token-of-this-lab")
    assert result.returncode == 0, result.stderr


def test_compose_needs_a_token_of_the_users_own(tmp_path: Path) -> None:
    """No shared default token: without FAKEMX_API_TOKEN compose refuses to start, saying so."""
    result = compose_config(tmp_path, token=None)
    assert result.returncode != 0
    assert "set FAKEMX_" in result.stderr
    environment = compose()["services"]["fakemx"]["environment"]  # type: ignore[index]
    assert environment["FAKEMX_API_TOKEN"].startswith("${FAKEMX_API_TOKEN:?")
    assert environment["FAKEMX_STUDENT_TOKEN"].startswith("${FAKEMX_STUDENT_TOKEN:?")
    assert "fakemx-lab" not in (ROOT / "docker-compose.yml").read_text()


def volume_mounts(service: str) -> dict[str, str]:
    """A service's named volumes: target path -> volume name."""
    services = compose()["services"]
    assert isinstance(services, dict)
    mounts = {}
    for spec in services[service].get("volumes", []):
        name, target = str(spec).split(":")[:2]
        mounts[target] = name
    return mounts


def test_the_relay_gets_the_ca_certificate_but_not_its_key() -> None:
    """The relay mounts only what fakemx exports for it, never the state dir (ca.key, mail)."""
    command = fakemx_command()
    state_dir = command[command.index("--state-dir") + 1]
    fakemx_mounts = volume_mounts("fakemx")
    relay_mounts = volume_mounts("relay")
    assert fakemx_mounts[state_dir] not in relay_mounts.values()
    # The two files the relay reads are written where its one volume is mounted.
    [(relay_target, shared)] = relay_mounts.items()
    share_dir = next(target for target, name in fakemx_mounts.items() if name == shared)
    exported = {command[command.index(option) + 1] for option in ("--export-ca",
                                                                   "--postfix-transport")}
    assert exported == {f"{share_dir}/ca.pem", f"{share_dir}/postfix-transport"}
    entrypoint = (ROOT / "lab/relay/entrypoint.sh").read_text()
    assert f"share=${{FAKEMX_SHARE:-{relay_target}}}" in entrypoint
    for name in ("ca.pem", "postfix-transport", "dns-zones"):
        assert f'"$share/{name}"' in entrypoint


def test_the_health_check_asks_the_api_not_the_sink() -> None:
    """deploy/healthcheck.py reads FAKEMX_API: set, it asks GET /api/version; else it would
    open a connection to the sink every 2 s, a session on the students' positive control."""
    assert compose_environment()["FAKEMX_API"] == "0.0.0.0:8025"
    assert "--api" not in fakemx_command()


def test_every_fakemx_command_exists_in_the_cli() -> None:
    args = _parser().parse_args(fakemx_command())
    assert args.command == "lab"
    # The image's own command (fakemx run, by variables) is held by tests/test_run_anywhere.py
    # (test_the_image_serves_one_profile_by_variables_and_keeps_the_compose_lab).


def test_the_compose_command_writes_the_relays_transport_map(tmp_path: Path) -> None:
    # The same command as in the compose file, on loopback and free ports.
    command = fakemx_command()
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--base-port") + 1] = "0"
    command[command.index("--dns-base-port") + 1] = "0"
    command[command.index("--dns-host") + 1] = "127.0.0.1"
    command[command.index("--state-dir") + 1] = str(tmp_path)
    share = tmp_path / "relay-share"
    share.mkdir()
    transport = share / "postfix-transport"
    command[command.index("--postfix-transport") + 1] = str(transport)
    command[command.index("--export-ca") + 1] = str(share / "ca.pem")
    env = {**os.environ, **compose_environment(), "FAKEMX_API": "127.0.0.1:0"}
    process = subprocess.Popen([sys.executable, "-m", "fakemx", *command],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # A failed assert must not leave the lab running (Popen's exit only waits for it).
    stop = contextlib.ExitStack()
    stop.callback(lambda: process.poll() is None and process.kill())
    with process, stop:
        assert process.stdout is not None
        for line in iter(process.stdout.readline, b""):
            if line.startswith(b"fakemx: lab ready"):
                break
        else:
            assert process.stderr is not None
            raise AssertionError(process.stderr.read().decode())
        routes = dict(line.split() for line in transport.read_text().splitlines()[1:])
        assert routes[f"sink.{LAB_DOMAIN}"].startswith("smtp:[fakemx]:")
        # Student mode: opaque case names, none of which names its profile.
        cases = [domain for domain in routes if domain != f"sink.{LAB_DOMAIN}"]
        assert len(cases) == len(catalog()) - 1
        assert all(domain.startswith("case-") for domain in cases)
        # An LMTP profile is reached with Postfix's lmtp(8) client.
        lmtp = [r for r in routes.values() if r.startswith("lmtp:inet:[fakemx]:")]
        assert len(lmtp) == len([p for p in catalog() if p.protocol == "lmtp"])
        port = int(routes[f"sink.{LAB_DOMAIN}"].rsplit(":", 1)[1])
        assert dialogue("127.0.0.1", port).code("body") == 250
        process.terminate()
        assert process.wait(timeout=10) == 0
    # The relay's share holds the CA certificate it trusts, and nothing secret.
    assert sorted(p.name for p in share.iterdir()) == ["ca.pem", "dns-zones",
                                                       "postfix-transport"]
    assert (share / "ca.pem").read_bytes() == (tmp_path / "ca.pem").read_bytes()
    assert b"PRIVATE KEY" not in (share / "ca.pem").read_bytes()


def test_journal_command_shows_sessions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeMX("4.4.318-rst-after-mail", state_dir=tmp_path) as mx:
        dialogue(mx.host, mx.port)
        mx.wait_for(ended=1)
    assert main(["journal", "--state-dir", str(tmp_path), "--events"]) == 0
    out = capsys.readouterr().out
    assert "attempt 1: fakemx reset (RST) after MAIL" in out
    assert "C: MAIL FROM:<alice@sender.example>" in out
