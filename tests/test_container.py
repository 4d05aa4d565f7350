"""Issue #18, the container: the image built from this checkout's Dockerfile and run by a
real engine, as docs/run-anywhere.md and the CI recipes in docs/ci/ run it, and
``fakemx.testing.FakeMXContainer`` used as the in-process fixture is.

The engine is podman serving Docker's API; the commands are the real docker CLI's
(tests/container_engine.py says what this machine needs and why). The docs' commands
are read from the docs, not copied; what changes, and only that: the image is the one
built here, host ports are free loopback ones (the docs publish fixed ports on every
address), and the GitLab job's image is the local base (it cannot be pulled).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import smtplib
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from container_engine import (
    BASE_IMAGE,
    Engine,
    build_image,
    ensure_base_image,
    image_tag,
    missing_tools,
    podman_service,
    wheelhouse,
)
from processes import TIMEOUT
from wire import dialogue

import fakemx
from fakemx.profiles import catalog

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

pytestmark = [
    pytest.mark.skipif(bool(missing_tools()), reason=f"no container engine: missing"
                       f" {', '.join(missing_tools())} (scripts/test installs them, as root)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the engine runs as root (rootful podman)"),
    pytest.mark.timeout(900),
]


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    with podman_service(tmp_path_factory.mktemp("engine")) as running:
        yield running


@pytest.fixture(scope="session")
def image(engine: Engine) -> str:
    """This checkout's Dockerfile built with BASE = the local Debian image."""
    ensure_base_image()
    wheels = wheelhouse(Path.home() / ".cache" / "fakemx-tests" / "wheelhouse")
    tag = image_tag()
    build_image(engine, tag, wheels)
    return tag


@contextmanager
def container(engine: Engine, *run_args: str) -> Iterator[str]:
    """``docker run -d ARGS``; its id; removed at the end (its log shown if a test failed)."""
    cid = engine.docker("run", "-d", *run_args).stdout.strip()
    try:
        yield cid
    except BaseException:
        print(engine.docker("logs", cid, check=False).stdout[-4000:])
        raise
    finally:
        engine.docker("rm", "-f", cid, check=False)


def run_once(engine: Engine, *run_args: str) -> subprocess.CompletedProcess[str]:
    """``docker run ARGS`` to its end. Not ``--rm``: with it, the docker CLI reads exit
    status 0 from podman 4.3's Docker API whatever the container's was."""
    name = f"fakemx-once-{secrets.token_hex(6)}"
    try:
        return engine.docker("run", "--name", name, *run_args, check=False)
    finally:
        engine.docker("rm", "-f", name, check=False)


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
    with container(engine, "-e", "FAKEMX_API=", "-p", "127.0.0.1::2525", image) as cid:
        deadline = time.monotonic() + TIMEOUT
        while (checked := health_command(engine, cid)).returncode != 0:
            assert "not ready: SMTP" in checked.stderr, checked.stderr
            assert time.monotonic() < deadline, checked.stderr
            time.sleep(0.2)
        assert dialogue("127.0.0.1", host_port(engine, cid, 2525)).code("body") == 250


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
    published on a free loopback port; also its ``-e`` variables."""
    out: list[str] = []
    env: dict[str, str] = {}
    words = iter(args)
    for word in words:
        if word == "-p":
            _, container_ports = next(words).rsplit(":", 1)
            out += ["-p", f"127.0.0.1::{container_ports}"]
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


# region docs/ci: the service recipes ---------------------------------------------------

SECRET = re.compile(r"\$\{\{ *secrets\.FAKEMX_API_TOKEN *\}\}")


def recipe(name: str) -> Any:
    return yaml.safe_load((DOCS / "ci" / name).read_text())


def test_github_actions_service_as_the_recipe_defines_it(engine: Engine, image: str) -> None:
    """The service's env and ports from the YAML; then the job's own wait step and an SMTP
    client as the job's tests would be (on the runner: published ports on 127.0.0.1)."""
    [job] = recipe("github-actions.yml")["jobs"].values()
    service = job["services"]["fakemx"]
    token = secrets.token_hex(16)
    args: list[str] = []
    for name, value in service["env"].items():
        args += ["-e", f"{name}={SECRET.sub(token, str(value))}"]
    mapped: dict[str, str] = {}  # the recipe's host port -> the one published here
    for published in service["ports"]:
        host, container_port = str(published).split(":")
        args += ["-p", f"127.0.0.1::{container_port}"]
        mapped[host] = container_port
    with container(engine, *args, image) as cid:
        for host, container_port in mapped.items():
            mapped[host] = str(host_port(engine, cid, int(container_port)))
        job_env = {name: SECRET.sub(token, str(value)) for name, value in job["env"].items()}
        for name, value in job_env.items():  # 127.0.0.1:8025 -> 127.0.0.1:<published>
            job_env[name] = re.sub(r"(?<=127\.0\.0\.1:)(\d+)|^(\d+)$",
                                   lambda m: mapped.get(m[0], m[0]), value)
        [wait] = [step["run"] for step in job["steps"] if step.get("name") == "Wait for fakemx"]
        waited = subprocess.run(["bash", "-e", "-c", wait], capture_output=True, text=True,
                                timeout=90, env={**os.environ, **job_env})
        assert waited.returncode == 0, waited.stderr
        assert health_command(engine, cid).returncode == 0  # what the runner waits for
        greylisted_then_accepted(job_env, service["env"]["FAKEMX_PROFILE"])
        # The service's log: one JSON line per session (FAKEMX_LOG_FORMAT: json).
        wait_for_log(engine, cid, '"id": 3')
        records = [json.loads(line) for line in engine.docker("logs", cid).stdout.splitlines()]
        sessions = [r for r in records if r["event"] == "session"]
        assert [s["messages"] for s in sessions] == [0, 0, 1]


