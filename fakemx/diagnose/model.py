"""What a diagnosis is made of: the options, each probe step as it happened, the verdict.

Plain frozen dataclasses: the probe (``probe.py``) makes steps, a pure function
(``verdict.py``) turns them into a verdict, ``render.py`` shows both.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

SMTP_PORT = 25


def is_address(name: str) -> bool:
    """An IP address (no DNS lookup needed), not a name."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class Severity(StrEnum):
    """How a step went, as the one-line output marks it."""

    OK = "ok"
    INFO = "info"  # a fact worth knowing, no fault
    WARN = "warn"  # fails for some relays (a condition), not for this probe
    FAIL = "fail"  # this probe met the failure: the verdict names it
    SKIP = "skip"  # not probed, and why


class TlsPolicy(StrEnum):
    """What the probe asks of TLS, as a relay's setting would (Postfix: smtp_tls_security_level)."""

    NONE = "none"  # never STARTTLS
    REQUIRE = "require"  # STARTTLS must work; the certificate is reported, not enforced
    VERIFY = "verify"  # STARTTLS must work and the certificate must verify (chain and name)
    DANE = "dane"  # TLSA records in DNSSEC-signed DNS (RFC 7672): see dane.py


class Finding(StrEnum):
    """Each failure the probe can tell apart; the verdict table maps them to the catalog."""

    DNS_SERVFAIL = "dns_servfail"
    DNS_NXDOMAIN = "dns_nxdomain"
    DNS_REFUSED = "dns_refused"
    DNS_TIMEOUT = "dns_timeout"
    DNS_SLOW = "dns_slow"
    DNS_TRUNCATED_TCP_FAILED = "dns_truncated_tcp_failed"
    DNS_NULL_MX = "dns_null_mx"
    DNS_NO_ADDRESS = "dns_no_address"
    DNS_CNAME_LOOP = "dns_cname_loop"
    DNS_IMPLICIT_MX = "dns_implicit_mx"
    CONNECT_REFUSED = "connect_refused"
    CONNECT_TIMEOUT = "connect_timeout"
    CONNECT_RESET = "connect_reset"
    GREETING_TIMEOUT = "greeting_timeout"
    GREETING_SLOW = "greeting_slow"
    BANNER_MASKED = "banner_masked"
    REPLY_REFUSED = "reply_refused"  # a 4xx/5xx reply: the catalog's replies name it
    REPLY_TIMEOUT = "reply_timeout"  # no reply to a command within the timeout
    CLOSED = "closed"  # FIN or RST in the middle of the session
    STARTTLS_NOT_OFFERED = "starttls_not_offered"
    FIREWALL_INSPECTION = "firewall_inspection"  # masked banner and STARTTLS stripped
    TLS_ALERT = "tls_alert"
    TLS_NO_SHARED_CIPHER = "tls_no_shared_cipher"
    TLS_PROTOCOL_VERSION = "tls_protocol_version"
    TLS_ONLY_1_3 = "tls_only_1_3"
    TLS_RESET = "tls_reset"
    TLS_TIMEOUT = "tls_timeout"
    TLS_CLIENT_CERT = "tls_client_cert"
    CERT_INVALID = "cert_invalid"  # the certificate does not verify: ``verify_code`` says why
    CERT_REVOKED = "cert_revoked"
    SIZE_LIMIT = "size_limit"
    QUEUE_EXPIRED = "queue_expired"  # from a log: the relay gave up retrying
    NOT_SMTP = "not_smtp"  # another protocol's server on the port (HTTP, SSH, ...)
    HELO_ONLY = "helo_only"  # EHLO refused, HELO accepted: no ESMTP, so no STARTTLS
    # DANE (RFC 7672), named by their RFC 8460 result types; ``facts["profiles"]`` names the
    # catalog profile the evidence matches.
    DANE_DNSSEC_INVALID = "dane_dnssec_invalid"
    DANE_TLSA_INVALID = "dane_tlsa_invalid"
    DANE_NO_STARTTLS = "dane_starttls_not_supported"
    DANE_CERT_EXPIRED = "dane_certificate_expired"
    DANE_HOST_MISMATCH = "dane_certificate_host_mismatch"
    DANE_VALIDATION_FAILURE = "dane_validation_failure"  # the handshake fails: no fallback
    DANE_REQUIRED = "dane_required"  # DANE does not apply: a relay that requires it defers
    # MTA-STS (RFC 8461)
    STS_MX_MISMATCH = "sts_mx_mismatch"  # enforce, and the MX is not in the policy
    STS_CERT_INVALID = "sts_certificate_invalid"  # enforce, and the MX's certificate fails
    STS_FETCH_ERROR = "sts_policy_fetch_error"
    STS_POLICY_INVALID = "sts_policy_invalid"
    STS_WEBPKI_INVALID = "sts_webpki_invalid"


