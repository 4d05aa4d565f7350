"""Running the image in tests/test_container*.py: containers removed at the end, their
published ports, the docs' wait script, the image's health check, the API and SMTP."""

from __future__ import annotations

import json
import os
import random
import secrets
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from container_engine import Engine, missing_tools
from processes import TIMEOUT

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Each container test module's pytestmark.
NEEDS_ENGINE = [
    pytest.mark.skipif(bool(missing_tools()), reason=f"no container engine: missing"
                       f" {', '.join(missing_tools())} (scripts/test installs them, as root)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the engine runs as root (rootful podman)"),
    pytest.mark.timeout(900),
]


@contextmanager
def container(engine: Engine, *run_args: str) -> Iterator[str]:
    """``docker run -d ARGS``; its name; removed at the end (its log shown if a test
    failed). Named first, so that a ``run`` that fails or times out leaves nothing behind
    (publishing the lab's 150 ports takes under a second here)."""
    name = f"fakemx-test-{secrets.token_hex(6)}"
    try:
        engine.docker("run", "-d", "--name", name, *run_args, timeout=120)
        yield name
    except BaseException:
        state = engine.docker("inspect", "--format", "{{json .State}}", name, check=False)
        logs = engine.docker("logs", name, check=False)
        print(f"container {name}: {state.stdout.strip()}{state.stderr.strip()}\n"
              f"{logs.stdout[-3000:]}{logs.stderr[-3000:]}")
        raise
    finally:
        engine.docker("rm", "-f", name, check=False, timeout=300)


def run_once(engine: Engine, *run_args: str) -> subprocess.CompletedProcess[str]:
    """``docker run ARGS`` to its end. Not ``--rm``: with it, the docker CLI reads exit
    status 0 from podman 4.3's Docker API whatever the container's was."""
    name = f"fakemx-once-{secrets.token_hex(6)}"
    try:
        return engine.docker("run", "--name", name, *run_args, check=False, timeout=300)
    finally:
        engine.docker("rm", "-f", name, check=False, timeout=300)


# Host ports to publish on: below the kernel's ephemeral range (32768-60999), so no
# test's port-0 listener can get one. The engine's port forwarding rules catch every
# local connection to a published port, and after a container is removed they outlive
# it by seconds (the lab's 150 take about 15 s), while the port is free again: a port
# the engine picked itself could be a concurrent fakemx's, whose clients would then be
# refused. Each xdist worker has its own slice of the range, and a port handed out once
# is not handed out again in this process: the ports of one ``docker run`` are chosen
# before any is bound, and rootful podman binds each published port itself, so a
# second ``-p`` landing inside the first one's range failed the start ("address already
# in use"), which with ``--rm`` leaves the docker CLI waiting forever (podman keeps a
# container whose start failed; the CLI waits for its removal).
_PUBLISH_RANGE = (20000, 32000)
_handed_out: set[int] = set()


def _worker_slice() -> tuple[int, int]:
    low, high = _PUBLISH_RANGE
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    number = int(worker.removeprefix("gw")) if worker.startswith("gw") else 0
    size = (high - low) // max(workers, 1)
    return low + number * size, low + (number + 1) * size


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive loopback ports of this worker's slice of
    _PUBLISH_RANGE, free now and never handed out before in this process."""
    low, high = _worker_slice()
    for _ in range(200):
        first = random.randrange(low, high - count)
        ports = range(first, first + count)
        if _handed_out.isdisjoint(ports) and all(_free(port) for port in ports):
            _handed_out.update(ports)
            return first
    raise AssertionError(f"no {count} free consecutive ports in {low}-{high}")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def publish(container_ports: str) -> list[str]:
    """``-p`` for ``PORT`` or ``FIRST-LAST`` of the container, on free loopback ports."""
    first, _, last = container_ports.partition("-")
    count = int(last or first) - int(first) + 1
    host = free_ports(count)
    hosts = f"{host}-{host + count - 1}" if last else str(host)
    return ["-p", f"127.0.0.1:{hosts}:{container_ports}"]


def host_port(engine: Engine, cid: str, port: int) -> int:
    """The loopback host port the engine published ``port`` on."""
    published = engine.docker("port", cid, f"{port}/tcp").stdout.split()[0]
    return int(published.rsplit(":", 1)[1])


def wait_script(api_url: str, token: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(DOCS / "ci/wait-for-fakemx.sh")], capture_output=True,
                          text=True, timeout=90,
                          env={**os.environ, "FAKEMX_URL": api_url, "FAKEMX_API_TOKEN": token,
                               "FAKEMX_WAIT_SECONDS": "60"})


def health_command(engine: Engine, cid: str) -> subprocess.CompletedProcess[str]:
    """The image's HEALTHCHECK command, run in the container as the engine would."""
    test = json.loads(engine.docker("inspect", "--format", "{{json .Config.Healthcheck.Test}}",
                                    cid).stdout)
    assert test[0] == "CMD", test
    return engine.docker("exec", cid, *test[1:], check=False)


def api_get(api_url: str, token: str, path: str) -> Any:
    answer = httpx.get(api_url + path, headers={"authorization": f"Bearer {token}"},
                       timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return answer.json()


def send(host: str, port: int, subject: str) -> None:
    with smtplib.SMTP(host, port, timeout=TIMEOUT) as client:
        client.sendmail("alice@sender.example", ["bob@dest.example"],
                        f"Subject: {subject}\r\n\r\nbody\r\n".encode())



def wait_for_log(engine: Engine, cid: str, wanted: str, timeout: float = TIMEOUT) -> str:
    """The first line of the container's log with ``wanted`` (polled: the session line is
    printed as the session ends, just after the client saw the end)."""
    deadline = time.monotonic() + timeout
    while True:
        logs = engine.docker("logs", cid).stdout
        found = [line for line in logs.splitlines() if wanted in line]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no {wanted!r} in the log:\n{logs[-3000:]}"
        time.sleep(0.2)

