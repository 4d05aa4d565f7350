"""The probe: DNS, then one SMTP session the way a relay opens it, stopped before DATA.

Every step appends one ``Step``; the first failure ends the session, as it
would end a relay's attempt. It sends EHLO, STARTTLS, ``MAIL FROM:<>`` and
``RCPT TO`` (only with ``--rcpt``) and QUIT: never DATA, never a message.
"""

from __future__ import annotations

import re
import socket
import ssl

from fakemx.diagnose import certcheck, dane, mtasts, tlsprobe
from fakemx.diagnose.dnsprobe import Address, resolve
from fakemx.diagnose.model import Finding, Options, Reply, Severity, Step, TlsPolicy
from fakemx.diagnose.wire import Ended, Garbled, Silent, Wire
from fakemx.smtp import seam

_MASKED = re.compile(r"^[\s*]*$|\*{4,}")  # Cisco's SMTP fixup: 220 ***************


class Stop(Exception):
    """The session cannot go on (the step saying why is already recorded)."""


def probe(options: Options) -> list[Step]:
    steps, addresses = resolve(options)
    if addresses:
        if len(addresses) > 1:
            steps.append(Step("dns", Severity.INFO,
                              f"probing the first address, {addresses[0].ip}, as a relay tries"
                              f" first ({len(addresses) - 1} more not probed)"))
        try:  # DANE's DNS comes first: a relay meeting bogus DNSSEC does not connect
            records = dane.lookup(options, addresses[0], steps) \
                if options.tls is TlsPolicy.DANE else None
        except dane.Failed:
            return steps
        policy = mtasts.check(options, addresses[0], steps)
        if steps[-1].severity is Severity.FAIL:  # enforced, and the MX is not in the policy
            return steps
        Session(options, addresses[0], steps, records,
                sts_enforced=policy is not None and policy.enforced).run()
    return steps


