"""A real relay resolving through fakemx's DNS: Postfix in a network namespace.

The namespace has only a loopback interface and its own /etc/resolv.conf
(``/etc/netns/NAME/resolv.conf``, which ``ip netns exec`` mounts over
/etc/resolv.conf for the processes it starts), so the machine's resolver
is never touched. Inside it run fakemx (``fakemx serve``: SMTP on
127.0.0.2:25, DNS on 127.0.0.2:53, the ports an MX lookup implies) and a
private Postfix instance (own config and queue, no smtpd listening) whose
relayhost is ``example.test`` *without* brackets, so Postfix looks up its MX
(``smtp_host_lookup = dns``). fakemx is on 127.0.0.2 because Postfix treats
its own addresses (127.0.0.1 with ``inet_interfaces = loopback-only``) as
"mail loops back to myself".

Each DNS profile that declares ``[about.postfix]`` is held to it here.
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from postfix import PrivatePostfix

from fakemx.profiles import load_profile
from fakemx.store import Store

ROOT = Path(__file__).resolve().parent.parent
FAKEMX_IP = "127.0.0.2"
DOMAIN = "example.test"
POSTFIX = shutil.which("postfix", path="/usr/sbin:/sbin:/usr/bin")
IP = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
READY_SECONDS = 20.0
VERDICT_SECONDS = 30.0

# The profiles a relay is held to (each declares [about.postfix]); the stale-cache
# profile needs a caching resolver, which Postfix is not: tests/test_dns.py.
RELAY_PROFILES = [
    "4.4.312-servfail",
    "4.4.312-nxdomain",
    "4.4.312-refused",
    "4.4.312-no-answer",
    "4.4.312-slow",
    "4.4.312-no-mx-implicit-a",
    "4.4.312-null-mx",
    "4.4.312-mx-target-no-address",
    "4.4.312-cname-loop",
    "4.4.312-truncated-tcp-refused",
]

# The healthy control: the MX points at fakemx, which accepts the message.
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

# The relay's only route is its relayhost, looked up as an MX through fakemx's DNS.
DNS_SETTINGS = {
    "relayhost": DOMAIN,
    "smtp_host_lookup": "dns",
    "disable_dns_lookups": "no",
    "smtp_tls_security_level": "none",
    "smtp_connect_timeout": "3s",
    "smtp_helo_timeout": "3s",
    "minimal_backoff_time": "60s",  # one attempt per test: no retry reaches the next one
    "maximal_backoff_time": "60s",
}


def _why_not() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "creating a network namespace and starting Postfix need root"
    if IP is None:
        return "`ip` is missing (Debian package iproute2; scripts/test installs it)"
    if POSTFIX is None:
        return "Postfix is missing (Debian package postfix; scripts/test installs it)"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


def _run(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """A fresh network namespace with only loopback up, and its own resolv.conf."""
    assert IP is not None
    name = f"fakemx-{uuid.uuid4().hex[:10]}"
    etc = Path("/etc/netns") / name
    made = _run(IP, "netns", "add", name)
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    try:
        up = _run(IP, "-n", name, "link", "set", "lo", "up")
        assert up.returncode == 0, up.stderr
        etc.mkdir(parents=True)
        # One try of one second: resolver failures show up fast (glibc's default is 5 s x 2).
        (etc / "resolv.conf").write_text(
            f"nameserver {FAKEMX_IP}\noptions timeout:1 attempts:1\n"
        )
        yield name
    finally:
        shutil.rmtree(etc, ignore_errors=True)
        _run(IP, "netns", "delete", name)


@pytest.fixture(scope="module")
def relay(netns: str) -> Iterator[PrivatePostfix]:
    """A private Postfix whose every process lives in the namespace."""
    assert IP is not None
    root = Path(tempfile.mkdtemp(prefix="fakemx-dns-postfix-", dir="/tmp"))
    instance = PrivatePostfix(root, settings=DNS_SETTINGS, prefix=[IP, "netns", "exec", netns],
                              routed=False)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def fakemx_in(netns: str, profile: str, state_dir: Path) -> Iterator[None]:
    """``fakemx serve PROFILE`` inside the namespace: SMTP on :25, DNS on :53."""
    assert IP is not None
    command = [IP, "netns", "exec", netns, sys.executable, "-m", "fakemx", "serve", profile,
               "--host", FAKEMX_IP, "--port", "25", "--dns-port", "53",
               "--state-dir", str(state_dir)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # `ip netns exec` execs the command, so this pid is fakemx's own.
    process = subprocess.Popen(command, cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_ready(process)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()
        process.stderr.close()


def _wait_ready(process: subprocess.Popen[bytes]) -> None:
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
        assert f"{FAKEMX_IP}:53".encode() in seen, seen
        return
    assert process.stderr is not None
    process.kill()
    raise AssertionError(f"fakemx did not start in the namespace: {seen!r} "
                         f"{process.stderr.read()[-2000:]!r}")


def _stored_messages(state_dir: Path) -> int:
    store = Store(state_dir)
    try:
        return len(list(store.messages()))
    finally:
        store.close()


def test_healthy_mx_delivers_into_fakemx(relay: PrivatePostfix, netns: str,
                                         tmp_path: Path) -> None:
    """Positive control: the MX lookup through fakemx's DNS leads Postfix to fakemx."""
    profile = tmp_path / "dns-healthy.toml"
    profile.write_text(HEALTHY_PROFILE)
    state = tmp_path / "state"
    with fakemx_in(netns, str(profile), state):
        verdict = relay.wait_verdict(relay.send(f"bob@{DOMAIN}"), timeout=VERDICT_SECONDS)[0]
    assert (verdict.status, verdict.dsn) == ("sent", "2.0.0"), verdict
    assert verdict.relay == f"mx.{DOMAIN}[{FAKEMX_IP}]:25", verdict
    assert _stored_messages(state) == 1


@pytest.mark.parametrize("name", RELAY_PROFILES)
def test_postfix_verdict_through_fakemx_dns(
    name: str, relay: PrivatePostfix, netns: str, tmp_path: Path
) -> None:
    about = load_profile(name).about
    assert about is not None
    assert about.postfix is not None, f"{name}: declare [about.postfix]"
    expected = about.postfix
    state = tmp_path / "state"
    try:
        with fakemx_in(netns, name, state):
            verdict = relay.wait_verdict(relay.send(f"bob@{DOMAIN}"),
                                         timeout=VERDICT_SECONDS)[0]
    finally:
        relay.drop_queue()
    assert (verdict.status, verdict.dsn) == (expected.status, expected.dsn), verdict
    assert expected.reason in verdict.reason, verdict
    # Mail that was sent went to fakemx; any other verdict left nothing there.
    assert _stored_messages(state) == (1 if expected.status == "sent" else 0)
