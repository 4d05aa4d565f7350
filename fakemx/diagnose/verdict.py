"""Evidence -> verdict: a pure function of the steps, the catalog and codes.toml.

Like ``fakemx.decide``: no sockets, no clock. The catalog explains what the
probe found: each finding names the catalog profiles that produce the same
evidence, and their ``[about]`` gives the causes and fixes. A refusal is
matched against the replies the catalog's rules send, so a destination that
answers like a catalog profile is explained by that profile.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from typing import Any

from fakemx.actions import Drop
from fakemx.diagnose.model import (
    Advice,
    Finding,
    Options,
    Reply,
    Severity,
    Step,
    TlsPolicy,
    Verdict,
)
from fakemx.model import Profile, Stall
from fakemx.model import Reply as RuleReply
from fakemx.stages import Stage

# finding -> the code, the catalog profiles that show the same evidence, a title of its own
_TABLE: dict[Finding, tuple[str, tuple[str, ...], str]] = {
    Finding.DNS_SERVFAIL: ("4.4.312", ("4.4.312-servfail",), "The DNS server fails (SERVFAIL)"),
    Finding.DNS_NXDOMAIN: ("4.4.312", ("4.4.312-nxdomain",), "The domain does not exist"),
    Finding.DNS_REFUSED: ("4.4.312", ("4.4.312-refused",), "The DNS server refuses"),
    Finding.DNS_TIMEOUT: ("4.4.312", ("4.4.312-no-answer", "4.4.312-slow"),
                          "The DNS server does not answer"),
    Finding.DNS_SLOW: ("4.4.312", ("4.4.312-slow",), "The DNS server answers slowly"),
    Finding.DNS_TRUNCATED_TCP_FAILED: ("4.4.312", ("4.4.312-truncated-tcp-refused",),
                                       "Truncated DNS answer, and TCP fails"),
    Finding.DNS_NULL_MX: ("4.4.312", ("4.4.312-null-mx",), "Null MX"),
    Finding.DNS_NO_ADDRESS: ("4.4.312", ("4.4.312-mx-target-no-address",),
                             "The mail host has no address"),
    Finding.DNS_CNAME_LOOP: ("4.4.312", ("4.4.312-cname-loop",), "CNAME loop"),
    Finding.CONNECT_REFUSED: ("4.4.316", ("4.4.316-connection-refused",), "Connection refused"),
    Finding.CONNECT_TIMEOUT: ("4.4.315", ("4.4.315-connect-timeout",), "Connect timed out"),
    Finding.CONNECT_RESET: ("4.4.318", ("4.4.318-rst-after-connect",
                                        "4.4.318-firewall-allow-list"),
                            "Connection reset right after connect"),
    Finding.GREETING_TIMEOUT: ("4.4.315", ("4.4.315-no-greeting",), "No greeting"),
    Finding.GREETING_SLOW: ("4.4.7", ("4.4.7-slow-greeting",), "Slow greeting"),
    Finding.REPLY_TIMEOUT: ("4.4.318", ("4.4.318-stall-then-close",), "The server stalls"),
    Finding.CLOSED: ("4.4.318", (), "Connection closed in the middle of the session"),
    Finding.STARTTLS_NOT_OFFERED: ("4.4.317", ("4.4.317-starttls-not-offered",),
                                   "STARTTLS not offered"),
    Finding.FIREWALL_INSPECTION: ("4.4.318", ("4.4.318-firewall-smtp-inspection",),
                                  "An inspecting firewall masks the banner and strips STARTTLS"),
    Finding.TLS_ALERT: ("4.4.317", ("4.4.317-handshake-alert",), "The server aborts the TLS"
                        " handshake"),
    Finding.TLS_NO_SHARED_CIPHER: ("4.4.317", ("4.4.317-no-shared-cipher",), "No shared cipher"),
    Finding.TLS_PROTOCOL_VERSION: ("4.4.317", ("4.4.317-tls-1.0-1.1-only",),
                                   "No shared TLS version"),
    Finding.TLS_ONLY_1_3: ("4.4.317", ("4.4.317-tls-1.3-only",), "TLS 1.3 only"),
    Finding.TLS_RESET: ("4.4.317", ("4.4.317-handshake-reset",), "The handshake is cut off"),
    Finding.TLS_TIMEOUT: ("4.4.317", ("4.4.317-handshake-stall",), "The handshake stalls"),
    Finding.TLS_CLIENT_CERT: ("4.4.317", ("4.4.317-client-cert-required",),
                              "The server requires a client certificate"),
    Finding.CERT_INVALID: ("4.7.320", (), "The certificate does not verify"),
    Finding.CERT_REVOKED: ("4.7.320", ("4.7.320-revoked",), "The certificate is revoked"),
    Finding.BANNER_MASKED: ("4.4.318", ("4.4.318-firewall-smtp-inspection",),
                            "The banner is masked"),
    Finding.SIZE_LIMIT: ("5.3.4", ("5.3.4-message-too-large",), "A size limit"),
    Finding.DNS_IMPLICIT_MX: ("4.4.312", ("4.4.312-no-mx-implicit-a",), "No MX record"),
    Finding.QUEUE_EXPIRED: ("4.4.7", (), "The message expired in the queue"),
    Finding.NOT_SMTP: ("4.4.318", (), "Another protocol's server answers on the mail port"),
    Finding.HELO_ONLY: ("4.4.317", ("helo-only-server",), "No ESMTP: the server knows only"
                        " HELO, so it offers no STARTTLS"),
    # DANE and MTA-STS: the step's facts name the profile; Exchange Online's codes, RFC 8460's
    # result types.
    Finding.DANE_DNSSEC_INVALID: ("4.7.324", (), "dnssec-invalid: the destination's DNSSEC"
                                  " records do not validate"),
    Finding.DANE_TLSA_INVALID: ("4.7.323", (), "tlsa-invalid: the domain failed DANE"
                                " validation"),
    Finding.DANE_NO_STARTTLS: ("4.7.321", (), "starttls-not-supported: TLSA records, and no"
                               " STARTTLS"),
    Finding.DANE_CERT_EXPIRED: ("4.7.322", (), "certificate-expired: the certificate DANE-TA"
                                " validates has expired"),
    Finding.DANE_HOST_MISMATCH: ("4.7.325", (), "certificate-host-mismatch: the certificate"
                                 " does not name the MX host"),
    Finding.DANE_VALIDATION_FAILURE: ("4.7.5", (), "validation-failure: TLSA records, and the"
                                      " TLS handshake fails"),
    Finding.DANE_REQUIRED: ("4.7.5", (), "dane-required: DANE does not apply to this"
                            " destination"),
    Finding.STS_MX_MISMATCH: ("4.4.8", (), "MTA-STS: the MX host is not in the enforced policy"),
    Finding.STS_CERT_INVALID: ("4.7.5", (), "MTA-STS: the MX's certificate fails validation"
                               " under an enforce policy"),
    Finding.STS_FETCH_ERROR: ("2.0.0", (), "sts-policy-fetch-error"),
    Finding.STS_POLICY_INVALID: ("2.0.0", (), "sts-policy-invalid"),
    Finding.STS_WEBPKI_INVALID: ("2.0.0", (), "sts-webpki-invalid"),
}

# OpenSSL's X509_V_ERR_* codes -> the catalog profiles that cause them.
_VERIFY_CODES: dict[int, tuple[str, ...]] = {
    9: ("4.7.320-not-yet-valid",),
    10: ("4.7.320-expired",),
    18: ("4.7.320-self-signed",),
    19: ("4.7.320-untrusted-ca",),
    20: ("4.7.320-untrusted-ca", "4.7.320-missing-intermediate"),
    21: ("4.7.320-missing-intermediate", "4.7.320-untrusted-ca"),
    23: ("4.7.320-revoked",),
    62: ("4.7.320-wrong-host",),
    64: ("4.7.320-wrong-host",),
    66: ("4.7.320-weak-rsa-1024",),
    68: ("4.7.320-weak-sha1",),
}

# What a WARN step means for relays other than this probe.
_CONDITIONS: dict[Finding, str] = {
    Finding.DNS_SLOW: "for a relay whose resolver gives up sooner",
    Finding.GREETING_SLOW: "for a relay that gives up waiting for the greeting sooner",
    Finding.GREETING_TIMEOUT: "for a relay that speaks plain SMTP to this port",
    Finding.TLS_ONLY_1_3: "for a relay limited to TLS 1.2",
    Finding.CERT_INVALID: "for a relay that verifies the certificate",
    Finding.CERT_REVOKED: "for a relay that checks the CRL or OCSP",
    Finding.BANNER_MASKED: "an inspecting firewall rewrites the session",
    Finding.SIZE_LIMIT: "for a message over the size the server advertises (SIZE)",
    Finding.DNS_IMPLICIT_MX: "if the domain's own address is no mail server",
    Finding.HELO_ONLY: "for a relay that requires TLS",
    Finding.STARTTLS_NOT_OFFERED: "for a relay that requires TLS",
    Finding.DANE_REQUIRED: "for a relay that requires DANE (Postfix dane-only)",
    Finding.STS_FETCH_ERROR: "MTA-STS sts-policy-fetch-error, reported by TLS-RPT",
    Finding.STS_POLICY_INVALID: "MTA-STS sts-policy-invalid, reported by TLS-RPT",
    Finding.STS_WEBPKI_INVALID: "MTA-STS sts-webpki-invalid, reported by TLS-RPT",
    Finding.STS_MX_MISMATCH: "for a relay that applies a testing-mode MTA-STS policy, reported"
                             " by TLS-RPT only",
}

NEVER_PROBED = ("DATA and the message: diagnose never sends one, so failures at DATA, in the"
                " body or after the final dot stay unseen")
NO_TRAFFIC = ("limits that need traffic (rates, concurrent connections, counts of messages or"
              " recipients) and rules on the sender address (the probe's sender is <>)")
NO_RCPT = "MAIL FROM and RCPT TO: pass --rcpt ADDR to probe a recipient"
NO_DANE = "DANE (TLSA records in DNSSEC-signed DNS): probed only with --tls dane"
NO_STS = "MTA-STS: a mail domain's policy, probed only with an MX lookup (not --host)"
NO_AUTH = ("SMTP AUTH: diagnose never logs in, so what a login meets stays unseen (a server"
           " that requires one answers MAIL with 530 5.7.0)")

# Evidence earlier in the session that explains a missing STARTTLS.
_WHY_NO_STARTTLS = {Finding.BANNER_MASKED: Finding.FIREWALL_INSPECTION,
                    Finding.HELO_ONLY: Finding.HELO_ONLY}

_TEMPORARY = Advice("4.4.7", "if every retry meets it until the message expires (1-2 days)")


def decide(steps: Sequence[Step], options: Options, catalog: Sequence[Profile],
           codes: Mapping[str, Mapping[str, Any]]) -> Verdict:
    profiles = {p.name: p for p in catalog}
    not_probed = (NEVER_PROBED, NO_TRAFFIC, NO_AUTH) + (() if options.rcpt else (NO_RCPT,)) + (
        () if options.tls is TlsPolicy.DANE else (NO_DANE,)) + (
        () if options.target.mx_lookup else (NO_STS,))
    failed = next((s for s in steps if s.severity is Severity.FAIL), None)
    conditions = tuple(_condition(s, profiles) for s in steps
                       if s.finding in _CONDITIONS and s.severity is not Severity.FAIL)
    if failed is None or failed.finding is None:
        healthy = codes.get("2.0.0", {})
        return Verdict("2.0.0", "No failure for this probe", "every step passed",
                       tuple(healthy.get("causes", ())), tuple(healthy.get("fixes", ())),
                       conditions=conditions, not_probed=not_probed)
    finding = failed.finding
    if finding is Finding.STARTTLS_NOT_OFFERED:  # why not: a firewall, or no ESMTP at all
        finding = next((_WHY_NO_STARTTLS[s.finding] for s in steps
                        if s.finding in _WHY_NO_STARTTLS), finding)
    code, names, title = _TABLE.get(finding, ("4.4.318", (), str(finding)))
    also: tuple[Advice, ...] = ()
    if finding is Finding.REPLY_REFUSED and failed.reply is not None:
        code, names, title, also = _refusal(failed, catalog, codes)
    elif finding is Finding.CLOSED:
        names = _closed_like(failed, catalog)
    elif finding is Finding.REPLY_TIMEOUT:
        names = _stalled_like(failed, catalog) or names
        stalled = [profiles[n].about for n in names if n in profiles]
        code = next((about.code for about in stalled if about is not None), code)
    elif finding is Finding.CERT_INVALID:
        names = _VERIFY_CODES.get(_int(failed.facts.get("verify_code")), ())
    elif "profiles" in failed.facts:
        names = _named(failed) or names
    elif finding is Finding.NOT_SMTP:
        names = _other_server_like(failed, catalog)
    elif finding is Finding.GREETING_TIMEOUT:
        also = (Advice("4.4.7", "if the greeting comes, but later than relays wait",
                       ("4.4.7-slow-greeting",)),)
    known = [profiles[n] for n in names if n in profiles]
    about = known[0].about if known else None
    # A condition the verdict already names (the masked banner of the firewall) is not repeated.
    conditions = tuple(c for c in conditions if not set(c.profiles) & set(names))
    info = codes.get(code, {})
    if code.startswith("4") and code != "4.4.7" and not any(a.code == "4.4.7" for a in also):
        also += (_TEMPORARY,)
    return Verdict(
        code=code,
        title=about.title if about is not None and len(known) == 1 else title,
        evidence=failed.line,
        causes=tuple(_merged([p.about.causes for p in known if p.about])
                     or info.get("causes", ())),
        fixes=tuple(_merged([p.about.fixes for p in known if p.about])
                    or info.get("fixes", ())),
        profiles=tuple(p.name for p in known),
        also=also, conditions=conditions, not_probed=not_probed)


def _int(value: object) -> int:
    return value if isinstance(value, int) else -1


def _named(step: Step) -> tuple[str, ...]:
    """The catalog profiles a DANE or MTA-STS step names by its evidence."""
    found = step.facts.get("profiles")
    return tuple(str(name) for name in found) if isinstance(found, list) else ()


def _merged(lists: list[list[str]]) -> list[str]:
    return list(dict.fromkeys(item for items in lists for item in items))


def _condition(step: Step, profiles: Mapping[str, Profile]) -> Advice:
    assert step.finding is not None
    code, names, _ = _TABLE[step.finding]
    if step.finding is Finding.CERT_INVALID:
        names = _VERIFY_CODES.get(_int(step.facts.get("verify_code")), ())
    names = _named(step) or names
    size = step.facts.get("size")
    said = f": {size:,} bytes" if isinstance(size, int) else f": {step.line}"
    return Advice(code, f"{_CONDITIONS[step.finding]}{said}",
                  tuple(n for n in names if n in profiles))


def _refusal(step: Step, catalog: Sequence[Profile], codes: Mapping[str, Mapping[str, Any]]
             ) -> tuple[str, tuple[str, ...], str, tuple[Advice, ...]]:
    """A 4xx/5xx reply: the catalog profiles that send it, else its enhanced code."""
    reply = step.reply
    assert reply is not None
    matching = [p for p in catalog if p.about is not None
                and any(_sends(template, reply) for template in _replies_at(p, step.name))]
    stage_code = "4.4.317" if step.name == "greeting" else "4.4.7"
    if matching:
        first = matching[0]
        assert first.about is not None
        code = first.about.code
        others = {p.about.code: p.name for p in matching[1:] if p.about and p.about.code != code}
        same = tuple(Advice(c, f"the same reply as catalog profile {n}", (n,))
                     for c, n in others.items())
        return code, tuple(p.name for p in matching), first.about.title, same
    enhanced = reply.enhanced
    settings_made: tuple[str, ...] = ()
    if enhanced is not None and enhanced in codes:
        code = enhanced
        # A reply a profile's settings make, not a rule (e.g. [auth]'s 530 5.7.0).
        settings_made = tuple(p.name for p in catalog
                              if p.about is not None and p.about.code == code and not p.rules)
    elif reply.code < 500 or step.name == "greeting":
        code = stage_code
    else:
        code = enhanced or "5.0.0"
    also: tuple[Advice, ...] = ()
    if step.name == "greeting" and code != "4.4.317":
        also = (Advice("4.4.317", "a connector reports a refused greeting as cannot connect"),)
    kind = "temporary" if reply.code < 500 else "permanent"
    where = "" if step.name == ANY_STAGE else f" at {step.name}"
    title = codes[code]["reply"] if code in codes else f"The server refuses{where}"
    return code, settings_made, f"{title} ({kind}: {reply.code})", also


# Where the evidence does not say at which stage (a log line without "in reply to").
ANY_STAGE = "any"


def _at(rule_stage: object, step: str) -> bool:
    return step == ANY_STAGE or str(rule_stage) == step


def _replies_at(profile: Profile, step: str) -> list[RuleReply]:
    found: list[RuleReply] = []
    for rule in profile.rules:
        if not _at(rule.stage, step):
            continue
        action = rule.action
        if isinstance(action, RuleReply):
            found.append(action)
        elif isinstance(action, Stall) and action.then is not None and action.then.reply:
            found.append(action.then.reply)
    return found


def _sends(template: RuleReply, reply: Reply) -> bool:
    if template.code != reply.code:
        return False
    if reply.partial:  # a log's copy: on one line, perhaps cut short: match its start
        text = " ".join(reply.text.split())
        return _pattern(" ".join(template.text.split())).match(text) is not None
    return _pattern(template.text).fullmatch(reply.text) is not None


@cache
def _pattern(text: str) -> re.Pattern[str]:
    """A rule's reply text as a pattern: each ``{placeholder}`` stands for any text."""
    parts = re.split(r"\{[a-z_]+\}", text)
    return re.compile(".*?".join(re.escape(part) for part in parts), re.DOTALL)


