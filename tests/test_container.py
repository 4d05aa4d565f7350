"""Issue #18, the container: the image built from this checkout's Dockerfile and run by a
real engine (podman serving Docker's API, driven by the real docker CLI; the ``engine``
and ``image`` fixtures, tests/conftest.py), and each docker command of
docs/run-anywhere.md, read from the doc. What changes, and only that: the image is the
one built here and host ports are free loopback ones (the doc publishes fixed ports on
every address). tests/container_engine.py says what this machine needs and why.
"""

from __future__ import annotations

import re
import secrets
import shlex
import socket
import time

import pytest
from container_engine import Engine
from containers import (
    DOCS,
    NEEDS_ENGINE,
    api_get,
    container,
    free_ports,
    health_command,
    host_port,
    publish,
    run_once,
    send,
    wait_for_log,
    wait_script,
)
from processes import TIMEOUT
from wire import dialogue

import fakemx
from fakemx.profiles import catalog

pytestmark = NEEDS_ENGINE


# region the image ------------------------------------------------------------------


def test_the_image_runs_fakemx_as_its_own_user_from_the_wheel(engine: Engine, image: str
                                                              ) -> None:
    version = run_once(engine, image, "fakemx", "--version")
    assert (version.returncode, version.stdout) == (0, f"fakemx {fakemx.__version__}\n")
    who = run_once(engine, image, "sh", "-c", "id -u; command -v fakemx;"
                   " python3 -c 'import fakemx; print(fakemx.__file__)'").stdout.split()
    assert who[0] == "10001"
    assert who[1] == "/opt/fakemx/bin/fakemx"
    assert who[2].startswith("/opt/fakemx/lib/")  # the wheel's install, not a source tree


def test_an_api_on_every_address_without_a_token_exits_at_once_saying_so(
    engine: Engine, image: str
) -> None:
    refused = run_once(engine, image)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert "FAKEMX_API_TOKEN" in refused.stderr


def test_without_the_api_the_health_check_asks_the_smtp_port(engine: Engine, image: str
                                                             ) -> None:
    with container(engine, "-e", "FAKEMX_API=", *publish("2525"), image) as cid:
        deadline = time.monotonic() + TIMEOUT
        while (checked := health_command(engine, cid)).returncode != 0:
            assert "not ready: SMTP" in checked.stderr, checked.stderr
            assert time.monotonic() < deadline, checked.stderr
            time.sleep(0.2)
        assert dialogue("127.0.0.1", host_port(engine, cid, 2525)).code("body") == 250


def test_a_taken_host_port_is_said_only_by_a_detached_run(engine: Engine, image: str
                                                          ) -> None:
    """docs/run-anywhere.md: podman binds each published host port itself, so a taken
    one fails the start; the docker CLI says why only when detached, without ``--rm``
    (with both, it waits for a removal that never comes: not run here)."""
    port = free_ports(1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        for how in (["--rm"], ["-d"]):
            name = f"fakemx-taken-{secrets.token_hex(6)}"
            try:
                ran = engine.docker("run", "--name", name, *how, "-e", "FAKEMX_API=",
                                    "-p", f"127.0.0.1:{port}:2525", image, check=False)
            finally:
                engine.docker("rm", "-f", name, check=False)
            assert ran.returncode != 0, ran
            said = ("address already in use" if how == ["-d"]
                    else "unable to upgrade to tcp, received 409")
            assert said in ran.stderr, ran.stderr


# region docs/run-anywhere.md's docker commands ---------------------------------------


def doc_commands(program: str) -> list[list[str]]:
    """Each ``docker ...`` command of the doc's ``sh`` blocks, continuation lines joined."""
    text = (DOCS / "run-anywhere.md").read_text()
    commands = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words[:2] == ["docker", program]:
                    commands.append(words[2:])
    return commands


def localised(args: list[str], image: str) -> tuple[list[str], dict[str, str]]:
    """A doc's ``docker run`` arguments with the image built here and each ``-p H:C``
    published on free loopback ports (containers.publish); also its ``-e`` variables."""
    out: list[str] = []
    env: dict[str, str] = {}
    words = iter(args)
    for word in words:
        if word == "-p":
            _, container_ports = next(words).rsplit(":", 1)
            out += publish(container_ports)
        elif word == "-e":
            name, _, value = next(words).partition("=")
            env[name] = value
            out += ["-e", f"{name}={value}"]
        elif word == "--rm":
            out.append(word)
        else:
            assert word == "fakemx", f"unexpected word in the doc's docker run: {word}"
            out.append(image)
    return out, env


def test_the_docs_build_command_is_the_one_built_here() -> None:
    builds = doc_commands("build")
    assert ["-t", "fakemx", "."] in builds  # built by the `image` fixture, with BASE set


@pytest.mark.parametrize("number", range(3))
def test_the_docs_docker_run_lines(engine: Engine, image: str, number: int) -> None:
    runs = doc_commands("run")
    assert len(runs) == 3, runs  # a new line in the doc: give it a case here
    args, env = localised(runs[number], image)
    token = env["FAKEMX_API_TOKEN"]
    with container(engine, *args) as cid:
        api = f"http://127.0.0.1:{host_port(engine, cid, 8025)}"
        waited = wait_script(api, token)
        assert waited.returncode == 0, waited.stderr
        assert health_command(engine, cid).returncode == 0
        servers = api_get(api, token, "/api/servers")
        if env.get("FAKEMX_MODE") == "lab":
            assert len(servers) == len(catalog())
            published = engine.docker("port", cid).stdout
            for server in servers:  # each profile's port reachable from the host
                assert f"{server['port']}/tcp -> 127.0.0.1:" in published, server["port"]
            sink = next(s for s in servers if s["profile"] == "sink")
            send("127.0.0.1", host_port(engine, cid, sink["port"]), "invoice 7")
            # The doc's `docker exec CONTAINER fakemx messages --subject invoice`.
            [exec_args] = doc_commands("exec")
            assert exec_args[0] == "CONTAINER"
            listed = engine.docker("exec", cid, *exec_args[1:]).stdout
            assert "invoice 7" in listed, listed
            return
        [server] = servers
        assert server["profile"] == env["FAKEMX_PROFILE"]
        transcript = dialogue("127.0.0.1", host_port(engine, cid, 2525))
        expected = {"4.4.7-defer-rcpt": ("rcpt", 450, None),
                    "4.4.318-rst-after-mail": ("mail", None, "rst")}
        step, code, how = expected[env["FAKEMX_PROFILE"]]
        assert transcript.code(step) == code, transcript
        assert transcript.how == how, transcript
        line = wait_for_log(engine, cid, "fakemx: session 1 ")
        assert f"profile {env['FAKEMX_PROFILE']}" in line


