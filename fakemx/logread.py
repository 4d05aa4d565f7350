"""``fakemx explain --log``: a relay's log or a bounce, line by line, named by the catalog.

Reads Postfix mail.log lines, Exim mainlog lines, an Exchange NDR's text,
nodemailer and Python smtplib error strings. Each line that shows a delivery
failure becomes the same evidence ``fakemx diagnose`` collects (a
``fakemx.diagnose.Step``), judged by the same pure verdict: so a log and a
probe are explained by the same catalog, with the same causes and fixes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from fakemx.clientbytes import shown
from fakemx.diagnose.model import Finding, Options, Reply, Severity, Step, Target, Verdict
from fakemx.diagnose.verdict import ANY_STAGE, decide
from fakemx.explain import codes
from fakemx.profiles import catalog

# The stage a line speaks of, in session order (the first that matches wins).
_STAGES = (
    ("body", r"message body|during DATA"),
    ("end_of_data", r"end of (?:DATA|data)|final dot|SMTPDataError|after DATA"),
    ("data", r"DATA command|in reply to DATA"),
    ("rcpt", r"RCPT TO|SMTPRecipientsRefused|recipients were rejected|Recipient"),
    ("mail", r"MAIL FROM|SMTPSenderRefused|Sender address"),
    ("starttls", r"STARTTLS|start TLS"),
    ("ehlo", r"EHLO|HELO"),
    ("greeting", r"initial server greeting|refused to talk to me|initial connection"
                 r"|SMTPConnectError|[Gg]reeting|banner"),
)
_ORDER = ("greeting", "ehlo", "starttls", "mail", "rcpt", "data", "body", "end_of_data")

# OpenSSL's and clients' certificate complaints -> X509_V_ERR_* (the verdict's table).
_CERT = (
    (r"self[- ]signed certificate in certificate chain", 19),
    (r"certificate has expired|certificate expired", 10),
    (r"not yet valid", 9),
    (r"self[- ]signed certificate", 18),
    (r"unable to get local issuer certificate|untrusted issuer|unable to verify the first"
     r" certificate", 20),
    (r"[Hh]ostname mismatch|IP address mismatch|does not match certificate's altnames"
     r"|doesn't match", 62),
    (r"key too (?:weak|small)", 66),
    (r"digest algorithm too weak|md too weak", 68),
    (r"certificate revoked", 23),
    (r"[Ss]erver certificate not verified|certificate verif\w* failed", -1),
)

# Symptoms without an SMTP reply, most specific first.
_SYMPTOMS = (
    (r"status=expired|QUEUE\.Expired|message expired|retry timeout exceeded",
     Finding.QUEUE_EXPIRED),
    (r"does not accept mail \(nullMX\)|indicated no SMTP service", Finding.DNS_NULL_MX),
    (r"[Nn]ame server loop|CNAME loop", Finding.DNS_CNAME_LOOP),
    (r"MX records point to non-existent hosts", Finding.DNS_NO_ADDRESS),
    (r"Host not found, try again|host lookup did not complete|EAI_AGAIN"
     r"|Temporary failure in name resolution", Finding.DNS_SERVFAIL),
    (r"Host or domain name not found|Unrouteable address|ENOTFOUND"
     r"|Name or service not known", Finding.DNS_NXDOMAIN),
    (r"TLS is required, but was not offered|STARTTLS extension not supported"
     r"|does not support STARTTLS", Finding.STARTTLS_NOT_OFFERED),
    (r"certificate required|alert unknown ca", Finding.TLS_CLIENT_CERT),
    (r"no shared cipher", Finding.TLS_NO_SHARED_CIPHER),
    (r"protocol version|unsupported protocol|wrong version number|no protocols available",
     Finding.TLS_PROTOCOL_VERSION),
    (r"timed out while receiving the initial server greeting|[Gg]reeting never received"
     r"|SMTP timeout after initial connection", Finding.GREETING_TIMEOUT),
    (r"timed out while|SMTP timeout after", Finding.REPLY_TIMEOUT),
    (r"Connection refused|ECONNREFUSED|Errno 111\b", Finding.CONNECT_REFUSED),
    (r"Connection timed out|ETIMEDOUT|connect timeout|timed out while connecting"
     r"|Errno 110\b", Finding.CONNECT_TIMEOUT),
    (r"lost connection|Connection reset by peer|ECONNRESET|Errno 104\b"
     r"|[Cc]onnection (?:unexpectedly )?closed(?: unexpectedly)?|Unexpected socket close"
     r"|closed connection|SMTPServerDisconnected|unexpected EOF|end of file",
     Finding.CLOSED),
    (r"handshake failure|Cannot start TLS|TLS handshake failed|TLS session setup failed"
     r"|SSLError", Finding.TLS_ALERT),
)

# A reply quoted in a log: "said: 550 5.1.1 ...", "response=421 ...", "(550, b'5.1.1 ...')".
_REPLY = re.compile(r"(?:^|[\s:'\"(=\[])(?P<code>[245]\d\d)[ -](?P<text>[^\s].*)")
_TUPLE = re.compile(r"\((?P<code>[245]\d\d), b?(?P<q>['\"])(?P<text>.*?)(?P=q)\)")
_TAIL = re.compile(r"\s*(?:\(in reply to .*|['\")\]]+\s*$|\[Message=.*|\s+$)")


@dataclass(frozen=True)
class Explained:
    number: int  # 1-based line number
    line: str
    evidence: Step
    verdict: Verdict


def explain_lines(lines: Iterable[str]) -> Iterator[Explained]:
    """Every line that shows a delivery failure, with its verdict."""
    profiles, known = catalog(), codes()
    options = Options(Target("log"), rcpt="log")  # nothing here was probed by diagnose
    for number, line in enumerate(lines, start=1):
        step = evidence(line.rstrip("\r\n"))
        if step is not None:
            yield Explained(number, line.rstrip("\r\n"), step,
                            decide([step], options, profiles, known))


def evidence(line: str) -> Step | None:
    """The failure one log line shows, as a probe step; None when it shows none."""
    stage = _stage(line)
    for pattern, verify_code in _CERT:
        if re.search(pattern, line):
            facts = {"verify_code": verify_code} if verify_code >= 0 else {}
            return Step("tls", Severity.FAIL, line, Finding.CERT_INVALID, facts=facts)
    reply = _reply(line)
    for pattern, finding in _SYMPTOMS:
        if re.search(pattern, line) and not (reply and finding is Finding.CLOSED):
            return _symptom(line, finding, stage)
    if reply is not None and reply.code >= 400:
        return Step(stage or ANY_STAGE, Severity.FAIL, line, Finding.REPLY_REFUSED, reply)
    return None


def _stage(line: str) -> str | None:
    return next((name for name, pattern in _STAGES if re.search(pattern, line)), None)


def _symptom(line: str, finding: Finding, stage: str | None) -> Step:
    if finding in (Finding.CLOSED, Finding.REPLY_TIMEOUT):
        name = stage or ANY_STAGE
        how = "rst" if re.search(r"ECONNRESET|reset by peer|Errno 104", line) else None
        previous = _ORDER[_ORDER.index(name) - 1] if name in _ORDER[1:] else None
        return Step(name, Severity.FAIL, line, finding,
                    facts={"how": how, "previous": previous})
    return Step(stage or "log", Severity.FAIL, line, finding)


def _reply(line: str) -> Reply | None:
    found = _TUPLE.search(line)
    if found is not None:
        text = found["text"].replace("\\r\\n", " ").replace("\\n", " ")
    else:
        found = _REPLY.search(line)
        if found is None:
            return None
        text = _TAIL.split(found["text"], maxsplit=1)[0]
    return Reply(int(found["code"]), (text.strip(),), partial=True)


def render(explained: Iterable[Explained], read: list[str]) -> str:
    """One block per line that shows a failure, then how many lines were read."""
    out: list[str] = []
    count = 0
    for item in explained:
        count += 1
        verdict = item.verdict
        out.append(f"line {item.number}: {verdict.code} {shown(verdict.title)}")
        out.append(f"  log: {shown(_short(item.line))}")
        if verdict.profiles:
            out.append(f"  like catalog profiles: {', '.join(verdict.profiles)}")
        out += [f"  fix: {fix}" for fix in verdict.fixes]
        out += [f"  also {a.code}: {a.condition}" for a in verdict.also]
    out.append(f"{len(read)} lines read, {count} show a failure fakemx can name")
    return "\n".join(out)


def _short(line: str, limit: int = 240) -> str:
    return line if len(line) <= limit else line[: limit - 3] + "..."