def greylisted_then_accepted(job_env: dict[str, str], profile: str) -> None:
    """4.4.7-greylist-attempts as a client sees it, then the message read over the API."""
    assert profile == "4.4.7-greylist-attempts"  # another profile: another expectation
    host, port = job_env["SMTP_HOST"], int(job_env["SMTP_PORT"])
    for attempt in (1, 2):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            send(host, port, f"attempt {attempt}")
        assert refused.value.recipients["bob@dest.example"][0] == 451
    send(host, port, "attempt 3")
    api, token = job_env["FAKEMX_URL"], job_env["FAKEMX_API_TOKEN"]
    [message] = api_get(api, token, "/api/messages")["items"]
    assert (message["subject"], message["mail_from"]) == ("attempt 3", "alice@sender.example")
    raw = httpx.get(f"{api}/api/messages/{message['id']}/raw", timeout=TIMEOUT,
                    headers={"authorization": f"Bearer {token}"}).content
    assert raw.endswith(b"Subject: attempt 3\r\n\r\nbody\r\n")
    sessions = api_get(api, token, "/api/sessions")
    assert sessions["total"] == 3


def test_gitlab_ci_service_as_the_recipe_defines_it(engine: Engine, image: str) -> None:
    """The service on a network of its own under its alias, with the YAML's variables;
    the job in a container on that network, running the job's wait script and reaching
    the service as the alias (GitLab's model). The job's image, python:3.11-slim, cannot
    be pulled here: it is the local base, which has the curl the job installs first."""
    definition = recipe("gitlab-ci.yml")["relay-tests"]
    [service] = definition["services"]
    token = secrets.token_hex(16)
    variables = {"FAKEMX_API_TOKEN": token,  # a project variable: services get it too
                 **{name: str(value) for name, value in service["variables"].items()}}
    network = f"fakemx-ci-{secrets.token_hex(6)}"
    engine.docker("network", "create", network)
    try:
        args = ["--network", network, "--network-alias", service["alias"]]
        for name, value in variables.items():
            args += ["-e", f"{name}={value}"]
        with container(engine, *args, image):
            install_curl, wait = definition["before_script"]
            assert "apt-get install" in install_curl
            assert " curl" in install_curl  # the base image has it already
            job_env = {"FAKEMX_API_TOKEN": token,
                       **{name: str(value) for name, value in definition["variables"].items()}}
            env_args = [arg for name, value in job_env.items()
                        for arg in ("-e", f"{name}={value}")]
            job = run_once(engine, "--network", network, *env_args, BASE_IMAGE,
                           "sh", "-e", "-c", f"{wait}\n{GITLAB_JOB_CLIENT}")
            assert job.returncode == 0, job.stdout + job.stderr
            assert job.stdout.splitlines()[-1] == "451 451 250 1", job.stdout
    finally:
        engine.docker("network", "rm", "-f", network, check=False)


