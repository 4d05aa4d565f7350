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
import re
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
from dataclasses import dataclass
from pathlib import Path

import pytest

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

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
mail_owner = postfix
setgid_group = postdrop
myhostname = relay.fakemx.test
mydomain = fakemx.test
myorigin = $myhostname
mydestination =
inet_interfaces = loopback-only
inet_protocols = ipv4
relayhost = {domain}
smtp_host_lookup = dns
disable_dns_lookups = no
smtp_tls_security_level = none
smtp_connect_timeout = 3s
smtp_helo_timeout = 3s
queue_run_delay = 1s
minimal_backoff_time = 60s
maximal_backoff_time = 60s
notify_classes =
biff = no
append_dot_mydomain = no
"""

# No smtpd, nothing chrooted: only what takes mail from sendmail and sends it on.
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_STATUS = re.compile(
    r"postfix/\S+\[\d+\]: (?P<qid>[0-9A-F]+): to=<[^>]*>, relay=(?P<relay>\S+), "
    r".*?dsn=(?P<dsn>[0-9.]+), status=(?P<status>\w+) \((?P<reason>.*)\)$"
)


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


@dataclass(frozen=True)
class Verdict:
    status: str
    dsn: str
    relay: str
    reason: str


class NamespacedPostfix:
    """A private Postfix instance whose every process lives in the namespace."""

    def __init__(self, netns: str, root: Path) -> None:
        self.netns = netns
        self.root = root
        self.config = root / "etc"
        self.log = root / "maillog"

    def command(self, *args: str) -> list[str]:
        assert IP is not None
        return [IP, "netns", "exec", self.netns, *args]

    def start(self) -> None:
        # Postfix's daemons run as the postfix user: every directory above its files
        # must be traversable by it.
        self.root.chmod(0o755)
        for sub in ("etc", "queue", "data"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root / "data", "postfix", "postfix")
        (self.config / "main.cf").write_text(MAIN_CF.format(root=self.root, domain=DOMAIN))
        (self.config / "master.cf").write_text(MASTER_CF)
        assert POSTFIX is not None
        started = _run(*self.command(POSTFIX, "-c", str(self.config), "start"), timeout=60)
        assert started.returncode == 0, started.stderr

    def stop(self) -> None:
        assert POSTFIX is not None
        _run(*self.command(POSTFIX, "-c", str(self.config), "stop"), timeout=60)
        pid_file = self.root / "queue" / "pid" / "master.pid"
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else 0
        deadline = time.monotonic() + 10
        while pid and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # poll: the master exits once its children have
        if pid and _alive(pid):
            os.kill(pid, signal.SIGKILL)  # only the master we started, by its pid

    def send(self, recipient: str) -> str:
        """Inject with this instance's sendmail; the null sender, so bounces are discarded."""
        message_id = f"<{uuid.uuid4().hex}@relay.fakemx.test>"
        message = f"From: <>\nTo: <{recipient}>\nSubject: dns probe\nMessage-ID: {message_id}\n\n" \
                  "fakemx DNS probe\n"
        subprocess.run(
            self.command("/usr/sbin/sendmail", "-C", str(self.config), "-f", "", "--", recipient),
            input=message.encode(), check=True, timeout=30, capture_output=True,
        )
        return message_id

    def drop_queue(self) -> None:
        """Delete every queued message, so no retry of this test reaches the next one."""
        _run(*self.command("/usr/sbin/postsuper", "-c", str(self.config), "-d", "ALL"))

    def verdict(self, message_id: str, timeout: float = VERDICT_SECONDS) -> Verdict:
        """Poll the log for the first delivery attempt of ``message_id``."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log.read_text(errors="replace") if self.log.exists() else ""
            queue_id = next((m[1] for m in re.finditer(r": ([0-9A-F]+): message-id=(<[^>]*>)",
                                                       text) if m[2] == message_id), None)
            for match in map(_STATUS.search, text.splitlines()):
                if match and match["qid"] == queue_id:
                    return Verdict(match["status"], match["dsn"], match["relay"], match["reason"])
            if time.monotonic() > deadline:
                raise TimeoutError(f"no verdict for {message_id}; log tail:\n{text[-3000:]}")
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def relay(netns: str) -> Iterator[NamespacedPostfix]:
    root = Path(tempfile.mkdtemp(prefix="fakemx-dns-postfix-", dir="/tmp"))
    instance = NamespacedPostfix(netns, root)
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


def test_healthy_mx_delivers_into_fakemx(relay: NamespacedPostfix, netns: str,
                                         tmp_path: Path) -> None:
    """Positive control: the MX lookup through fakemx's DNS leads Postfix to fakemx."""
    profile = tmp_path / "dns-healthy.toml"
    profile.write_text(HEALTHY_PROFILE)
    state = tmp_path / "state"
    with fakemx_in(netns, str(profile), state):
        verdict = relay.verdict(relay.send(f"bob@{DOMAIN}"))
    assert (verdict.status, verdict.dsn) == ("sent", "2.0.0"), verdict
    assert verdict.relay == f"mx.{DOMAIN}[{FAKEMX_IP}]:25", verdict
    assert _stored_messages(state) == 1


@pytest.mark.parametrize("name", RELAY_PROFILES)
def test_postfix_verdict_through_fakemx_dns(
    name: str, relay: NamespacedPostfix, netns: str, tmp_path: Path
) -> None:
    about = load_profile(name).about
    assert about is not None
    assert about.postfix is not None, f"{name}: declare [about.postfix]"
    expected = about.postfix
    state = tmp_path / "state"
    try:
        with fakemx_in(netns, name, state):
            verdict = relay.verdict(relay.send(f"bob@{DOMAIN}"))
    finally:
        relay.drop_queue()
    assert (verdict.status, verdict.dsn) == (expected.status, expected.dsn), verdict
    assert expected.reason in verdict.reason, verdict
    # Mail that was sent went to fakemx; any other verdict left nothing there.
    assert _stored_messages(state) == (1 if expected.status == "sent" else 0)
