"""MTA-STS through a real relay: Postfix asking postfix-mta-sts-resolver for each domain's policy.

In a network namespace: fakemx's SMTP on 127.0.0.2:25, its policy host on
127.0.0.2:443 and its DNS on 127.0.0.3:53 (the namespace's resolv.conf names
it, so Postfix, c-ares in the daemon and aiohttp all resolve through fakemx);
``mta-sts-daemon`` on 127.0.0.1 trusting fakemx's CA (SSL_CERT_FILE: aiohttp
uses OpenSSL's default paths); a private Postfix delivering straight to the MX
of example.test with ``smtp_tls_security_level = may`` and
``smtp_tls_policy_maps = socketmap:inet:...:postfix`` (the daemon's documented
setup), trusting fakemx's CA too.

Each ``mta-sts`` profile is held to two verdicts: the daemon's answer
(``postmap -q example.test socketmap:...``, Postfix's own client of the map:
``secure match=...`` or no policy) and Postfix's ``[about.postfix]`` verdict
for a probe to bob@example.test. What really happens is written down: a
policy the daemon cannot fetch or parse is no policy, so Postfix delivers
(RFC 8461 3.3 for a sender without a cached policy); an enforce policy
becomes ``secure`` with the policy's ``mx`` patterns as the names the MX's
certificate must carry, so an MX the policy does not list fails certificate
verification (Postfix's 4.7.5), not an MX check (Exchange's 4.4.8).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import netns as ns
import pytest
from postfix import PrivatePostfix, Verdict

from fakemx import PostfixVerdict
from fakemx.profiles import catalog, load_profile
from fakemx.tls.certs import CA_FILE

FAKEMX_IP = "127.0.0.2"
DNS_IP = "127.0.0.3"
DAEMON_IP, DAEMON_PORT = "127.0.0.1", 8461
DOMAIN = "example.test"
POLICY_MAP = f"socketmap:inet:{DAEMON_IP}:{DAEMON_PORT}:postfix"
VERDICT_SECONDS = 30.0
READY_SECONDS = 20.0
# The policy-changed profile at this scale: its id changes 3 s after start, not 60 s.
CHANGE_TIME_SCALE = 0.05

# The daemon runs as a child (sys.executable); only whether it is installed matters here.
RESOLVER_MISSING = None if importlib.util.find_spec("postfix_mta_sts_resolver") else (
    "postfix-mta-sts-resolver is missing (PyPI; the test extras list it:"
    " python3 -m pip install postfix-mta-sts-resolver)")

NO_POLICY = ""
SECURE = "secure match={} servername=hostname"
FETCH_FAILED = "STS policy fetch for domain 'example.test' failed with error: "
# profile -> (the daemon's answer for example.test: "" is NOTFOUND, no policy;
#             what its log shows: the policy it parsed, or why the fetch failed)
DAEMON_ANSWERS: dict[str, tuple[str, str]] = {
    "mta-sts-valid": (SECURE.format("mx.fakemx.test"), "'mode': 'enforce'"),
    "4.4.8-mta-sts-mx-mismatch": (SECURE.format("mail.example.test"), "'mode': 'enforce'"),
    "4.7.5-mta-sts-certificate-invalid": (SECURE.format("mx.fakemx.test"), "'mode': 'enforce'"),
    "mta-sts-policy-host-down": (NO_POLICY, FETCH_FAILED + "Cannot connect to host"),
    # aiohttp's timeout and the daemon's own error for a status other than 200 carry no
    # text: the log says only that the fetch failed.
    "mta-sts-policy-host-timeout": (NO_POLICY, FETCH_FAILED + "\n"),
    "mta-sts-policy-not-found": (NO_POLICY, FETCH_FAILED + "\n"),
    "mta-sts-policy-server-error": (NO_POLICY, FETCH_FAILED + "\n"),
    "mta-sts-policy-invalid": (NO_POLICY, "'mode': 'enforced'"),
    "mta-sts-policy-host-untrusted": (NO_POLICY, "[SSLCertVerificationError: (1, '[SSL:"
                                      " CERTIFICATE_VERIFY_FAILED] certificate verify failed"),
}
CHANGED = "4.4.8-mta-sts-policy-changed"

# The daemon's configuration (YAML; JSON is YAML). A short fetch timeout for the
# policy host that never answers; cache_grace 1 s: the daemon serves a cached
# policy without looking at the TXT id again for that long (60 s by default).
# reuse_port stays true: 1.5.1 fails to start with false (UnboundLocalError: opts).
DAEMON_CONFIG = """\
{{"host": "{host}", "port": {port}, "reuse_port": true, "shutdown_timeout": 2,
 "cache_grace": 1, "cache": {{"type": "internal"}},
 "default_zone": {{"strict_testing": false, "timeout": 2}}}}