class Session:
    def __init__(self, options: Options, address: Address, steps: list[Step],
                 tlsa: dane.Dane | None = None, sts_enforced: bool = False) -> None:
        self.options = options
        self.sts_enforced = sts_enforced  # MTA-STS enforce: the certificate must verify
        self.tlsa = tlsa  # secure TLSA records: STARTTLS mandatory, the chain must match
        self.address = address
        self.steps = steps
        self.timeouts = options.timeouts
        self.previous = "connect"  # the last step that got a reply
        self.opened: list[socket.socket] = []  # every socket (TLS ones too), closed at the end

    def add(self, name: str, severity: Severity, line: str, finding: Finding | None = None,
            reply: Reply | None = None, **facts: object) -> None:
        self.steps.append(Step(name, severity, line, finding, reply, facts))

    @property
    def where(self) -> str:
        ip = self.address.ip
        return f"[{ip}]:{self.options.target.port}" if ":" in ip else \
            f"{ip}:{self.options.target.port}"

    def run(self) -> None:
        try:
            sock = self.connect()
            if sock is not None:
                self.converse(Wire(sock))
        except Stop:
            pass
        finally:
            for sock in self.opened:
                sock.close()

    def keep(self, sock: socket.socket) -> socket.socket:
        self.opened.append(sock)
        return sock

    def connect(self) -> socket.socket | None:
        seconds = self.timeouts.connect_seconds
        try:
            sock = self.keep(socket.create_connection(
                (self.address.ip, self.options.target.port), timeout=seconds))
        except ConnectionRefusedError:
            self.add("connect", Severity.FAIL, f"{self.where}: connection refused (RST to the"
                     " SYN: nothing listens, or a firewall rejects)", Finding.CONNECT_REFUSED)
        except ConnectionResetError:
            self.add("connect", Severity.FAIL, f"{self.where}: connection reset right after"
                     " connect", Finding.CONNECT_RESET, how="rst")
        except TimeoutError:
            self.add("connect", Severity.FAIL, f"{self.where}: no answer to the SYN within"
                     f" {seconds:g} s (connect timed out)", Finding.CONNECT_TIMEOUT)
        except OSError as exc:
            self.add("connect", Severity.FAIL, f"{self.where}: {exc.strerror or exc}",
                     Finding.CONNECT_TIMEOUT, errno=exc.errno)
        else:
            self.add("connect", Severity.OK, f"{self.where}: connected")
            return sock
        return None

    def converse(self, wire: Wire) -> None:
        greeting = self.expect(wire, "greeting", None, quiet=True)
        if _MASKED.search(greeting.text):
            self.add("greeting", Severity.WARN, f"{greeting}: the banner is masked (an"
                     " inspecting firewall rewrites the session)", Finding.BANNER_MASKED,
                     greeting)
        elif self.steps[-1].name != "greeting":  # not already reported as slow
            self.add("greeting", Severity.OK, str(greeting), reply=greeting)
        extensions = self.ehlo(wire)
        if self.options.tls is not TlsPolicy.NONE:
            wire = self.starttls(wire, extensions)
        elif "STARTTLS" in extensions:
            self.add("starttls", Severity.SKIP, "STARTTLS offered, not tried (--tls none)")
        if self.options.rcpt is None:
            self.add("mail", Severity.SKIP, "no MAIL FROM or RCPT TO (--rcpt ADDR probes a"
                     " recipient with the null sender)")
        else:
            self.expect(wire, "mail", "MAIL FROM:<>")
            self.expect(wire, "rcpt", f"RCPT TO:<{self.options.rcpt}>")
        self.expect(wire, "quit", "QUIT")

    def ehlo(self, wire: Wire) -> dict[str, str]:
        try:
            reply = self.expect(wire, "ehlo", f"EHLO {self.options.helo}", quiet=True)
        except Stop:
            last = self.steps[-1]
            if last.reply is None or last.reply.code not in (500, 502):
                raise
            # RFC 5321 4.1.4: a server that does not know EHLO gets HELO, as relays do.
            self.steps[-1] = Step("ehlo", Severity.WARN, f"{last.line}: an SMTP server without"
                                  " ESMTP (no extensions, so no STARTTLS)", Finding.HELO_ONLY,
                                  last.reply)
            self.expect(wire, "ehlo", f"HELO {self.options.helo}")
            return {}
        extensions = {}
        for line in reply.lines[1:]:
            keyword, _, value = line.partition(" ")
            extensions[keyword.upper()] = value
        shown = ", ".join(f"{k} {v}".strip() for k, v in extensions.items()) or "none"
        size = extensions.get("SIZE", "")
        limit = int(size) if size.isdigit() and int(size) else None  # SIZE 0: no limit
        self.add("ehlo", Severity.OK, f"EHLO {self.options.helo}: {reply.code}, extensions:"
                 f" {shown}", Finding.SIZE_LIMIT if limit else None, reply,
                 extensions=sorted(extensions), size=limit)
        return extensions

    def expect(self, wire: Wire, name: str, command: str | None, quiet: bool = False) -> Reply:
        """Send ``command`` (None: just read), record the reply; Stop on any failure."""
        seconds = self.timeouts.reply_seconds
        try:
            reply = wire.reply(seconds) if command is None else wire.command(command, seconds)
        except Ended as exc:
            self.ended(name, exc.how)
            raise Stop from None
        except Silent:
            if name == "greeting":
                self.silent_greeting(wire)
            else:
                self.add(name, Severity.FAIL, f"{command}: no reply within {seconds:g} s",
                         Finding.REPLY_TIMEOUT, stage=name)
            raise Stop from None
        except Garbled as exc:
            self.add(name, Severity.FAIL, f"not SMTP: {exc}", Finding.NOT_SMTP,
                     said=exc.line, stage=name)
            raise Stop from None
        said = f"{command}: {reply}" if command else str(reply)
        if reply.code >= 400 or (name == "greeting" and reply.code != 220):
            self.add(name, Severity.FAIL, said, Finding.REPLY_REFUSED, reply, stage=name)
            raise Stop
        if wire.seconds > self.timeouts.slow_seconds:
            self.add(name, Severity.WARN, f"{said} (after {wire.seconds:.1f} s, slower than"
                     f" {self.timeouts.slow_seconds:g} s)",
                     Finding.GREETING_SLOW if name == "greeting" else None, reply,
                     seconds=wire.seconds)
        elif not quiet:
            self.add(name, Severity.OK, said, reply=reply)
        self.previous = name
        return reply

    def ended(self, name: str, how: str) -> None:
        end = "reset (RST)" if how == "rst" else "closed (FIN)"
        if name == "greeting" and how == "rst":
            self.add("greeting", Severity.FAIL, f"connection {end} right after connect, before"
                     " any greeting", Finding.CONNECT_RESET, how=how, stage=name)
            return
        when = f"before the {name} reply" if name != "quit" else \
            f"after the {self.previous} reply (before answering QUIT)"
        if name != "quit" and how == "fin" and self.previous != "connect":
            when = f"after the {self.previous} reply, or before the {name} reply"
        self.add(name, Severity.FAIL, f"connection {end} by the server {when}",
                 Finding.CLOSED, how=how, stage=name, previous=self.previous)

    def silent_greeting(self, wire: Wire) -> None:
        seconds = self.timeouts.reply_seconds
        if self._speaks_implicit_tls():
            self.add("greeting", Severity.WARN, f"no plain greeting within {seconds:g} s, but"
                     " the port speaks TLS from the first byte (SMTPS, RFC 8314): a relay"
                     " using plain SMTP and STARTTLS times out", Finding.GREETING_TIMEOUT)
            return
        # A relay waits in silence; the probe then speaks first, to see whether another
        # protocol's server (nginx waits for a request) answers the line.
        try:
            wire.command(f"EHLO {self.options.helo}", seconds)
        except Garbled as exc:
            self.add("greeting", Severity.FAIL, f"no greeting within {seconds:g} s, and the"
                     f" answer to EHLO is not SMTP: {exc}", Finding.NOT_SMTP, said=exc.line,
                     stage="greeting")
            return
        except (Ended, Silent, OSError):
            pass
        self.add("greeting", Severity.FAIL, f"no greeting within {seconds:g} s (RFC 5321"
                 " 4.5.3.2.1: relays wait up to 5 minutes; raise --timeout to see if it"
                 " comes)", Finding.GREETING_TIMEOUT)

    def _speaks_implicit_tls(self) -> bool:
        seconds = self.timeouts.reply_seconds
        try:
            sock = self.keep(socket.create_connection(
                (self.address.ip, self.options.target.port),
                timeout=self.timeouts.connect_seconds))
            tls = self.keep(tlsprobe.handshake(sock, tlsprobe.lenient_context(), None, seconds))
            Wire(tls).reply(seconds)
        except (OSError, Silent, Ended, Garbled):
            return False
        self.add("greeting", Severity.INFO, "a TLS handshake on the first byte works and is"
                 " followed by a 220 greeting (implicit TLS)")
        return True

    # region STARTTLS ---------------------------------------------------------------

    def starttls(self, wire: Wire, extensions: dict[str, str]) -> Wire:
        """STARTTLS, the handshake (verifying first), EHLO again; the certificate read."""
        if "STARTTLS" not in extensions and self.tlsa is not None:
            self.steps.append(dane.starttls_missing(self.tlsa))
            raise Stop
        if "STARTTLS" not in extensions and self.options.tls is TlsPolicy.DANE:
            self.add("starttls", Severity.WARN, "STARTTLS not offered: without TLSA records a"
                     " DANE relay delivers in plaintext (opportunistic)",
                     Finding.STARTTLS_NOT_OFFERED)
            return wire
        if "STARTTLS" not in extensions:
            self.add("starttls", Severity.FAIL, "STARTTLS not offered in the EHLO reply, and"
                     f" --tls {self.options.tls} requires it", Finding.STARTTLS_NOT_OFFERED)
            raise Stop
        self.expect(wire, "starttls", "STARTTLS")
        # DANE authenticates by TLSA instead, and takes precedence over MTA-STS (RFC 8461 2)
        pkix = self.tlsa is None and (self.options.tls is not TlsPolicy.DANE or self.sts_enforced)
        verifying = tlsprobe.client_context(pkix, self.options.ca_file)
        failure, done = self.handshake(wire.sock, verifying)
        verified = failure is None and pkix
        if failure is not None and failure.finding is Finding.CERT_INVALID \
                and self.options.tls is TlsPolicy.REQUIRE and not self.sts_enforced:
            # A relay that encrypts without verifying goes on: so does the probe, afresh.
            self.add("tls", Severity.WARN, f"{failure.text}: a relay that verifies refuses it",
                     failure.finding, verify_code=failure.verify_code)
            try:
                sock = self.open_starttls()
            except (OSError, Silent, Ended, Garbled) as exc:
                self.add("tls", Severity.FAIL, f"could not connect again: {exc}",
                         Finding.CLOSED, how="fin", stage="starttls")
                raise Stop from None
            failure, done = self.handshake(sock, tlsprobe.client_context(False, None))
        if failure is not None or done is None:
            self.tls_failed(failure or tlsprobe.Failure(Finding.TLS_ALERT, "no TLS"))
            raise Stop
        tls, reply = done
        self.previous = "ehlo"  # the EHLO inside TLS
        version, cipher = tls.version() or "?", (tls.cipher() or ("?",))[0]
        checked = "verified" if verified else f"not verified by PKIX (--tls {self.options.tls})"
        self.add("tls", Severity.OK, f"TLS established: {version}, {cipher}; certificate"
                 f" {checked}", version=version, cipher=cipher)
        self.certificate(tls, verified=verified)
        if self.tlsa is not None:
            self.steps.append(dane.match(self.tlsa, seam.peer_chain(tls)))
            if self.steps[-1].severity is Severity.FAIL:
                raise Stop
        if version == "TLSv1.3":
            self.only_tls_1_3()
        if reply.code >= 400:
            self.add("ehlo", Severity.FAIL, f"EHLO after TLS: {reply}", Finding.REPLY_REFUSED,
                     reply, stage="ehlo")
            raise Stop
        return Wire(tls)

    def handshake(self, sock: socket.socket, context: ssl.SSLContext
                  ) -> tuple[tlsprobe.Failure | None, tuple[ssl.SSLSocket, Reply] | None]:
        """The handshake and the EHLO after it (where a TLS 1.3 server's alert arrives)."""
        seconds = self.timeouts.reply_seconds
        try:
            tls = self.keep(tlsprobe.handshake(sock, context, self.server_name(), seconds))
            assert isinstance(tls, ssl.SSLSocket)
            reply = Wire(tls).command(f"EHLO {self.options.helo}", seconds)
        except (OSError, Ended, Silent) as exc:
            cause: BaseException = exc
            if isinstance(exc, Ended):
                cause = ConnectionResetError() if exc.how == "rst" else ssl.SSLEOFError()
            elif isinstance(exc, Silent):
                cause = TimeoutError()
            return tlsprobe.classify(cause, seconds), None
        return None, (tls, reply)

    def server_name(self) -> str | None:
        """The name a relay checks: the MX host (or the host given), else the address."""
        host = self.address.host
        return host if host else None

    def tls_failed(self, failure: tlsprobe.Failure) -> None:
        if failure.finding is Finding.CERT_INVALID:
            finding = Finding.STS_CERT_INVALID if self.sts_enforced else failure.finding
            self.add("tls", Severity.FAIL, failure.text + (" (the MTA-STS policy enforces it)"
                     if self.sts_enforced else ""), finding, verify_code=failure.verify_code,
                     verify_message=failure.text, profiles=["4.7.5-mta-sts-certificate-invalid"]
                     if self.sts_enforced else [])
            self.certificate_unverified()
            return
        found: list[tlsprobe.Offer] = []
        if failure.finding in (Finding.TLS_ALERT, Finding.TLS_PROTOCOL_VERSION):
            found = tlsprobe.offers(self.open_starttls, self.timeouts.reply_seconds)
            failure = tlsprobe.explain_failure(failure, found)
        # Secure TLSA records: no fallback to plaintext, RFC 8460's general validation-failure
        dane_failed = self.tlsa is not None
        self.add("tls", Severity.FAIL, failure.text, Finding.DANE_VALIDATION_FAILURE
                 if dane_failed else failure.finding, reason=failure.reason,
                 offers={o.version: o.cipher or o.problem for o in found},
                 profiles=["4.7.5-dane-handshake-failure"] if dane_failed else [])

    def open_starttls(self) -> socket.socket:
        """A new connection up to STARTTLS answered 220 (for the follow-up handshakes)."""
        seconds = self.timeouts.reply_seconds
        sock = self.keep(socket.create_connection(
            (self.address.ip, self.options.target.port), timeout=self.timeouts.connect_seconds))
        wire = Wire(sock)
        try:
            wire.reply(seconds)
            wire.command(f"EHLO {self.options.helo}", seconds)
            if wire.command("STARTTLS", seconds).code != 220:
                raise OSError("STARTTLS refused")
        except BaseException:
            sock.close()
            raise
        return sock

    def only_tls_1_3(self) -> None:
        offer = tlsprobe.offers(self.open_starttls, self.timeouts.reply_seconds, ("1.2",))[0]
        if offer.cipher is None:
            self.add("tls", Severity.WARN, f"TLS 1.2 refused ({offer.problem}): a relay limited"
                     " to TLS 1.2 cannot connect", Finding.TLS_ONLY_1_3)

    def certificate(self, tls: ssl.SSLSocket, verified: bool) -> None:
        der = tls.getpeercert(binary_form=True)
        if der is None:
            self.add("certificate", Severity.WARN, "the server sent no certificate")
            return
        leaf, cert = certcheck.read_leaf(der, self.server_name())
        problems = f"; {', '.join(leaf.problems)}" if leaf.problems else ""
        severity = Severity.WARN if leaf.problems else Severity.OK
        self.add("certificate", severity, leaf.describe() + problems,
                 Finding.CERT_INVALID if leaf.problems and not verified else None,
                 problems=leaf.problems)
        status = certcheck.revocation(leaf, cert, self.options.ca_file,
                                      self.timeouts.reply_seconds)
        if status.revoked:
            self.add("certificate", Severity.FAIL if verified else Severity.WARN,
                     f"certificate {status.text}", Finding.CERT_REVOKED)
            if verified:
                raise Stop
        else:
            self.add("certificate", Severity.OK if status.revoked is False else Severity.INFO,
                     f"revocation: {status.text}")

    def certificate_unverified(self) -> None:
        """After a verify failure: what the certificate says (a second, unverified handshake)."""
        seconds = self.timeouts.reply_seconds
        try:
            sock = self.open_starttls()
            tls = self.keep(tlsprobe.handshake(sock, tlsprobe.lenient_context(), None, seconds))
            assert isinstance(tls, ssl.SSLSocket)
            der = tls.getpeercert(binary_form=True)
        except (OSError, Silent, Ended, Garbled) as exc:
            self.add("certificate", Severity.INFO, f"could not fetch it unverified: {exc}")
            return
        if der is not None:
            leaf, _ = certcheck.read_leaf(der, self.server_name())
            self.add("certificate", Severity.INFO, leaf.describe() +
                     (f"; {', '.join(leaf.problems)}" if leaf.problems else ""),
                     problems=leaf.problems)

