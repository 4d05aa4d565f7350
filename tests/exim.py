"""A private Exim instance, the second real relay the end-to-end tests send through.

Debian's exim4 packages conflict with postfix, so scripts/test unpacks the
daemon package (exim4-daemon-light: Exim 4.96 with GnuTLS) into a cache
directory and this harness runs that binary with its own ``-C`` configuration,
spool and log (as root: Exim honours ``-C`` for root only). No daemon listens:
mail goes in through ``exim -bm -odb`` and a queue-runner daemon (``-q1s``,
no ``-bd``) retries what was deferred.

One instance serves every profile, routed like the Postfix harness
(tests/postfix.py): ``<local>@p<PORT>.test`` goes to ``127.0.0.1:PORT`` with
Exim's own TLS defaults (TLS when offered, the certificate verified but a
failure only logged, a failed handshake retried in clear), ``e<PORT>.test``
with TLS required (``hosts_require_tls``), ``v<PORT>.test`` with TLS
required and verified against fakemx's CA (``tls_verify_hosts``),
``w<PORT>.test`` over implicit TLS (``protocol = smtps``, verified),
``h<PORT>.test`` with the EHLO name ``localhost.localdomain`` and
``a<PORT>.test`` logging in (SMTP AUTH, ``hosts_try_auth`` as Debian's
smarthost setup does; PLAIN and LOGIN) with the credentials ``log_in`` gave, and
``l<PORT>.test`` over LMTP (``protocol = lmtp``). Exim's
timeouts are scaled by 0.01 like the profiles (5 min -> 3 s, the final
dot's 10 min -> 6 s) and it retries every second.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from probing import LoggedRelay, alive

# scripts/test unpacks exim4-daemon-light here (FAKEMX_EXIM_DIR overrides it); a
# machine with Debian's exim4 installed the ordinary way has /usr/sbin/exim4.
EXIM_DIR = Path(os.environ.get("FAKEMX_EXIM_DIR", "/var/cache/fakemx/exim4"))
EXIM_USER = "Debian-exim"  # compiled into Debian's binary


def exim_binary() -> Path | None:
    for candidate in (EXIM_DIR / "usr/sbin/exim4", Path("/usr/sbin/exim4")):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def why_no_exim() -> str | None:
    """Why a private Exim cannot run here, or None when it can."""
    binary = exim_binary()
    if binary is None:
        return (f"Exim is not unpacked in {EXIM_DIR} (scripts/test unpacks Debian's"
                " exim4-daemon-light there, as root)")
    if os.geteuid() != 0:
        return "a private Exim instance needs root (Exim honours -C only for root)"
    try:
        pwd.getpwnam(EXIM_USER)
    except KeyError:
        return (f"the user {EXIM_USER}, compiled into Debian's Exim, is missing"
                " (scripts/test adds it)")
    version = subprocess.run([str(binary), "-C", "/dev/null", "-bV"], capture_output=True,
                             text=True, timeout=30, check=False)
    if "Exim version" not in version.stdout:
        return f"{binary} does not run: {(version.stderr or version.stdout).strip()[:300]}"
    return None


# The transports by recipient domain prefix; every one is Exim's smtp transport with
# its defaults, except for what the letter asks for (tests/e2e and [about.exim] name
# these by the Postfix levels: may, encrypt, verify, implicit).
TRANSPORTS = {
    "p": "",
    "e": "  hosts_require_tls = *\n  tls_try_verify_hosts =\n  tls_verify_cert_hostnames =\n",
    "v": "  hosts_require_tls = *\n  tls_verify_hosts = *\n",
    "w": "  protocol = smtps\n  hosts_require_tls = *\n  tls_verify_hosts = *\n",
    "h": "  helo_data = localhost.localdomain\n",
    "a": "  hosts_try_auth = *\n",
    "l": "  protocol = lmtp\n",  # Exim's smtp transport speaking LMTP (LHLO)
}

CONFIGURE = """\
exim_path = {exim}
spool_directory = {root}/spool
log_file_path = {root}/log/%slog
pid_file_path = {root}/exim.pid
primary_hostname = relay.fakemx.test
qualify_domain = relay.fakemx.test
local_interfaces = <; 127.0.0.1.0
keep_environment =
log_selector = +tls_certificate_verified +tls_peerdn +outgoing_port +received_recipients
message_size_limit = 0
tls_advertise_hosts =
timeout_frozen_after = 1h

begin routers

{routers}
unrouted:
  driver = redirect
  allow_fail
  data = :fail: no route in the fakemx test relay

begin transports

{transports}
begin retry

