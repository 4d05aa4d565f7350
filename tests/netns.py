"""A network namespace for a relay and fakemx, and fakemx started inside it.

The namespace has only a loopback interface and its own /etc/resolv.conf
(``/etc/netns/NAME/resolv.conf``, which ``ip netns exec`` mounts over
/etc/resolv.conf for the processes it starts), so the machine's resolver is
never touched and fakemx may take ports 25 and 53. Used by
tests/test_dns_postfix.py (Postfix resolving through fakemx's DNS) and
tests/test_dane_postfix.py and tests/test_dane_exim.py (through a validating
unbound in front of it, tests/dane.py), and tests/test_dns_exim.py (Exim
looking the MX up through fakemx's DNS).
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from probing import AttemptT, LoggedRelay

from fakemx.store import Store

ROOT = Path(__file__).resolve().parent.parent
POSTFIX = shutil.which("postfix", path="/usr/sbin:/sbin:/usr/bin")
IP = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
READY_SECONDS = 20.0


# The DNS tests: fakemx on 127.0.0.2 (a relay takes 127.0.0.1 for itself), its DNS the
# namespace's resolver, mail for example.test.
FAKEMX_IP = "127.0.0.2"
DOMAIN = "example.test"
VERDICT_SECONDS = 30.0

# The healthy control of the DNS tests: the MX points at fakemx, which accepts the message.
HEALTHY_PROFILE = """
[dns]
[[dns.records]]
name = "example.test"
type = "MX"
value = "10 mx.example.test"
[[dns.records]]
name = "mx.example.test"
type = "A"
value = "{fakemx}"
"""


def why_no_namespace() -> str | None:
    """Why a network namespace cannot be made here, or None."""
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating a network namespace and starting a relay need root"
    if IP is None:
        return "`ip` is missing (Debian package iproute2; scripts/test installs it)"
    return None


def why_not() -> str | None:
    """Why a namespace with Postfix cannot run here, or None."""
    if POSTFIX is None:
        return "Postfix is missing (Debian package postfix; scripts/test installs it)"
    return why_no_namespace()


def run(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


@contextmanager
def namespace(resolv_conf: str) -> Iterator[str]:
    """A fresh namespace (its name) with only loopback up, and ``resolv_conf`` as its
    /etc/resolv.conf; deleted, with that file, on exit."""
    assert IP is not None
    name = f"fakemx-{uuid.uuid4().hex[:10]}"
    etc = Path("/etc/netns") / name
    made = run(IP, "netns", "add", name)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        up = run(IP, "-n", name, "link", "set", "lo", "up")
        assert up.returncode == 0, up.stderr
        etc.mkdir(parents=True)
        (etc / "resolv.conf").write_text(resolv_conf)
        yield name
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        run(IP, "netns", "delete", name)


@contextmanager
def fakemx_in(netns: str, profile: str, state_dir: Path, host: str,
              *options: str) -> Iterator[None]:
    """``fakemx serve PROFILE`` inside the namespace: SMTP on HOST:25, DNS on HOST:53
    (``options`` may move DNS elsewhere, e.g. ``--dns-host``)."""
    assert IP is not None
    command = [IP, "netns", "exec", netns, sys.executable, "-m", "fakemx", "serve", profile,
               "--host", host, "--port", "25", "--dns-port", "53",
               "--state-dir", str(state_dir), *options]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # `ip netns exec` execs the command, so this pid is fakemx's own.
    process = subprocess.Popen(command, cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_ready(process, ":53")
        yield
    finally:
        stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it lingers; only this process, by its pid."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


def _wait_ready(process: subprocess.Popen[bytes], dns_port: str) -> None:
    """Until fakemx prints its DNS ready line (it comes after the SMTP one)."""
    assert process.stdout is not None
    deadline = time.monotonic() + READY_SECONDS
    seen = b""
    ready = b"DNS for"
    # Raw reads: a buffered readline could swallow both lines while select() waits.
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        while not (ready in seen and seen.endswith(b"\n")) and time.monotonic() < deadline:
            if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
                break
            chunk = os.read(process.stdout.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    if ready in seen and seen.endswith(b"\n"):
        assert dns_port.encode() in seen, seen
        return
    assert process.stderr is not None
    process.kill()
    raise AssertionError(f"fakemx did not start in the namespace: {seen!r} "
                         f"{process.stderr.read()[-2000:]!r}")


def stored_messages(state_dir: Path) -> int:
    """How many messages fakemx stored in ``state_dir`` (read after it stopped)."""
    store = Store(state_dir)
    try:
        return len(list(store.messages()))
    finally:
        store.close()


def in_namespace(netns: str) -> list[str]:
    """The command prefix that runs a program inside ``netns``."""
    assert IP is not None
    return [IP, "netns", "exec", netns]


def resolving_through_fakemx() -> Iterator[str]:
    """A namespace whose resolver is fakemx's DNS server (a DNS test module makes it its
    fixture: ``netns = pytest.fixture(scope="module", name="netns")(...)``)."""
    # One try of one second: resolver failures show up fast (glibc's default is 5 s x 2).
    with namespace(f"nameserver {FAKEMX_IP}\noptions timeout:1 attempts:1\n") as name:
        yield name


def first_verdict(relay: LoggedRelay[AttemptT], netns: str, profile: str,
                  state_dir: Path) -> AttemptT:
    """fakemx plays ``profile`` in the namespace; the relay's first attempt to deliver a
    message to bob@example.test (the queue is emptied after, so no retry reaches the
    next test)."""
    try:
        with fakemx_in(netns, profile, state_dir, FAKEMX_IP):
            return relay.wait_verdict(relay.send(f"bob@{DOMAIN}"), timeout=VERDICT_SECONDS)[0]
    finally:
        relay.drop_queue()


def healthy_verdict(relay: LoggedRelay[AttemptT], netns: str,
                    tmp_path: Path) -> tuple[AttemptT, int]:
    """The positive control: the MX points at fakemx, which accepts the message. The
    relay's first verdict, and how many messages fakemx stored."""
    profile = tmp_path / "dns-healthy.toml"
    profile.write_text(HEALTHY_PROFILE)
    state = tmp_path / "state"
    verdict = first_verdict(relay, netns, str(profile), state)
    return verdict, stored_messages(state)
