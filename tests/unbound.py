"""A private unbound: the validating resolver in front of fakemx's signed zone.

Its own config, pid and log under a temporary directory, run in the
foreground by the test (``unbound -d``), never the system service. It trusts
only fakemx's anchor (``trust-anchor-file``: the DS of the zone apex) and asks
fakemx's DNS server for everything under the apex (``stub-zone``); nothing
else has an anchor, so every other name is insecure and no chain to the real
root is needed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

UNBOUND = shutil.which("unbound", path="/usr/sbin:/sbin:/usr/bin")
DIG = shutil.which("dig")
DELV = shutil.which("delv")
READY_SECONDS = 15.0

CONFIG = """\
server:
    username: ""
    chroot: ""
    directory: "{root}"
    pidfile: "{root}/unbound.pid"
    logfile: "{root}/unbound.log"
    use-syslog: no
    verbosity: 1
    val-log-level: 2
    # Extended DNS Errors (RFC 8914) in SERVFAIL answers: bogus is told from broken.
    ede: yes
    interface: {listen}
    port: 53
    do-ip6: no
    do-not-query-localhost: no
{anchor}    # unbound answers test. itself (RFC 6761) unless told not to.
    local-zone: "{origin}." nodefault
    # A fresh answer per test: nothing a previous profile left is believed.
    cache-max-ttl: 1
    cache-max-negative-ttl: 1
    infra-host-ttl: 1
    val-bogus-ttl: 1

stub-zone:
    name: "{origin}."
    stub-addr: {upstream}@53

remote-control:
    control-enable: no
"""


class PrivateUnbound:
    """unbound listening on ``listen``:53, validating ``origin`` with ``anchor``."""

    def __init__(self, root: Path, *, listen: str, upstream: str, anchor: Path | None,
                 origin: str = "test", prefix: Sequence[str] = ()) -> None:
        self.root = root
        self.listen = listen
        self._prefix = list(prefix)
        self.config = root / "unbound.conf"
        self.log = root / "unbound.log"
        # No anchor (an unsigned zone): nothing is secure, every answer insecure.
        trust = f'    trust-anchor-file: "{anchor}"\n' if anchor is not None else ""
        self.config.write_text(CONFIG.format(root=root, listen=listen, upstream=upstream,
                                             anchor=trust, origin=origin))
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert UNBOUND is not None
        assert DIG is not None
        self._process = subprocess.Popen([*self._prefix, UNBOUND, "-d", "-c", str(self.config)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:  # poll: ready when it answers at all
            if self._process.poll() is not None:
                error = self._process.stderr.read() if self._process.stderr else b""
                raise AssertionError(f"unbound exited: {error!r} {self.log_text()[-2000:]}")
            if self.dig("localhost.", "A", "+time=1", "+tries=1").returncode == 0:
                return
            time.sleep(0.05)
        raise AssertionError(f"unbound did not answer: {self.log_text()[-2000:]}")

    def stop(self) -> None:
        if self._process is None:
            return
        self._process.terminate()  # only the unbound this object started, by its pid
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=10)
        if self._process.stderr is not None:
            self._process.stderr.close()
        self._process = None

    def dig(self, name: str, rdtype: str, *options: str) -> subprocess.CompletedProcess[str]:
        """``dig +dnssec`` through this resolver (status and the ``ad`` flag tell its verdict)."""
        assert DIG is not None
        return subprocess.run([*self._prefix, DIG, "+dnssec", "+time=3", "+tries=1",
                               f"@{self.listen}", name, rdtype, *options],
                              capture_output=True, text=True, timeout=15, check=False)

    def verdict(self, name: str, rdtype: str) -> str:
        """secure (an answer with ``ad``), insecure (without), bogus (SERVFAIL with a DNSSEC
        Extended DNS Error, RFC 8914 4.7-4.13: codes 6-12), or servfail (any other)."""
        out = self.dig(name, rdtype).stdout
        if "status: SERVFAIL" in out:
            ede = re.search(r"; EDE: (\d+)", out)
            return "bogus" if ede is not None and 6 <= int(ede[1]) <= 12 else "servfail"
        flags = re.search(r";; flags:([^;]*);", out)
        assert flags is not None, out
        return "secure" if "ad" in flags[1].split() else "insecure"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""
