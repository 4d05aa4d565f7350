"""The whole classroom lab, without a Docker engine: compose's fakemx command and lab/relay.

Two network namespaces joined by a veth pair stand for compose's two
containers. In one runs ``fakemx`` with the compose file's own command (only
the volume paths point at temp dirs). In the other runs the relay exactly as
its image does: ``lab/relay/configure.sh`` on a copy of the package's
/etc/postfix (Debian's defaults, smtp chrooted), then ``lab/relay/entrypoint.sh``
(its dnsmasq, the chroot's files, ``postfix start-fg``). Names resolve as
compose resolves them: ``fakemx`` is in each namespace's /etc/hosts (``ip
netns exec`` bind-mounts /etc/netns/NAME/hosts), in place of compose's DNS.

Then swaks, run on the relay host, sends every exercise of the sheet to its
address, and the relay's log must say what the sheet says (fakemx.classroom).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from fakemx import classroom
from fakemx.profiles import catalog
from fakemx.store import Store

ROOT = Path(__file__).resolve().parent.parent
IP = shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
POSTFIX = shutil.which("postfix", path="/usr/sbin:/sbin:/usr/bin")
# Inside the test's own namespaces only: no other network sees these.
RELAY_IP, FAKEMX_IP = "10.87.0.1", "10.87.0.2"
READY_SECONDS = 60.0
VERDICT_SECONDS = 150.0  # the slowest exercise waits out the relay's 60 s end-of-data timeout
STUDENT = "student01"
INSTRUCTOR_TOKEN = "instructor-" + uuid.uuid4().hex
STUDENT_TOKEN = "student-" + uuid.uuid4().hex

# Run before every command on the relay host: the relay's own spool, state, log and
# /run over the machine's, in the mount namespace `ip netns exec` made for it.
ENTER = """#!/bin/sh
set -eu
mount --bind {root}/spool /var/spool/postfix
mount --bind {root}/lib /var/lib/postfix
mount --bind {root}/log /var/log
mount --bind {root}/run /run
exec "$@"
"""


def _why_not() -> str | None:
    if sys.platform != "linux":
        return "network namespaces are Linux only"
    if os.geteuid() != 0:
        return "network namespaces, bind mounts and Postfix need root"
    for tool in ("ip", "postfix", "swaks", "dnsmasq"):
        if shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin:/bin") is None:
            return f"`{tool}` is missing (Debian packages iproute2 postfix swaks dnsmasq-base)"
    if not Path("/usr/lib/postfix/configure-instance.sh").exists():
        return "Debian's Postfix package is needed (its configure-instance.sh)"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


def _run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def _ok(*args: str) -> None:
    done = _run(*args)
    assert done.returncode == 0, (args, done.stderr)


def compose_fakemx() -> tuple[list[str], dict[str, str]]:
    """The fakemx service's command and environment (the two tokens: this test's own)."""
    service = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["fakemx"]
    command = [str(part) for part in service["command"]]
    assert command[:2] == ["fakemx", "lab"]
    tokens = {"FAKEMX_API_TOKEN": INSTRUCTOR_TOKEN, "FAKEMX_STUDENT_TOKEN": STUDENT_TOKEN}
    environment = {name: tokens.get(name, str(value))
                   for name, value in service["environment"].items()}
    assert set(tokens) <= set(environment)
    return command[1:], environment


@dataclass
class Lab:
    relay_ns: str
    root: Path  # the relay host's spool, log, ...
    share: Path  # compose's relay-share volume
    state: Path  # compose's fakemx-state volume
    enter: Path

    def on_relay(self, command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        assert IP is not None
        return _run(IP, "netns", "exec", self.relay_ns, "sh", str(self.enter), "sh", "-c",
                    command, timeout=timeout)

    @property
    def log(self) -> str:
        path = self.root / "log" / "postfix.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _namespaces(tag: str) -> tuple[str, str]:
    assert IP is not None
    relay, fakemx = f"fmxlab-r-{tag}", f"fmxlab-f-{tag}"
    for name in (relay, fakemx):
        made = _run(IP, "netns", "add", name)
        if made.returncode != 0:
            pytest.skip(f"cannot create a network namespace: {made.stderr.strip()}")
    # The pair is made inside the namespaces: no interface of the machine's own changes.
    _ok(IP, "-n", relay, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0",
        "netns", fakemx)
    for name, address in ((relay, RELAY_IP), (fakemx, FAKEMX_IP)):
        _ok(IP, "-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
        _ok(IP, "-n", name, "link", "set", "eth0", "up")
        _ok(IP, "-n", name, "link", "set", "lo", "up")
        etc = Path("/etc/netns") / name
        etc.mkdir(parents=True)
        # compose's DNS answers the service name in every container; here, hosts files.
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n{FAKEMX_IP} fakemx\n")
    # The relay's upstream resolver (compose's, in Docker) answers nothing here:
    # every name the lab needs is in hosts or forwarded to fakemx's DNS.
    (Path("/etc/netns") / relay / "resolv.conf").write_text("nameserver 10.87.0.254\n")
    shutil.copytree("/etc/postfix", Path("/etc/netns") / relay / "postfix", symlinks=True)
    return relay, fakemx


def _kill_namespace_processes(name: str) -> None:
    """Everything this test started in ``name`` (fakemx, Postfix, dnsmasq, tail), by pid."""
    assert IP is not None
    pids = [int(pid) for pid in _run(IP, "netns", "pids", name).stdout.split()]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _wait_for(predicate: object, what: str, seconds: float = READY_SECONDS) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    assert IP is not None
    tag = uuid.uuid4().hex[:8]
    root = Path(tempfile.mkdtemp(prefix="fakemx-lab-", dir="/tmp"))
    root.chmod(0o755)
    relay_ns, fakemx_ns = _namespaces(tag)
    fakemx: subprocess.Popen[bytes] | None = None
    relay: subprocess.Popen[bytes] | None = None
    outputs = contextlib.ExitStack()
    try:
        share, state = root / "relay-share", root / "fakemx-state"
        for sub in ("spool", "lib", "log", "run", "relay-share", "fakemx-state"):
            (root / sub).mkdir()
        shutil.chown(root / "lib", "postfix", "postfix")
        enter = root / "enter.sh"
        enter.write_text(ENTER.format(root=root))
        command, environment = compose_fakemx()
        for option, path in (("--state-dir", state),
                             ("--postfix-transport", share / "postfix-transport"),
                             ("--export-ca", share / "ca.pem")):
            command[command.index(option) + 1] = str(path)
        env = {**os.environ, "PYTHONPATH": str(ROOT), **environment}
        fakemx_log = outputs.enter_context((root / "fakemx.out").open("wb"))
        fakemx = subprocess.Popen([IP, "netns", "exec", fakemx_ns, sys.executable, "-m",
                                   "fakemx", *command], cwd=ROOT, env=env,
                                  stdout=fakemx_log, stderr=subprocess.STDOUT)
        _wait_for(lambda: b"fakemx: API on" in (root / "fakemx.out").read_bytes()
                  or fakemx.poll() is not None, "fakemx lab")
        assert fakemx.poll() is None, (root / "fakemx.out").read_text()
        configured = _run(IP, "netns", "exec", relay_ns, "sh", str(enter), "sh",
                          str(ROOT / "lab/relay/configure.sh"))
        assert configured.returncode == 0, configured.stderr
        relay = subprocess.Popen([IP, "netns", "exec", relay_ns, "env", f"FAKEMX_SHARE={share}",
                                  "sh", str(enter), "sh", str(ROOT / "lab/relay/entrypoint.sh")],
                                 stdout=outputs.enter_context((root / "relay.out").open("wb")),
                                 stderr=subprocess.STDOUT)
        found = Lab(relay_ns, root, share, state, enter)
        _wait_for(lambda: "daemon started" in found.log or relay.poll() is not None,
                  "the relay's Postfix")
        assert relay.poll() is None, (root / "relay.out").read_text()
        yield found
    finally:
        if relay is not None:
            _run(IP, "netns", "exec", relay_ns, "sh", str(root / "enter.sh"), "postfix", "stop")
        if fakemx is not None:
            fakemx.send_signal(signal.SIGTERM)
            try:
                fakemx.wait(timeout=15)
            except subprocess.TimeoutExpired:
                fakemx.kill()
        for name in (relay_ns, fakemx_ns):
            _kill_namespace_processes(name)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)
            _run(IP, "netns", "delete", name)
        if relay is not None:
            relay.wait(timeout=15)
        outputs.close()
        shutil.rmtree(root, ignore_errors=True)


_QUEUED = re.compile(r"queued as ([0-9A-F]+)")
_STATUS = re.compile(r"postfix/\S+\[\d+\]: (?P<qid>[0-9A-F]+): to=<(?P<rcpt>[^>]*)>, "
                     r"relay=(?P<relay>\S+), .*?dsn=(?P<dsn>[0-9.]+), "
                     r"status=(?P<status>\w+) \((?P<reason>.*)\)$")


@dataclass(frozen=True)
class Logged:
    recipient: str
    status: str
    dsn: str
    reason: str


def attempts(log: str, queue_id: str) -> dict[str, list[Logged]]:
    """Each recipient's delivery attempts of the message, as the relay logged them."""
    found: dict[str, list[Logged]] = {}
    for match in map(_STATUS.search, log.splitlines()):
        if match and match["qid"] == queue_id:
            found.setdefault(match["rcpt"], []).append(
                Logged(match["rcpt"], match["status"], match["dsn"], match["reason"]))
    return found