# The job's tests, in the job's container: greylisted twice, accepted the third time,
# then the message read back over the API with the token, through $FAKEMX_URL.
GITLAB_JOB_CLIENT = """python3 - <<'PY'
import json, os, smtplib, urllib.request
codes = []
for attempt in range(3):
    with smtplib.SMTP(os.environ["SMTP_HOST"], int(os.environ["SMTP_PORT"]), timeout=20) as c:
        c.ehlo(); c.mail("alice@sender.example"); code, _ = c.rcpt("bob@dest.example")
        codes.append(code)
        if code == 250:
            c.data(b"Subject: from the job\\r\\n\\r\\nbody\\r\\n")
request = urllib.request.Request(os.environ["FAKEMX_URL"] + "/api/messages",
    headers={"authorization": "Bearer " + os.environ["FAKEMX_API_TOKEN"]})
page = json.load(urllib.request.urlopen(request, timeout=20))
print(*codes, page["total"])
PY"""


# region fakemx.testing.FakeMXContainer ---------------------------------------------------


@pytest.fixture
def testcontainers_env(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """testcontainers-python talks to the engine through DOCKER_HOST, as to Docker's.
    Its reaper (Ryuk) is an image from Docker Hub, which cannot be pulled here: off,
    as TESTCONTAINERS_RYUK_DISABLED=true does (each container is removed by its `with`).
    This machine has a /.dockerenv without being a container, which makes testcontainers
    look for a Docker network of its own: TESTCONTAINERS_CONNECTION_MODE=docker_host."""
    from testcontainers.core.config import ConnectionMode, testcontainers_config

    monkeypatch.setenv("DOCKER_HOST", engine.env["DOCKER_HOST"])
    monkeypatch.setattr(testcontainers_config, "ryuk_disabled", True)
    monkeypatch.setattr(testcontainers_config, "connection_mode_override",
                        ConnectionMode.docker_host)


@pytest.mark.usefixtures("testcontainers_env")
def test_fakemx_container_is_used_as_the_fixture_is(image: str) -> None:
    from fakemx.testing import FakeMXContainer

    with FakeMXContainer(image, profile="4.4.7-defer-rcpt") as mx:
        with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as client:
            client.ehlo("relay.example")
            assert client.mail("alice@sender.example")[0] == 250
            assert client.rcpt("bob@dest.example")[0] == 450
        mx.wait_for(ended=1)
        [session] = mx.sessions
        assert (session["profile"], session["helo"], session["sender"], session["outcome"]) \
            == ("4.4.7-defer-rcpt", "relay.example", "alice@sender.example", "quit")
        replies = [e["text"] for e in session["events"] if e["kind"] == "server"]
        assert any(reply.startswith("450 4.2.0 <bob@dest.example>") for reply in replies)
        assert mx.messages == []

        mx.load("sink")
        send(mx.host, mx.port, "hello from a container test")
        mx.wait_for(messages=1)
        [message] = mx.find_messages(subject="hello")
        assert message["mail_from"] == "alice@sender.example"
        assert mx.message(message["id"])["text"] == "body\r\n"
        assert mx.raw_message(message["id"]).endswith(b"\r\n\r\nbody\r\n")
        assert len(mx.sessions) == 2

        mx.reset()
        assert (mx.sessions, mx.messages) == ([], [])
        with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT) as client:
            client.starttls(context=trusting(mx.ca_pem))  # fakemx's CA verifies its cert
            assert client.noop()[0] == 250

        mx.set_listener("refuse")
        with pytest.raises(ConnectionRefusedError):
            smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT)


def trusting(ca_pem: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(cadata=ca_pem.decode())
    context.check_hostname = False  # the certificate names mx.fakemx.test, not localhost
    return context


@pytest.mark.usefixtures("testcontainers_env")
def test_fakemx_container_that_cannot_start_says_why(image: str) -> None:
    from fakemx.testing import FakeMXContainer, FakeMXNotReady

    with pytest.raises(FakeMXNotReady) as failed:
        FakeMXContainer(image, profile="no-such-profile").start()
    assert str(failed.value).startswith("fakemx container ended (")
    assert "fakemx: unknown profile 'no-such-profile'" in str(failed.value)  # its log


@pytest.mark.usefixtures("testcontainers_env")
def test_the_docs_testcontainers_example(image: str) -> None:
    """The Python block of docs/run-anywhere.md, run as written but for the image's name."""
    text = (DOCS / "run-anywhere.md").read_text()
    [example] = [block for block in re.findall(r"```python\n(.*?)```", text, re.DOTALL)
                 if "FakeMXContainer" in block]
    assert 'FakeMXContainer("fakemx", ' in example
    exec(compile(example.replace('FakeMXContainer("fakemx", ', f"FakeMXContainer({image!r}, "),
                 "docs/run-anywhere.md", "exec"), {})