def _other_server_like(step: Step, catalog: Sequence[Profile]) -> tuple[str, ...]:
    """Catalog profiles that put another protocol's server on the port, that protocol first."""
    said = str(step.facts.get("said", "")).upper()
    found = [(str(getattr(r.action, "protocol", "")), p.name) for p in catalog for r in p.rules
             if getattr(r.action, "protocol", None) is not None]
    return tuple(name for protocol, name in sorted(found, key=lambda f: f[0].upper() not in said))


def _stalled_like(step: Step, catalog: Sequence[Profile]) -> tuple[str, ...]:
    """Catalog profiles that stall where this session waited in vain."""
    stages = {"connect", "greeting"} if step.name == "greeting" else {step.name}
    return tuple(p.name for p in catalog
                 if any(isinstance(r.action, Stall) and str(r.stage) in stages
                        for r in p.rules))


def _closed_like(step: Step, catalog: Sequence[Profile]) -> tuple[str, ...]:
    """Catalog profiles that end the session where this one ended, the same way.

    ``how`` None (a log that does not say FIN or RST) matches both.
    """
    how, previous = step.facts.get("how"), step.facts.get("previous")
    # fakemx drops *instead of* a stage's reply; a drop at connect is met awaiting the greeting
    stages = {"connect", "greeting"} if step.name == "greeting" else {step.name}
    if step.name == ANY_STAGE:
        stages = {str(stage) for stage in Stage}
    found = []
    for profile in catalog:
        for rule in profile.rules:
            action = rule.action
            if isinstance(action, Stall) and action.then is not None:
                action = action.then.action or action
            if isinstance(action, RuleReply):
                hit = action.close is not None and how in (None, str(action.close)) \
                    and str(rule.stage) == previous and action.code < 400  # then it closed
            else:
                hit = isinstance(action, Drop) and how in (None, str(action.how)) \
                    and str(rule.stage) in stages
            if hit and profile.name not in found:
                found.append(profile.name)
    return tuple(found)
