"""The SMTP service extensions a profile advertises, and what they oblige fakemx to do.

Pure decisions over text, no sockets: which EHLO keywords go out (RFC 5321
4.1.1.1), which MAIL/RCPT parameters a session takes (a parameter of an
extension that was not advertised gets ``555 5.5.4 Unsupported option``, as
Postfix answers), and the enhanced status code a reply carries once
ENHANCEDSTATUSCODES is advertised (RFC 2034). fakemx/smtp/extensions.py
applies them to a session.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Extensions(BaseModel):
    """``[extensions]``: advertise or withhold each extension; faults on advertised ones.

    The defaults are the EHLO reply fakemx always gave: SIZE, 8BITMIME and
    SMTPUTF8 (STARTTLS follows ``tls.mode``, AUTH the profile's auth).
    ``requiretls`` is advertised only once TLS is active (RFC 8689 2, as Exim
    does). ``hold_pipelined_replies`` (needs ``pipelining``) holds the replies
    to MAIL, RCPT and RSET until a command that ends a pipelined group
    (DATA, BDAT, QUIT, NOOP, EHLO...) arrives: a client that waits for each
    reply times out. ``refuse_dsn`` (needs ``dsn``) advertises DSN and then
    refuses its parameters with Postfix's ``501 5.7.1 DSN support is
    disabled``, as when a proxy in front announces DSN for a server that has
    it turned off.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True,
                              serialize_by_alias=True, defer_build=True)  # see fakemx.strict
    pipelining: bool = False  # RFC 2920
    chunking: bool = False  # RFC 3030: BDAT
    dsn: bool = False  # RFC 3461
    enhancedstatuscodes: bool = False  # RFC 2034
    smtputf8: bool = True  # RFC 6531
    eightbitmime: bool = Field(default=True, alias="8bitmime")  # RFC 6152
    size: bool = True  # RFC 1870
    requiretls: bool = False  # RFC 8689
    hold_pipelined_replies: bool = False
    refuse_dsn: bool = False

    @model_validator(mode="after")
    def _faults_need_their_extension(self) -> Extensions:
        if self.hold_pipelined_replies and not self.pipelining:
            raise ValueError("hold_pipelined_replies needs pipelining = true: a client"
                             " pipelines only when PIPELINING is advertised")
        if self.refuse_dsn and not self.dsn:
            raise ValueError("refuse_dsn needs dsn = true: without DSN advertised its"
                             " parameters are refused anyway, with 555 5.5.4")
        return self


# region EHLO ---------------------------------------------------------------------

def in_effect(ext: Extensions, *, lmtp: bool) -> Extensions:
    """The extensions a session offers: RFC 2033 5 obliges an LMTP server to offer
    PIPELINING and ENHANCEDSTATUSCODES, whatever the profile says."""
    if not lmtp:
        return ext
    return ext.model_copy(update={"pipelining": True, "enhancedstatuscodes": True})


def ehlo_keywords(ext: Extensions, aiosmtpd_keywords: list[str], *, max_size: int,
                  tls_active: bool) -> list[str]:
    """The keyword lines after the greeting line, from aiosmtpd's own.

    aiosmtpd offers 8BITMIME, SMTPUTF8, STARTTLS, AUTH and HELP; fakemx keeps
    STARTTLS, AUTH and HELP as they are, drops what the profile withholds and
    adds the rest in Postfix's order.
    """
    withheld = {"8BITMIME": not ext.eightbitmime, "SMTPUTF8": not ext.smtputf8}
    kept = [kw for kw in aiosmtpd_keywords if not withheld.get(kw.split(" ", 1)[0].upper())]
    tail = kept.pop() if kept and kept[-1].upper() == "HELP" else None
    head = ["PIPELINING"] if ext.pipelining else []
    if ext.size:
        head.append(f"SIZE {max_size}")
    added = [name for name, on in (("ENHANCEDSTATUSCODES", ext.enhancedstatuscodes),
                                   ("DSN", ext.dsn), ("CHUNKING", ext.chunking),
                                   ("REQUIRETLS", ext.requiretls and tls_active)) if on]
    return head + kept + added + ([tail] if tail else [])


# endregion
# region MAIL and RCPT parameters ---------------------------------------------------

UNSUPPORTED = "555 5.5.4 Unsupported option: {}"
DSN_DISABLED = "501 5.7.1 DSN support is disabled"
_NOTIFY = frozenset({"SUCCESS", "FAILURE", "DELAY"})
_XTEXT = re.compile(r"^(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})*$")


def split_parameters(arg: str) -> tuple[str, list[str]]:
    """``FROM:<a@b> SIZE=10 RET=HDRS`` -> (``FROM:<a@b>``, [``SIZE=10``, ``RET=HDRS``]).

    A path in brackets ends at its first ``>`` outside a quoted local part
    (RFC 5321 4.1.2), so ``AUTH=<>`` after it stays a parameter; a path
    without brackets ends at its first space. Raises ValueError without a path.
    """
    keyword, colon, rest = arg.partition(":")
    rest = rest.lstrip()
    end = _path_end(rest) if rest.startswith("<") else rest.find(" ")
    if not rest or end == 0:
        raise ValueError("no path")
    if end < 0:
        end = len(rest)
    return f"{keyword}{colon}{rest[:end]}", rest[end:].split()