"""

MTA_STS_SETTINGS = {
    "smtp_host_lookup": "dns",
    "disable_dns_lookups": "no",
    "smtp_tls_security_level": "may",
    "smtp_tls_policy_maps": POLICY_MAP,
    "smtp_tls_CAfile": "{ca_file}",  # fakemx's CA, copied here from each run's state dir
    "smtp_tls_loglevel": "1",
    **{f"smtp_{stage}_timeout": "3s" for stage in ("connect", "helo", "starttls")},
    "minimal_backoff_time": "60s",  # one attempt per probe: no retry reaches the next test
    "maximal_backoff_time": "60s",
    "max_use": "1",  # a fresh smtp(8) per delivery: it reads the CA file anew
}


def _why_not() -> str | None:
    return ns.why_not() or RESOLVER_MISSING


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=_why_not() or "")


def mta_sts_profiles() -> list[str]:
    return sorted(p.name for p in catalog() if p.mta_sts is not None)


def test_every_mta_sts_profile_is_here() -> None:
    assert mta_sts_profiles() == sorted([*DAEMON_ANSWERS, CHANGED])


class Relay:
    """The private Postfix and its CA file, in the namespace."""

    def __init__(self, netns: str, root: Path) -> None:
        assert ns.IP is not None
        self.prefix = [ns.IP, "netns", "exec", netns]
        self.ca_file = root / "ca.pem"
        self.postfix = PrivatePostfix(root, self.ca_file, settings=MTA_STS_SETTINGS,
                                      prefix=self.prefix, routed=False)

    def policy(self) -> str:
        """The daemon's answer for example.test, asked as Postfix asks it."""
        asked = subprocess.run([*self.prefix, "/usr/sbin/postmap", "-c", str(self.postfix.config),
                                "-q", DOMAIN, POLICY_MAP],
                               capture_output=True, text=True, timeout=30, check=False)
        assert asked.returncode in (0, 1), asked  # 1: not found
        assert not asked.stderr, asked
        return asked.stdout.strip()

    def attempt(self) -> Verdict:
        try:
            return self.postfix.wait_verdict(self.postfix.send(f"bob@{DOMAIN}"),
                                              timeout=VERDICT_SECONDS)[0]
        finally:
            self.postfix.drop_queue()

    def lines_of(self, verdict: Verdict) -> list[str]:
        """What the smtp(8) process that made ``verdict`` logged (one delivery each:
        max_use = 1), so no earlier test's lines count."""
        lines = self.postfix.log.read_text(errors="replace").splitlines()
        process = next(re.search(r"postfix/smtp\[\d+\]", line)
                       for line in lines if f" {verdict.queue_id}: to=" in line)
        assert process is not None
        return [line for line in lines if process[0] in line]


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    """A namespace whose only resolver is fakemx's DNS."""
    with ns.namespace(f"nameserver {DNS_IP}\noptions timeout:2 attempts:1\n") as name:
        yield name