def first_verdicts(log: str, queue_id: str) -> dict[str, Logged]:
    """Each recipient's first delivery attempt of the message."""
    return {recipient: tried[0] for recipient, tried in attempts(log, queue_id).items()}


def send(lab: Lab, item: classroom.Exercise) -> str:
    """The sheet's own command, on the relay host; the relay's queue id."""
    done = lab.on_relay(item.command(STUDENT))
    queued = _QUEUED.findall(done.stdout)
    assert done.returncode == 0, (item.case.name, done.stderr)
    assert queued, (item.case.name, done.stdout[-2000:])
    return queued[-1]


def sheet(lab: Lab) -> list[classroom.Exercise]:
    """The exercises as the running lab wrote them (its case names, from its state dir)."""
    return classroom.exercises(classroom.cases(catalog(), student=True, state_dir=lab.state))


def test_the_lab_writes_the_sheet_the_relay_and_students_use(lab: Lab) -> None:
    sheets = lab.state / "classroom"
    written = (sheets / classroom.SHEET_MD).read_text()
    for item in sheet(lab):
        if item.case.name != classroom.SINK:
            assert f"## {item.case.name}" in written
            assert item.case.profile.name not in written  # the answer is not on the sheet
    assert "4.4.318" in (sheets / classroom.ANSWER_KEY).read_text()
    zones = [line.split() for line in (lab.share / "dns-zones").read_text().splitlines()[1:]]
    cases = classroom.cases(catalog(), student=True, state_dir=lab.state)
    resolved = [case for case in cases if classroom.resolved_by_relay(case)]
    dns_exercises = [item for item in sheet(lab) if item.case.profile.dns is not None]
    assert [zone[0] for zone in zones] == [case.domain for case in resolved]
    assert len(resolved) > len(dns_exercises) > 5  # the stale cache is the trainer's
    # Fixed ports from compose's --dns-base-port, all of them published by compose.
    command, _ = compose_fakemx()
    base = int(command[command.index("--dns-base-port") + 1])
    assert [int(zone[1]) for zone in zones] == list(range(base, base + len(zones)))
    published = yaml.safe_load((ROOT / "docker-compose.yml").read_text())[
        "services"]["fakemx"]["ports"]
    for protocol in ("udp", "tcp"):
        assert f"127.0.0.1:{base}-{base + 19}:{base}-{base + 19}/{protocol}" in published
    assert len(zones) <= 20
    [smtp] = [spec for spec in published if spec.startswith("127.0.0.1:2600-")]
    last = int(smtp.split(":")[1].split("-")[1])
    assert last - 2600 + 1 >= len(cases)  # a published port for every case


