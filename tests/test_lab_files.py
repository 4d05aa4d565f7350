"""The container lab: the compose file validates and runs only commands the CLI has."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from wire import dialogue

from fakemx import FakeMX
from fakemx.cli import LAB_DOMAIN, _parser, main

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


def test_compose_file_validates() -> None:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose (Debian's package) is not installed; scripts/test installs it")
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config",
                             "-q"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_every_fakemx_command_exists_in_the_cli() -> None:
    args = _parser().parse_args(fakemx_command())
    assert args.command == "lab"
    dockerfile = (ROOT / "Dockerfile").read_text()
    found = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert found, "Dockerfile has no exec-form CMD"
    cmd = json.loads(found[1])
    assert cmd[0] == "fakemx"
    assert _parser().parse_args(cmd[1:]).command == "lab"
    # The healthcheck probes the base port, where the lab puts the healthy sink.
    assert f"('127.0.0.1', {args.base_port})" in dockerfile


def test_the_compose_command_writes_the_relays_transport_map(tmp_path: Path) -> None:
    # The same command as in the compose file, on loopback and free ports.
    command = fakemx_command()
    command[command.index("--host") + 1] = "127.0.0.1"
    command[command.index("--base-port") + 1] = "0"
    command[command.index("--state-dir") + 1] = str(tmp_path)
    transport = tmp_path / "postfix-transport"
    command[command.index("--postfix-transport") + 1] = str(transport)
    command[command.index("--api") + 1] = "127.0.0.1:0"
    process = subprocess.Popen(["python3", "-m", "fakemx", *command], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    with process:
        assert process.stdout is not None
        for line in iter(process.stdout.readline, b""):
            if line.startswith(b"fakemx: lab ready"):
                break
        routes = dict(line.split() for line in transport.read_text().splitlines()[1:])
        assert routes[f"sink.{LAB_DOMAIN}"].startswith("smtp:[fakemx]:")
        assert f"4.4.316-connection-refused.{LAB_DOMAIN}" in routes
        port = int(routes[f"sink.{LAB_DOMAIN}"].rsplit(":", 1)[1])
        assert dialogue("127.0.0.1", port).code("body") == 250
        process.terminate()
        assert process.wait(timeout=10) == 0
    assert (tmp_path / "ca.pem").is_file()  # the relay container trusts this


def test_journal_command_shows_sessions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with FakeMX("4.4.318-rst-after-mail", state_dir=tmp_path) as mx:
        dialogue(mx.host, mx.port)
        mx.wait_for(ended=1)
    assert main(["journal", "--state-dir", str(tmp_path), "--events"]) == 0
    out = capsys.readouterr().out
    assert "attempt 1: fakemx reset (RST) after MAIL" in out
    assert "C: MAIL FROM:<alice@sender.example>" in out