*  *  F,2h,1s

begin authenticators

{authenticators}"""

# The a<PORT>.test transport's login: {root}/passwd has "PORT: user=LOGIN pass=PASSWORD".
_CREDENTIAL = "${{extract{{{key}}}{{${{lookup{{$host_port}}lsearch{{{root}/passwd}}}}}}}}"
AUTHENTICATORS = """plain:
  driver = plaintext
  public_name = PLAIN
  client_send = ^{user}^{password}

login:
  driver = plaintext
  public_name = LOGIN
  client_send = : {user} : {password}
"""

# A transport's name cannot come from the (tainted) recipient domain: one router each.
ROUTER = """\
fakemx_{letter}:
  driver = manualroute
  domains = \\N^{letter}[0-9]+\\.test$\\N
  transport = {letter}_smtp
  route_list = * 127.0.0.1
  self = send

"""

# Exim's timeouts scaled like Postfix's (the e2e suite runs fakemx at time_scale 0.01).
_TIMEOUTS = """\
  connect_timeout = 3s
  command_timeout = 3s
  data_timeout = 3s
  final_timeout = 6s
"""
TRANSPORT = """\
{letter}_smtp:
  driver = smtp
  port = ${{substr_1:${{sg{{$domain}}{{\\N\\.test$\\N}}{{}}}}}}
  tls_verify_certificates = {ca_file}
""" + _TIMEOUTS + "{extra}\n"

_MESSAGE_ID = re.compile(r"\b[0-9A-Za-z]{6}-[0-9A-Za-z]{6,}-[0-9A-Za-z]{2}\b")
# For a router that finds fakemx itself (an MX lookup): port 25, Exim's TLS defaults,
# or DANE (tests/test_dane_exim.py): mx_dane uses it when the TLSA records are
# DNSSEC-secure (Postfix's dane level), mx_dane_only defers without them (dane-only).
MX_TRANSPORT = """\
{name}:
  driver = smtp
  tls_verify_certificates = {ca_file}
""" + _TIMEOUTS + "{extra}\n"
MX_TRANSPORTS = {
    "mx_smtp": "",
    "mx_dane": "  dnssec_request_domains = *\n  hosts_try_dane = *\n",
    "mx_dane_only": "  dnssec_request_domains = *\n  hosts_require_dane = *\n",
}

# One delivery attempt to one recipient: => (and ->) sent, == deferred, ** bounced.
_ATTEMPT = re.compile(
    r"^\S+ \S+ (?P<mid>[0-9A-Za-z]{6}-[0-9A-Za-z]{6,}-[0-9A-Za-z]{2}) "
    r"(?P<mark>=>|->|==|\*\*) (?P<rcpt>[^\s:]+):?(?: <(?P<given>[^>]*)>)? (?P<rest>.*)$"
)
# "->": another recipient sent in the same SMTP transaction as the "=>" one.
_STATUS = {"=>": "sent", "->": "sent", "==": "deferred", "**": "bounced"}
# Not an attempt: the queue runner skipping a message whose retry time has not come.
_NOT_AN_ATTEMPT = ("retry time not reached",)


@dataclass(frozen=True)
class Verdict:
    """One delivery attempt to one recipient, as Exim's mainlog has it."""

    message: str  # Exim's message id
    status: str  # sent, deferred, bounced
    reason: str  # the rest of the log line after the recipient
    recipient: str = ""