@dataclass(frozen=True)
class Reply:
    """One SMTP reply as received: the code and each line's text (after ``NNN-``/``NNN ``).

    ``partial``: a copy from a log, on one line and perhaps cut short.
    """

    code: int
    lines: tuple[str, ...]
    partial: bool = False

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def enhanced(self) -> str | None:
        """The enhanced status code (RFC 3463) the reply starts with, e.g. ``4.7.1``."""
        found = re.match(r"([245]\.\d{1,3}\.\d{1,3})\b", self.lines[0] if self.lines else "")
        return found[1] if found else None

    def __str__(self) -> str:
        return f"{self.code} {' / '.join(self.lines)}".rstrip()


@dataclass(frozen=True)
class Step:
    """One thing the probe did, and what it saw. ``facts`` are for tools (``--json``)."""

    name: str  # dns, connect, greeting, ehlo, starttls, tls, certificate, mail, rcpt, quit
    severity: Severity
    line: str
    finding: Finding | None = None
    reply: Reply | None = None
    facts: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class Timeouts:
    """Every wait is bounded; the output states these."""

    dns_seconds: float = 5.0  # each DNS query (a stub resolver's usual timeout)
    connect_seconds: float = 30.0  # TCP connect (Postfix: smtp_connect_timeout 30 s)
    reply_seconds: float = 30.0  # each reply and the TLS handshake
    slow_seconds: float = 5.0  # an answer slower than this is reported as slow

    def describe(self) -> str:
        return (f"timeouts: DNS {self.dns_seconds:g} s per query, connect"
                f" {self.connect_seconds:g} s, each reply {self.reply_seconds:g} s;"
                f" slower than {self.slow_seconds:g} s is reported as slow")


@dataclass(frozen=True)
class Target:
    """What to probe: a domain (MX lookup) or a host, and the SMTP port."""

    name: str
    port: int = SMTP_PORT
    mx_lookup: bool = True


@dataclass(frozen=True)
class Options:
    target: Target
    tls: TlsPolicy = TlsPolicy.VERIFY
    ca_file: Path | None = None  # trust these CAs instead of the system's
    resolver: tuple[str, int] | None = None  # ask this DNS server; None: the system's
    rcpt: str | None = None  # probe MAIL FROM:<> and RCPT TO:<rcpt>; None: no transaction
    helo: str = "localhost"
    timeouts: Timeouts = Timeouts()
    trust_anchor: Path | None = None  # --tls dane: validate DNSSEC against this DS file
    mta_sts_port: int = 443  # where the MTA-STS policy host is asked (HTTPS)


@dataclass(frozen=True)
class Advice:
    """A code the evidence points to, and when it applies."""

    code: str
    condition: str
    profiles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """The documented error this destination would cause, and what to do about it.

    ``code`` is ``2.0.0`` when the probe met no failure. ``also`` lists other codes
    the same evidence can lead to (a 4xx retried for days ends as 4.4.7);
    ``conditions`` the failures some relays meet and this probe did not;
    ``not_probed`` what diagnose cannot see (it never sends a message).
    """

    code: str
    title: str
    evidence: str
    causes: tuple[str, ...]
    fixes: tuple[str, ...]
    profiles: tuple[str, ...] = ()
    also: tuple[Advice, ...] = ()
    conditions: tuple[Advice, ...] = ()
    not_probed: tuple[str, ...] = ()

    @property
    def healthy(self) -> bool:
        return self.code.startswith("2")

    def codes(self) -> set[str]:
        """Every code this verdict names: its own, ``also`` and ``conditions``."""
        return {self.code, *(a.code for a in self.also), *(a.code for a in self.conditions)}


@dataclass(frozen=True)
class Report:
    target: Target
    options: Options
    steps: tuple[Step, ...]
    verdict: Verdict
