"""Issue #18, the CI recipes of docs/ci/ run as GitHub Actions and GitLab CI would run
them: the service from the YAML's image settings (env, ports, alias, variables) on the
image built here, then the job's own wait script and a client as the job's tests.
What changes: the image, free loopback host ports for the recipe's fixed ones, and the
GitLab job's image (python:3.11-slim cannot be pulled: the local base, which has curl).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import smtplib
import subprocess
from typing import Any

import httpx
import pytest
import yaml
from container_engine import BASE_IMAGE, Engine
from containers import (
    DOCS,
    NEEDS_ENGINE,
    api_get,
    container,
    health_command,
    host_port,
    publish,
    run_once,
    send,
    wait_for_log,
)
from processes import TIMEOUT

pytestmark = NEEDS_ENGINE


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
        args += publish(container_port)
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
    # --internal: the containers on it reach each other and nothing beyond this machine.
    engine.docker("network", "create", "--internal", network)
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