def _path_end(rest: str) -> int:
    """Where the bracketed path at the start of ``rest`` ends (after its ``>``), or -1."""
    quoted = escaped = False
    for index, char in enumerate(rest):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = quoted
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index + 1
    return -1


def screen_mail(ext: Extensions, params: list[str], *, tls_active: bool) -> Screened:
    """MAIL FROM's parameters: (those for aiosmtpd, those fakemx took, an error reply)."""

    def judge(param: str, key: str, value: str, taken: list[str]) -> str:
        if key in ("RET", "ENVID"):
            return _dsn_problem(ext, param, key, value, taken) or _TAKE
        if key == "REQUIRETLS":
            return _TAKE if ext.requiretls and tls_active and not value else \
                UNSUPPORTED.format(param)
        if ((key == "SIZE" and not ext.size) or (key == "SMTPUTF8" and not ext.smtputf8)
                or (key == "BODY" and value.upper() == "8BITMIME" and not ext.eightbitmime)):
            return UNSUPPORTED.format(param)
        return _PASS  # SIZE, BODY, SMTPUTF8, AUTH...: aiosmtpd's to judge

    return _screen(params, judge)


def screen_rcpt(ext: Extensions, params: list[str]) -> Screened:
    """RCPT TO's parameters: (those for aiosmtpd, those fakemx took, an error reply)."""

    def judge(param: str, key: str, value: str, taken: list[str]) -> str:
        if key in ("NOTIFY", "ORCPT"):
            return _dsn_problem(ext, param, key, value, taken) or _TAKE
        return _PASS

    return _screen(params, judge)


Screened = tuple[list[str], list[str], str | None]
_TAKE, _PASS = "take", "pass"  # a judge's verdicts; anything else is the refusal


def _screen(params: list[str], judge: Callable[[str, str, str, list[str]], str]) -> Screened:
    passed: list[str] = []
    taken: list[str] = []
    for param in params:
        key, _, value = param.partition("=")
        verdict = judge(param, key.upper(), value, taken)
        if verdict == _PASS:
            passed.append(param)
        elif verdict == _TAKE:
            taken.append(param)
        else:
            return passed, taken, verdict
    return passed, taken, None


def _dsn_problem(ext: Extensions, param: str, key: str, value: str,
                 taken: list[str]) -> str | None:
    """Why a DSN parameter (RFC 3461 4.1-4.4) is refused, or None when it is good."""
    if not ext.dsn:
        return UNSUPPORTED.format(param)
    if ext.refuse_dsn:
        return DSN_DISABLED
    if any(t.upper().startswith(f"{key}=") for t in taken):
        return f"501 5.5.4 Error: multiple {key} parameters"
    good = {
        "RET": value.upper() in ("FULL", "HDRS"),
        "ENVID": 0 < len(value) <= 100 and bool(_XTEXT.match(value)),
        "NOTIFY": _good_notify(value.upper()),
        "ORCPT": _good_orcpt(value),
    }[key]
    return None if good else f"501 5.5.4 Error: Bad {key} parameter syntax"


def _good_notify(value: str) -> bool:
    words = value.split(",")
    if words == ["NEVER"]:
        return True
    return bool(words) and len(set(words)) == len(words) and set(words) <= _NOTIFY


def _good_orcpt(value: str) -> bool:
    kind, semicolon, address = value.partition(";")
    return (bool(semicolon) and bool(re.match(r"^[A-Za-z0-9][A-Za-z0-9-]*$", kind))
            and 0 < len(address) <= 500 and bool(_XTEXT.match(address)))


# endregion
# region enhanced status codes --------------------------------------------------------

# RFC 3463 / RFC 5248's registry, for the replies that come without one (aiosmtpd's).
_BY_CODE = {"221": "2.0.0", "250": "2.0.0", "251": "2.1.5", "252": "2.0.0",
            "500": "5.5.2", "501": "5.5.4", "502": "5.5.1", "503": "5.5.1", "504": "5.5.4",
            "530": "5.7.0", "552": "5.3.4", "554": "5.0.0", "555": "5.5.4"}
_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
# The replies RFC 2034 4 exempts: the greeting and the replies to EHLO, HELO and LHLO;
# 3xx replies are intermediate (354, AUTH's 334).
UNCODED_COMMANDS = frozenset({"", "EHLO", "HELO", "LHLO"})  # "": before any command


def with_enhanced_code(reply: str, command: str) -> str:
    """``reply`` with an enhanced status code on every line (RFC 2034 4), when it lacks one."""
    if command in UNCODED_COMMANDS or reply[:1] not in ("2", "4", "5"):
        return reply
    lines = reply.split("\r\n")
    if all(_HAS_ENHANCED.match(line) for line in lines):
        return reply
    code = reply[:3]
    enhanced = _BY_CODE.get(code, f"{code[0]}.0.0")
    return "\r\n".join(
        line if _HAS_ENHANCED.match(line) else f"{line[:4]}{enhanced} {line[4:]}".rstrip()
        for line in lines)


# endregion
