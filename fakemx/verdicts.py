"""What real relays and a real client report for a catalog profile.

``[about.postfix]`` is what Postfix logs, ``[about.exim]`` what Exim logs and
``[about.smtplib]`` what Python's smtplib (with ``ssl.create_default_context``,
OpenSSL underneath) raises. They differ, and users meet all three, so the
catalog documents each and the tests hold every profile to each: tests/e2e
with a private Postfix (tests/postfix.py) and a private Exim (tests/exim.py),
tests/test_smtplib_verdicts.py with smtplib. Data only: the tests read these
fields, the doors show them, fakemx's server never does. ``About``, the catalog
entry of a profile, holds them with the text ``fakemx explain`` shows.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from fakemx.strict import Strict

Status = Literal["sent", "deferred", "bounced"]
Dsn = Annotated[str, Field(pattern=r"^[245]\.\d{1,3}\.\d{1,3}$")]
# The relay's TLS policy for the probe, named by Postfix's levels (Exim's settings:
# tests/exim.py): may = TLS when offered (Postfix: a failed handshake defers; Exim:
# retried in clear), encrypt = TLS required, verify = required and verified against
# fakemx's CA, implicit = SMTPS and verified.
# dane, dane-only: Postfix's smtp_tls_security_level for a relay resolving through a
# validating resolver (tests/test_dane_postfix.py); for Exim hosts_try_dane and
# hosts_require_dane, with dnssec_request_domains (tests/test_dane_exim.py). mta-sts: may,
# with postfix-mta-sts-resolver as smtp_tls_policy_maps (tests/test_mtasts_postfix.py;
# Postfix only).
RelayTls = Literal["may", "encrypt", "verify", "implicit", "dane", "dane-only", "mta-sts"]


class Probe(Strict):
    """The probe message a verdict is about, and the traffic before it.

    The probe goes from ``sender`` to ``local_part@...`` (with ``recipients =
    N`` above 1: to ``local_part1`` ... ``local_partN``, in one message), with
    the sender's normal EHLO name or, with ``bad_helo``,
    ``localhost.localdomain``; ``hold_connections`` other sessions are held
    open meanwhile. ``warm_up_messages`` messages are sent first, one after
    the other, and each must be accepted; fakemx's clock stands still from
    their start until the probe's first verdict, so a rate window ("5/60s",
    0.6 s at time_scale 0.01) holds them all however slow the machine is.
    ``sent_recipients``: the first N recipients of the probe are accepted, and
    only the others get the verdict (a recipient limit). ``sasl``: the sender
    logs in with SMTP AUTH as ``login:password`` where the server offers it
    (Postfix: ``smtp_sasl_auth_enable``; Exim: ``hosts_try_auth``; smtplib:
    ``login()``).
    """

    sender: str = ""
    local_part: str = "bob"
    recipients: Annotated[int, Field(ge=1, le=50)] = 1  # Postfix sends up to 50 in one message
    sent_recipients: Annotated[int, Field(ge=0)] = 0
    warm_up_messages: Annotated[int, Field(ge=0, le=100)] = 0
    bad_helo: bool = False
    hold_connections: Annotated[int, Field(ge=0)] = 0
    sasl: Annotated[str, Field(pattern=r"^[^:]+:.+$")] | None = None  # login:password

    @model_validator(mode="after")
    def _some_recipient_gets_the_verdict(self) -> Probe:
        if self.sent_recipients >= self.recipients:
            raise ValueError(f"sent_recipients ({self.sent_recipients}) must be below"
                             f" recipients ({self.recipients}): some recipient must get"
                             " the verdict")
        return self

    @property
    def local_parts(self) -> list[str]:
        """The probe's recipients' local parts, in the order the message names them."""
        if self.recipients == 1:
            return [self.local_part]
        return [f"{self.local_part}{n}" for n in range(1, self.recipients + 1)]


class RelayProbe(Probe):
    """A relay's verdict: the probe's first delivery attempt, and what follows.

    ``tls`` is the relay's TLS policy (see ``RelayTls``); the relay's timeouts
    are scaled by 0.01 like the profile (300 s -> 3 s). ``log``: a substring of
    another log line about fakemx (the verification cause, a TLS detail).
    ``sent_on_attempt``: the later attempt that is accepted (greylisting by
    count, intermittent failure); ``eventually_sent``: accepted on some later
    attempt (greylisting by time, a rate window that has passed).
    """

    tls: RelayTls = "may"
    log: str = ""
    sent_on_attempt: Annotated[int, Field(ge=2)] | None = None
    eventually_sent: bool = False


class PostfixAttempt(Strict):
    """Another verdict the same profile may get from Postfix, when the wire allows a race."""

    status: Status
    dsn: Dsn
    reason: str


class PostfixVerdict(RelayProbe):
    """What a real Postfix (Debian's 3.7, OpenSSL) logs for this profile (tests/e2e).

    ``status``, ``dsn`` and ``reason`` (a substring of the ``status=... (...)``
    text; ``{host}`` stands for ``127.0.0.1[127.0.0.1]``) describe the first
    delivery attempt of the probe, made with ``smtp_tls_security_level = tls``
    (``implicit``: ``smtp_tls_wrappermode`` with ``verify``).
    """

    status: Status
    dsn: Dsn
    reason: str
    # e.g. an RST right after the handshake can overtake it: then connect() itself fails
    alternatives: list[PostfixAttempt] = []


class EximAttempt(Strict):
    """Another verdict the same profile may get from Exim, when the wire allows a race."""

    status: Status
    reason: str


class EximVerdict(RelayProbe):
    """What a real Exim (Debian's 4.96, GnuTLS) logs for this profile (tests/e2e).

    ``status`` is the mainlog's mark for the probe's first attempt (``=>``
    sent, ``==`` deferred, ``**`` bounced) and ``reason`` a pattern found in
    the rest of that line: ``*`` matches anything (the ``SIZE=`` Exim adds to
    MAIL FROM, the recipient), ``{host}`` stands for ``127.0.0.1
    [127.0.0.1]``. Exim logs no DSN. ``tls``: ``may`` is Exim's default smtp
    transport (TLS when offered, a failed verification only logged as
    ``CV=no``, a failed handshake retried in clear); ``encrypt`` sets
    ``hosts_require_tls = *``; ``verify`` also ``tls_verify_hosts = *``;
    ``implicit`` is ``protocol = smtps`` with both. ``by_default``: what
    Exim's default transport does instead, for a verdict whose ``tls`` is
    stricter (it hides TLS failures: it sends anyway). For a DNS profile the
    verdict is Exim's own MX lookup (a ``dnslookup`` router,
    tests/test_dns_exim.py), where Postfix's comes from a relayhost looked up
    through DNS; for a DANE profile (``tls`` dane or dane-only) too, through a
    validating resolver (tests/test_dane_exim.py).
    """

    status: Status
    reason: str
    alternatives: list[EximAttempt] = []

    @model_validator(mode="after")
    def _no_mta_sts(self) -> EximVerdict:
        if self.tls == "mta-sts":
            raise ValueError("the Exim harness has no MTA-STS route (Exim fetches no policy):"
                             " give tls = may, encrypt, verify, implicit, dane or dane-only")
        return self

    by_default: EximAttempt | None = None

    @model_validator(mode="after")
    def _default_only_when_stricter(self) -> EximVerdict:
        if self.by_default is not None and self.tls == "may":
            raise ValueError("by_default is what Exim's default transport does instead: give it"
                             " only with tls = encrypt, verify or implicit")
        return self


class SmtplibVerdict(Probe):
    """What Python's smtplib sees: ``smtplib.SMTP(...).sendmail(...)`` with
    ``ssl.create_default_context()`` trusting fakemx's CA (OpenSSL's checks and
    the system's security level), a 3 s timeout (the relays' scaled one).

    ``tls``: ``may`` calls ``starttls()`` when the EHLO reply offers it,
    ``required`` always calls it, ``implicit`` uses ``SMTP_SSL``. ``result``
    is ``sent``, ``refused`` (``sendmail`` returned refused recipients) or the
    class name of the exception raised; ``code`` its SMTP code, or the first
    refused recipient's (none: no SMTP reply, e.g. a reset or a TLS error);
    ``message`` a substring of ``str(exception)`` or of the refused reply.
    ``alternatives``: other outcomes a race on the wire allows, each
    ``"Result: message"``.
    """

    tls: Literal["may", "required", "implicit"] = "may"
    result: str
    code: Annotated[int, Field(ge=-1, le=599)] | None = None  # -1: smtplib read no code
    message: str = ""
    alternatives: list[str] = []


# The sender settings a conditional profile needs to fail, and what Postfix, Exim and
# smtplib do without them: each claim is what their verdicts say (tests/test_verdicts.py
# checks the verdicts agree with it).
Need = Literal["tls-required", "tls-verified", "tls-1.2-floor", "tls-1.2-ceiling",
               "revocation-checking", "key-size-policy", "mx-lookup"]

NEEDS: dict[Need, str] = {
    "tls-required": "the sender requires TLS (Postfix smtp_tls_security_level = encrypt,"
                    " Exim hosts_require_tls, smtplib calling starttls() itself); Exim's"
                    " default transport sends the message in clear instead",
    "tls-verified": "the sender verifies the certificate (Postfix smtp_tls_security_level ="
                    " verify, Exim tls_verify_hosts; smtplib with create_default_context()"
                    " always does); Exim's default transport delivers anyway and logs CV=no",
    "tls-1.2-floor": "the sender refuses TLS below 1.2: Postfix and smtplib (OpenSSL's"
                     " defaults) do; Exim (GnuTLS) speaks TLS 1.1 and delivers",
    "tls-1.2-ceiling": "the sender speaks TLS 1.2 at most (e.g. Postfix smtp_tls_protocols ="
                       " <=TLSv1.2); Postfix, Exim and smtplib as shipped speak TLS 1.3 and"
                       " deliver",
    "revocation-checking": "the sender checks the CRL or OCSP named in the certificate;"
                           " Postfix, Exim and smtplib do not by default, and deliver",
    "key-size-policy": "the sender refuses a 1024-bit RSA key: smtplib does (Debian's OpenSSL"
                       " security level 2); Postfix and Exim deliver",
    "mx-lookup": "the sender looks the domain up in DNS: Exim's dnslookup router bounces a"
                 " missing domain, a null MX and an MX without address at once, where Postfix"
                 " with a relayhost looked up through DNS defers them (4.3.5)",
}

# The needs as a table column says them.
NEED_LABELS: dict[Need, str] = {
    "tls-required": "TLS required",
    "tls-verified": "certificate verified",
    "tls-1.2-floor": "TLS 1.2 floor",
    "tls-1.2-ceiling": "TLS 1.2 ceiling",
    "revocation-checking": "revocation checked",
    "key-size-policy": "key-size policy",
    "mx-lookup": "MX lookup",
}


class About(Strict):
    """The catalog entry: what the profile teaches and what a relay reports.

    ``postfix``, ``exim`` and ``smtplib`` say what each reports (fakemx.verdicts,
    each held to it by a test); ``needs`` names the sender settings without
    which the profile does not fail (a TLS floor, TLS required, ...:
    fakemx.verdicts.NEEDS).
    """

    code: Annotated[str, Field(pattern=r"^[245]\.\d{1,3}\.\d{1,3}$")]
    title: str
    relay_sees: str
    ndr: str = ""
    causes: list[str] = []
    fixes: list[str] = []
    postfix: PostfixVerdict | None = None
    exim: EximVerdict | None = None
    smtplib: SmtplibVerdict | None = None
    needs: list[Need] = []
