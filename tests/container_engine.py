"""A real container engine for tests/test_container*.py: podman, serving Docker's API on
a socket of this run, which the real docker CLI and testcontainers-python use
(``DOCKER_HOST``), as they would a Docker daemon.

What this machine needs, and why (each found by trying; docs/run-anywhere.md):

- No image registry is reachable, so the Dockerfile is built with ``BASE`` = a Debian
  bookworm image made here from Debian's packages (scripts/container-base).
- pip inside a build cannot reach PyPI (only the host's TLS setup can), so the build
  installs from a wheelhouse the host downloads (pip download), served on loopback
  (``--network host``, ``PIP_NO_INDEX``, ``PIP_FIND_LINKS``).
- Root here lacks CAP_SYS_RESOURCE, so podman's default limits (nofile 1048576) fail
  with "setrlimit RLIMIT_NOFILE: Operation not permitted": the containers get this
  process's own hard limits.
- The cgroup hierarchy is v1 with hugetlb on the v2 mount; crun 1.8 refuses that
  ("cgroups in hybrid mode not supported"), runc runs it.
- Podman runs HEALTHCHECKs from systemd timers, absent here: tests run the health
  check command in the container (``docker exec``) instead of waiting for "healthy".
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import http.server
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = os.environ.get("FAKEMX_BASE_IMAGE", "localhost/fakemx-base:bookworm")
# What the image's build itself installs with pip, besides fakemx's dependencies.
BUILD_REQUIREMENTS = ("build==1.2.2", "hatchling>=1.21")
# The files the Dockerfile copies: the image tag is their hash, so an unchanged tree
# reuses the image a previous run (or the other xdist worker) built.
IMAGE_INPUTS = ("Dockerfile", "pyproject.toml", "README.md", "fakemx", "profiles",
                "deploy/healthcheck.py")
WHEELHOUSE_PORT = 28631  # any; a fixed one lets an unchanged build reuse its layers
TOOLS = ("podman", "docker", "runc", "debootstrap")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


@dataclass
class Engine:
    socket: Path
    env: dict[str, str]  # this environment with DOCKER_HOST and CONTAINERS_CONF

    def docker(self, *args: str, timeout: float = 120, check: bool = True,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """The real docker CLI against this engine."""
        result = subprocess.run(["docker", *args], capture_output=True, text=True,
                                timeout=timeout, env={**self.env, **(env or {})})
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: exit {result.returncode}\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result


def write_containers_conf(path: Path) -> None:
    _, nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    _, nproc = resource.getrlimit(resource.RLIMIT_NPROC)
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    runtime = 'runtime = "runc"\n' if shutil.which("runc") else ""
    path.write_text(f'[containers]\ndefault_ulimits = ["nofile={nofile}:{nofile}",'
                    f' "nproc={nproc}:{nproc}"]\n[engine]\n{runtime}')


@contextmanager
def podman_service(workdir: Path, timeout: float = 30.0) -> Iterator[Engine]:
    """``podman system service`` on a socket in ``workdir``, until the block ends."""
    conf = workdir / "containers.conf"
    write_containers_conf(conf)
    socket = workdir / "podman.sock"
    env = {**os.environ, "CONTAINERS_CONF": str(conf), "DOCKER_HOST": f"unix://{socket}"}
    env.pop("DOCKER_CONTEXT", None)
    with (workdir / "podman-service.log").open("w") as log:
        service = subprocess.Popen(["podman", "system", "service", "--time=0",
                                    f"unix://{socket}"], env=env, stdout=log, stderr=log)
    engine = Engine(socket, env)
    try:
        deadline = time.monotonic() + timeout
        while engine.docker("version", check=False, timeout=timeout).returncode != 0:
            if service.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("podman system service did not answer: "
                                     + (workdir / "podman-service.log").read_text()[-2000:])
            time.sleep(0.1)
        yield engine
    finally:
        service.terminate()
        service.wait(timeout=30)


def ensure_base_image() -> None:
    built = subprocess.run([str(ROOT / "scripts/container-base")], capture_output=True,
                           text=True, timeout=900, env={**os.environ,
                                                        "FAKEMX_BASE_IMAGE": BASE_IMAGE})
    assert built.returncode == 0, built.stdout + built.stderr


def image_tag() -> str:
    digest = hashlib.sha256()
    for name in IMAGE_INPUTS:
        path = ROOT / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts:
                continue
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return f"localhost/fakemx-test:{digest.hexdigest()[:16]}"


def wheelhouse(cache: Path) -> Path:
    """The wheels the image's build installs, downloaded here once per dependency list."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*BUILD_REQUIREMENTS, *project["dependencies"]]
    where = cache / hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:16]
    if (where / "complete").exists():
        return where
    partial = where.with_name(where.name + f".{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    fetched = subprocess.run([sys.executable, "-m", "pip", "download", "--quiet",
                              "--disable-pip-version-check", "--only-binary=:all:",
                              "--python-version", "3.11", "--dest", str(partial), *wanted],
                             capture_output=True, text=True, timeout=600)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    (partial / "complete").touch()
    try:
        partial.rename(where)
    except OSError:  # another run finished first: use its copy
        shutil.rmtree(partial, ignore_errors=True)
    return where


@contextmanager
def _machine_lock(name: str) -> Iterator[None]:
    with open(f"/run/lock/{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@contextmanager
def serve_directory(path: Path) -> Iterator[str]:
    """``path`` over HTTP on 127.0.0.1 (pip's --find-links reads its listing). The port is
    the same each time if free: the URL is a build argument, part of the layer cache's key."""
    handler = functools.partial(_QuietHandler, directory=str(path))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", WHEELHOUSE_PORT), handler)
    except OSError:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def build_image(engine: Engine, tag: str, wheels: Path, *extra: str
                ) -> subprocess.CompletedProcess[str]:
    """``docker build -t TAG .`` of this checkout, on the local base, from the wheelhouse.
    One build at a time on the machine: the other xdist worker then finds every layer built."""
    with _machine_lock("fakemx-image-build"), serve_directory(wheels) as url:
        built = engine.docker("build", "--network", "host",
                              "--build-arg", f"BASE={BASE_IMAGE}",
                              "--build-arg", "PIP_NO_INDEX=1",
                              "--build-arg", f"PIP_FIND_LINKS={url}",
                              *extra, "-t", tag, str(ROOT), timeout=900)
        # Earlier trees' images: removed unless a container uses one (no --force).
        repository = tag.rsplit(":", 1)[0]
        listed = engine.docker("images", "--format", "{{.Repository}}:{{.Tag}}", repository)
        for old in set(listed.stdout.split()) - {tag}:
            engine.docker("rmi", old, check=False)
        return built
