"""A private Postfix instance, the real relay the end-to-end tests send through.

Its own config directory, queue and log file; no smtpd on any port (nothing
listens); mail goes in through its own sendmail. One instance serves every
profile: a transport map served by the test itself (Postfix's tcp_table
protocol, on loopback) routes ``<local>@p<PORT>.test`` to ``[127.0.0.1]:PORT``
with opportunistic TLS, ``v<PORT>.test`` with TLS verified against fakemx's CA,
``e<PORT>.test`` with TLS required but not verified, ``w<PORT>.test`` over
implicit TLS (SMTPS, verified), ``h<PORT>.test`` with the EHLO name
``localhost.localdomain``, and ``a<PORT>.test`` logging in with SMTP AUTH (Cyrus
SASL) as ``credentials[PORT]`` says, looked up in the same table, and
``l<PORT>.test`` over LMTP (Postfix's lmtp(8) client, ``lmtp:inet:[127.0.0.1]:PORT``).
(A regexp map cannot do it:
trivial-rewrite refuses $1 substitution in transport maps.) Timeouts and retry
delays are a few seconds so every verdict arrives quickly; the sender is the
null sender unless a profile asks otherwise, so bounces are discarded.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socketserver
import subprocess
import threading
import time
import urllib.parse
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from probing import LoggedRelay, alive

POSTFIX = shutil.which("postfix") or shutil.which("postfix", path="/usr/sbin:/sbin")
SENDMAIL = "/usr/sbin/sendmail"

# What every private instance shares: its own queue, data and log; loopback only.
BASE_SETTINGS = {
    "compatibility_level": "3.6",
    "queue_directory": "{root}/queue",
    "data_directory": "{root}/data",
    "maillog_file": "{root}/maillog",
    "maillog_file_prefixes": "{root}",
    "mail_owner": "postfix",
    "setgid_group": "postdrop",
    "myhostname": "relay.fakemx.test",
    "mydomain": "fakemx.test",
    "myorigin": "$myhostname",
    "mydestination": "",
    "relayhost": "",
    "inet_interfaces": "loopback-only",
    "inet_protocols": "ipv4",
    "smtp_address_preference": "ipv4",
    "smtp_helo_name": "relay.fakemx.test",
    "smtp_connection_cache_on_demand": "no",
    "queue_run_delay": "1s",
    "minimal_backoff_time": "1s",
    "maximal_backoff_time": "2s",
    "notify_classes": "",
    "biff": "no",
    "append_dot_mydomain": "no",
}

# The end-to-end relay: routed by recipient domain to a port on 127.0.0.1 (no DNS),
# opportunistic TLS trusting fakemx's CA, Postfix's timeouts scaled by 0.01
# (300 s -> 3 s; smtp_data_done_timeout 600 s -> 6 s) as the profiles are.
ROUTED_SETTINGS = {
    "transport_maps": "tcp:127.0.0.1:{table_port}",
    "default_transport": "error:no route in the fakemx test relay",
    "smtp_host_lookup": "native",
    "smtp_tls_security_level": "may",
    "smtp_tls_CAfile": "{ca_file}",
    "smtp_tls_loglevel": "1",
    **{f"smtp_{stage}_timeout": "3s" for stage in (
        "connect", "helo", "mail", "rcpt", "data_init", "data_xfer", "starttls", "quit")},
    "smtp_data_done_timeout": "6s",
    # Only the sasl service (a<PORT>.test) logs in; the table has its credentials.
    "smtp_sasl_password_maps": "tcp:127.0.0.1:{table_port}",
    "smtp_sasl_security_options": "noanonymous",  # PLAIN and LOGIN too (Cyrus SASL)
    "smtp_sasl_tls_security_options": "noanonymous",
}

# recipient domain prefix -> master.cf service
SERVICES = {"p": "smtp", "v": "tlsverify", "e": "tlsencrypt", "h": "badhelo", "w": "smtps",
            "a": "sasl", "l": "lmtp"}
_ROUTE = re.compile(r"@([pvehwal])([0-9]+)\.test$")
_SASL_KEY = re.compile(r"^\[127\.0\.0\.1\]:([0-9]+)$")  # smtp_sasl_password_maps: the next hop

# Postfix's own master.cf, minus smtpd and the pipes, nothing chrooted.
MASTER_CF = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
tlsverify unix  -       -       n       -       -       smtp
  -o smtp_tls_security_level=verify
tlsencrypt unix -       -       n       -       -       smtp
  -o smtp_tls_security_level=encrypt
badhelo   unix  -       -       n       -       -       smtp
  -o smtp_helo_name=localhost.localdomain
smtps     unix  -       -       n       -       -       smtp
  -o smtp_tls_wrappermode=yes
  -o smtp_tls_security_level=verify
sasl      unix  -       -       n       -       -       smtp
  -o smtp_sasl_auth_enable=yes
lmtp      unix  -       -       n       -       -       lmtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

_STATUS = re.compile(
    r"postfix/\S+\[\d+\]: (?P<qid>[0-9A-F]+): to=<(?P<rcpt>[^>]*)>, relay=(?P<relay>\S+), "
    r".*?dsn=(?P<dsn>[0-9.]+), status=(?P<status>\w+) \((?P<reason>.*)\)$"
)


@dataclass(frozen=True)
class Verdict:
    """One delivery attempt to one recipient, as Postfix logged it."""

    queue_id: str
    status: str  # sent, deferred, bounced
    dsn: str
    relay: str
    reason: str
    recipient: str = ""


def route(key: str) -> str | None:
    """The transport for a lookup key, e.g. ``bob@p2525.test`` -> ``smtp:[127.0.0.1]:2525``."""
    match = _ROUTE.search(key)
    if match is None:
        return None
    inet = "inet:" if match[1] == "l" else ""  # lmtp(8) also speaks to unix sockets
    return f"{SERVICES[match[1]]}:{inet}[127.0.0.1]:{match[2]}"


class _TransportTable(socketserver.ThreadingTCPServer):
    """Answers Postfix's tcp_table(5) lookups: ``get KEY`` -> ``200 VALUE`` or ``500``.

    A transport lookup's key is a recipient; a password lookup's is the next hop,
    ``[127.0.0.1]:PORT``, answered with ``credentials[PORT]`` (``login:password``).
    """

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TransportLookup)
        self.credentials: dict[int, str] = {}

    def lookup(self, key: str) -> str | None:
        sasl = _SASL_KEY.match(key)
        if sasl is not None:
            return self.credentials.get(int(sasl[1]))
        return route(key)


class _TransportLookup(socketserver.StreamRequestHandler):
    server: _TransportTable

    def handle(self) -> None:
        for line in self.rfile:
            request = line.decode().strip()
            key = urllib.parse.unquote(request.removeprefix("get "))
            value = self.server.lookup(key) if request.startswith("get ") else None
            if value is None:
                self.wfile.write(b"500 not-found\n")
            else:
                self.wfile.write(f"200 {urllib.parse.quote(value)}\n".encode())
            self.wfile.flush()


class PrivatePostfix(LoggedRelay[Verdict]):
    """A private instance under ``root``.

    ``settings`` override main.cf (e.g. a relayhost resolved through DNS);
    ``prefix`` runs every Postfix command under it (``ip netns exec NAME``);
    ``routed`` adds the end-to-end routing by recipient domain to a port.
    """

    def __init__(
        self,
        root: Path,
        ca_file: Path | None = None,
        *,
        settings: Mapping[str, str] | None = None,
        prefix: Sequence[str] = (),
        routed: bool = True,
    ) -> None:
        self.root = root
        self.config = root / "etc"
        self.log = root / "maillog"
        self._ca_file = ca_file
        self._prefix = list(prefix)
        self._table = _TransportTable() if routed else None
        self._settings = {**BASE_SETTINGS, **(ROUTED_SETTINGS if routed else {}),
                          **(settings or {})}

    def start(self) -> None:
        assert POSTFIX is not None, "postfix is not installed"
        # Postfix's daemons run as the postfix user: every directory above its
        # files must be traversable by it (pytest's tmp_path is not).
        self.root.chmod(0o755)
        for sub in ("etc", "queue", "data"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root / "data", "postfix", "postfix")
        values = {"root": str(self.root), "ca_file": str(self._ca_file)}
        if self._table is not None:
            threading.Thread(target=self._table.serve_forever, daemon=True).start()
            values["table_port"] = str(self._table.server_address[1])
        main_cf = "".join(f"{key} = {value.format(**values)}\n"
                          for key, value in self._settings.items())
        (self.config / "main.cf").write_text(main_cf)
        (self.config / "master.cf").write_text(MASTER_CF)
        started = self._run(POSTFIX, "-c", str(self.config), "start")
        assert started.returncode == 0, started.stderr

    def stop(self) -> None:
        assert POSTFIX is not None
        self._run(POSTFIX, "-c", str(self.config), "stop")
        if self._table is not None:
            self._table.shutdown()
            self._table.server_close()
        pid_file = self.root / "queue" / "pid" / "master.pid"
        pid = int(pid_file.read_text().split()[0] or 0) if pid_file.exists() else 0
        deadline = time.monotonic() + 10
        while pid and alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # poll: the master exits once its children have
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)  # only the master we started, by its pid

    def log_in(self, port: int, credentials: str) -> None:
        """``a<PORT>.test`` logs in to ``port`` as ``login:password`` (SMTP AUTH)."""
        assert self._table is not None, "only a routed instance logs in"
        self._table.credentials[port] = credentials

    def send(self, recipient: str | Sequence[str], body: str = "fakemx probe",
             sender: str = "") -> str:
        """Inject one message (to one recipient or several) with the instance's own
        sendmail; returns its Message-ID.

        The null sender (the default) makes Postfix discard the bounce.
        """
        recipients = [recipient] if isinstance(recipient, str) else list(recipient)
        message_id = f"<{uuid.uuid4().hex}@relay.fakemx.test>"
        to = ", ".join(f"<{r}>" for r in recipients)
        message = (
            f"From: <{sender}>\nTo: {to}\nSubject: probe\nMessage-ID: {message_id}\n"
            f"\n{body}\n"
        )
        sent = self._run(SENDMAIL, "-C", str(self.config), "-f", sender, "--", *recipients,
                         input=message)
        assert sent.returncode == 0, sent.stderr
        return message_id

    def drop_queue(self) -> None:
        """Delete every queued message, so no retry reaches the next test."""
        self._run("/usr/sbin/postsuper", "-c", str(self.config), "-d", "ALL")

    def verdicts(self, message_id: str, recipient: str | None = None) -> list[Verdict]:
        """Every delivery attempt logged for the message (for one recipient if given)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        queue_id = next(
            (m[1] for m in re.finditer(r": ([0-9A-F]+): message-id=(<[^>]*>)", text)
             if m[2] == message_id), None
        )
        if queue_id is None:
            return []
        return [
            Verdict(m["qid"], m["status"], m["dsn"], m["relay"], m["reason"], m["rcpt"])
            for m in map(_STATUS.search, text.splitlines())
            if m and m["qid"] == queue_id and recipient in (None, m["rcpt"])
        ]

    def lines_about(self, port: int) -> list[str]:
        """Log lines that name fakemx's address (TLS verification details carry no queue id)."""
        needle = f"127.0.0.1[127.0.0.1]:{port}"
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line for line in text.splitlines() if needle in line]

    def _run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._prefix, *args], input=input, capture_output=True,
                              text=True, timeout=60)