def test_every_exercise_ends_as_its_sheet_says(lab: Lab) -> None:
    exercises = sheet(lab)
    with ThreadPoolExecutor(max_workers=8) as pool:
        queue_ids = list(pool.map(lambda item: send(lab, item), exercises))

    def verdicts_of(item: classroom.Exercise, queue_id: str) -> dict[str, Logged]:
        return first_verdicts(lab.log, queue_id)

    deadline = time.monotonic() + VERDICT_SECONDS
    while True:
        pending = [item.case.name for item, qid in zip(exercises, queue_ids, strict=True)
                   if len(verdicts_of(item, qid)) < len(item.recipients)]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not pending, f"no verdict for {pending}; relay log tail:\n{lab.log[-4000:]}"

    wrong = []
    for item, queue_id in zip(exercises, queue_ids, strict=True):
        logged = verdicts_of(item, queue_id)
        expected = item.verdict
        allowed = [(expected.status, expected.dsn, item.reason_parts())]
        allowed += [(other.status, other.dsn, item.reason_parts(other.reason))
                    for other in expected.alternatives]
        if item.by_chance:  # a coin toss per attempt: the first may get through
            allowed.append(("sent", "2.0.0", []))
        for recipient in item.recipients[expected.sent_recipients:]:
            got = logged[recipient]
            if not any(got.status == status and got.dsn == dsn
                       and all(part in got.reason for part in parts)
                       for status, dsn, parts in allowed):
                wrong.append(f"{item.case.name} ({item.case.profile.name}): {got}"
                             f" (the sheet: {item.expected()})")
        for recipient in item.recipients[:expected.sent_recipients]:
            assert logged[recipient].status == "sent", (item.case.name, logged[recipient])
    assert not wrong, "\n".join(wrong)
    retries_get_through(lab, [(item, qid) for item, qid in zip(exercises, queue_ids,
                                                               strict=True) if item.later])