class PrivateExim(LoggedRelay[Verdict]):
    """A private instance under ``root``; ``prefix`` runs every Exim command under it.

    ``router`` replaces the routing by recipient domain to a port (e.g. a
    dnslookup router that looks the MX up, to the ``mx_smtp`` transport: Exim's
    defaults on port 25).
    """

    def __init__(self, root: Path, ca_file: Path, *, prefix: Sequence[str] = (),
                 router: str | None = None) -> None:
        binary = exim_binary()
        assert binary is not None, why_no_exim()
        self.binary = binary
        self.root = root
        self.config = root / "exim.conf"
        self.log = root / "log" / "mainlog"
        self._ca_file = ca_file
        self._prefix = list(prefix)
        self._router = router

    def start(self) -> None:
        for sub in ("spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
            shutil.chown(self.root / sub, EXIM_USER, EXIM_USER)
        # The deliveries run as Debian-exim: it must reach the spool, and cannot read
        # fakemx's private state dir, so the CA is copied beside the configuration.
        self.root.chmod(0o755)
        ca_file = self.root / "ca.pem"
        shutil.copyfile(self._ca_file, ca_file)
        ca_file.chmod(0o644)
        values = {"exim": str(self.binary), "root": str(self.root), "ca_file": str(ca_file)}
        transports = "".join(TRANSPORT.format(letter=letter, extra=extra, **values)
                             for letter, extra in TRANSPORTS.items())
        transports += "".join(MX_TRANSPORT.format(name=name, extra=extra, **values)
                              for name, extra in MX_TRANSPORTS.items())
        routers = self._router or "".join(ROUTER.format(letter=letter) for letter in TRANSPORTS)
        (self.root / "passwd").write_text("")
        (self.root / "passwd").chmod(0o644)
        login = {key: _CREDENTIAL.format(key=key, root=self.root) for key in ("user", "pass")}
        authenticators = AUTHENTICATORS.format(user=login["user"], password=login["pass"])
        text = CONFIGURE.format(transports=transports, routers=routers,
                                authenticators=authenticators, **values)
        self.config.write_text(text)
        checked = self._run("-bV")
        assert checked.returncode == 0, checked.stdout + checked.stderr
        # The queue runner: a daemon that retries every second and listens nowhere (no -bd).
        started = self._run("-q1s", "-oP", str(self.root / "exim.pid"))
        assert started.returncode == 0, started.stdout + started.stderr

    def stop(self) -> None:
        pid_file = self.root / "exim.pid"
        deadline = time.monotonic() + 10
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # poll: the daemon writes its pid once it has forked
        pid = int(pid_file.read_text().split()[0] or 0) if pid_file.exists() else 0
        if pid:
            os.kill(pid, signal.SIGTERM)  # only the daemon we started, by its pid
        while pid and alive(pid) and time.monotonic() < deadline + 10:
            time.sleep(0.05)
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)

    def send(self, recipient: str | Sequence[str], body: str = "fakemx probe",
             sender: str = "") -> str:
        """Inject one message (to one recipient or several) and start its delivery in the
        background; returns its Message-ID. The null sender gets no bounce."""
        recipients = [recipient] if isinstance(recipient, str) else list(recipient)
        message_id = f"<{uuid.uuid4().hex}@relay.fakemx.test>"
        to = ", ".join(f"<{r}>" for r in recipients)
        message = (f"From: <{sender}>\nTo: {to}\nSubject: probe\nMessage-ID: {message_id}\n"
                   f"\n{body}\n")
        sent = self._run("-odb", "-f", sender or "<>", "--", *recipients, input=message)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        return message_id

    def log_in(self, port: int, credentials: str) -> None:
        """``a<PORT>.test`` logs in to ``port`` as ``login:password`` (SMTP AUTH)."""
        login, _, password = credentials.partition(":")
        (self.root / "passwd").write_text(f"{port}: user={login} pass={password}\n")

    def drop_queue(self) -> None:
        """Delete every queued message and the retry hints, so nothing reaches the next test."""
        ids = _MESSAGE_ID.findall(self._run("-bp").stdout)
        if ids:
            self._run("-Mrm", *ids)
        for hints in (self.root / "spool" / "db").glob("*"):
            hints.unlink(missing_ok=True)

    def _text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def verdicts(self, message_id: str, recipient: str | None = None) -> list[Verdict]:
        """Every delivery attempt logged for the message (for one recipient if given)."""
        text = self._text()
        exim_id = next((m[1] for m in re.finditer(
            r" ([0-9A-Za-z]{6}-[0-9A-Za-z]{6,}-[0-9A-Za-z]{2}) <= .* id=(\S+)", text)
            if f"<{m[2]}>" == message_id), None)
        if exim_id is None:
            return []
        found = []
        for m in map(_ATTEMPT.search, text.splitlines()):
            # <given>: the address as the message named it, where Exim sent another (a UTF-8
            # local part it downconverted for a server without SMTPUTF8: xn--...).
            if m is None or m["mid"] != exim_id:
                continue
            rcpt = m["given"] or m["rcpt"]
            if recipient not in (None, rcpt):
                continue
            if any(skip in m["rest"] for skip in _NOT_AN_ATTEMPT):
                continue
            found.append(Verdict(exim_id, _STATUS[m["mark"]], m["rest"], rcpt))
        return found

    def lines_about(self, port: int) -> list[str]:
        """Mainlog lines that name fakemx's address (TLS details come on lines of their own)."""
        needle = f"[127.0.0.1]:{port}"
        return [line for line in self._text().splitlines() if needle in line]

    def _run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._prefix, str(self.binary), "-C", str(self.config), *args],
                              input=input, capture_output=True, text=True, timeout=60,
                              check=False)