@pytest.fixture(scope="module")
def relay(netns: str) -> Iterator[Relay]:
    root = Path(tempfile.mkdtemp(prefix="fakemx-sts-postfix-", dir="/tmp"))
    instance = Relay(netns, root)
    instance.postfix.start()
    try:
        yield instance
    finally:
        instance.postfix.stop()
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def daemon(netns: str, ca_file: Path) -> Iterator[Path]:
    """A fresh mta-sts-daemon (empty cache) trusting ``ca_file``; yields its log."""
    assert ns.IP is not None
    root = Path(tempfile.mkdtemp(prefix="fakemx-sts-daemon-", dir="/tmp"))
    config, log = root / "mta-sts-daemon.yml", root / "daemon.log"
    config.write_text(DAEMON_CONFIG.format(host=DAEMON_IP, port=DAEMON_PORT))
    env = {**os.environ, "SSL_CERT_FILE": str(ca_file)}
    process = subprocess.Popen(
        [ns.IP, "netns", "exec", netns, sys.executable, "-c",
         "from postfix_mta_sts_resolver.daemon import main; main()",
         "-c", str(config), "-l", str(log), "-v", "debug", "--disable-uvloop"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + READY_SECONDS
        while "Server started." not in (log.read_text() if log.exists() else ""):
            assert process.poll() is None, process.stderr.read() if process.stderr else b""
            assert time.monotonic() < deadline, log.read_text() if log.exists() else ""
            time.sleep(0.05)  # poll: ready when it says so
        yield log
    finally:
        ns.stop(process)  # only the daemon this test started, by its pid
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def served(netns: str, relay: Relay, profile: str, state_dir: Path,
           *options: str) -> Iterator[Path]:
    """fakemx serving ``profile`` (policy host on :443), its CA given to Postfix, and a
    fresh daemon; yields the daemon's log."""
    with ns.fakemx_in(netns, profile, state_dir, FAKEMX_IP, "--dns-host", DNS_IP,
                      "--mta-sts-port", "443", *options):
        shutil.copyfile(state_dir / CA_FILE, relay.ca_file)
        with daemon(netns, state_dir / CA_FILE) as log:
            yield log


def declared(name: str) -> PostfixVerdict:
    about = load_profile(name).about
    assert about is not None
    assert about.postfix is not None, f"{name}: declare [about.postfix]"
    assert about.postfix.tls == "mta-sts", name
    return about.postfix


def assert_verdict(name: str, relay: Relay, verdict: Verdict) -> None:
    """Postfix's verdict is the profile's ``[about.postfix]``, its log line included."""
    expected = declared(name)
    lines = relay.lines_of(verdict)
    assert (verdict.status, verdict.dsn) == (expected.status, expected.dsn), (verdict, lines)
    assert expected.reason in verdict.reason, (verdict, lines)
    assert any(expected.log in line for line in lines), lines


@pytest.mark.parametrize("name", sorted(DAEMON_ANSWERS))
def test_mta_sts_verdicts(name: str, netns: str, relay: Relay, tmp_path: Path) -> None:
    state = tmp_path / "state"
    with served(netns, relay, name, state) as log:
        answer = relay.policy()
        verdict = relay.attempt()
        daemon_log = log.read_text(errors="replace")
    expected_answer, daemon_says = DAEMON_ANSWERS[name]
    assert answer == expected_answer, daemon_log[-2000:]
    assert daemon_says in daemon_log, daemon_log[-2000:]
    assert_verdict(name, relay, verdict)
    assert ns.stored_messages(state) == (1 if declared(name).status == "sent" else 0)


def test_a_changed_policy_id_is_fetched_again(netns: str, relay: Relay, tmp_path: Path) -> None:
    """Delivered under id 1; once the TXT id is 2 (and the daemon's 1 s grace has passed)
    the daemon fetches the new policy, and Postfix defers: the MX is no longer listed."""
    state = tmp_path / "state"
    with served(netns, relay, CHANGED, state, "--time-scale", str(CHANGE_TIME_SCALE)) as log:
        first_answer = relay.policy()
        first = relay.attempt()
        deadline = time.monotonic() + VERDICT_SECONDS
        later_answer = first_answer
        while later_answer == first_answer and time.monotonic() < deadline:
            time.sleep(0.2)  # poll: the id changes at 3 s, the grace ends 1 s after a lookup
            later_answer = relay.policy()
        later = relay.attempt()
        daemon_log = log.read_text(errors="replace")
    assert first_answer == SECURE.format("mx.fakemx.test"), daemon_log[-2000:]
    assert (first.status, first.dsn) == ("sent", "2.0.0"), first
    assert any("Verified TLS connection established" in line for line in relay.lines_of(first))
    assert later_answer == SECURE.format("mail.example.test"), daemon_log[-2000:]
    # Fetched twice: at id 1, and once again at id 2 (every other lookup: "not changed").
    assert daemon_log.count("Parsed policy for domain example.test") == 2, daemon_log[-3000:]
    assert_verdict(CHANGED, relay, later)
    assert ns.stored_messages(state) == 1