def retries_get_through(lab: Lab, later: list[tuple[classroom.Exercise, str]]) -> None:
    """The exercises the sheet says a retry gets through: the relay's queue is flushed
    (its retries now, not at its backoff) until each is sent, at the attempt it says."""
    assert later, "the sheet has no exercise that a retry gets through (greylisting)"

    def waiting() -> list[str]:
        def sent(item: classroom.Exercise, qid: str) -> bool:
            tried = attempts(lab.log, qid)
            return all(bool(tried.get(recipient)) and tried[recipient][-1].status == "sent"
                       for recipient in item.recipients[item.verdict.sent_recipients:])

        return [item.case.name for item, qid in later if not sent(item, qid)]

    deadline = time.monotonic() + VERDICT_SECONDS
    while waiting() and time.monotonic() < deadline:
        lab.on_relay("postqueue -f")
        time.sleep(1)
    assert not waiting(), f"never sent: {waiting()}; relay log tail:\n{lab.log[-4000:]}"
    for item, qid in later:
        if item.verdict.sent_on_attempt is not None and not item.by_chance:
            tried = attempts(lab.log, qid)[item.recipients[-1]]
            assert len(tried) == item.verdict.sent_on_attempt, (item.case.name, tried)


def test_the_positive_control_is_stored_with_the_students_sender(lab: Lab) -> None:
    [control] = [item for item in sheet(lab) if item.case.name == classroom.SINK]
    queue_id = send(lab, control)
    _wait_for(lambda: bool(first_verdicts(lab.log, queue_id)), "the control's verdict",
              VERDICT_SECONDS)
    [logged] = first_verdicts(lab.log, queue_id).values()
    assert (logged.status, logged.dsn) == ("sent", "2.0.0"), logged
    assert f"fakemx[{FAKEMX_IP}]:2600" in lab.log  # compose's name, resolved in the chroot
    store = Store(lab.state)
    try:
        senders = [m.mail_from for m in store.messages()]
    finally:
        store.close()
    assert f"{STUDENT}@{classroom.STUDENT_DOMAIN}" in senders


def test_the_relay_runs_smtp_chrooted_with_the_files_it_needs(lab: Lab) -> None:
    """Debian's default: smtp chrooted in the spool; the entrypoint fills the chroot's
    etc as Debian's init script would (``postfix start-fg`` alone does not)."""
    entry = lab.on_relay("postconf -M smtp/unix tlsverify/unix").stdout.split("\n")
    assert [line.split()[4] for line in entry if line] == ["y", "y"]
    chroot_etc = lab.root / "spool" / "etc"
    assert "nameserver 127.0.0.1" in (chroot_etc / "resolv.conf").read_text()
    assert f"{FAKEMX_IP} fakemx" in (chroot_etc / "hosts").read_text()
    assert (chroot_etc / "nsswitch.conf").exists()
