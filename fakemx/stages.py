"""The moments of an SMTP session at which a rule can act.

Every stage means the same instant: the client's input for that stage has
arrived and fakemx has not answered yet. ``connect`` is just after the TCP
accept, ``greeting`` just before the ``220``. The names follow aiosmtpd's
``handle_*`` hooks so that anyone who knows aiosmtpd recognises them.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    CONNECT = "connect"
    GREETING = "greeting"
    EHLO = "ehlo"
    STARTTLS = "starttls"
    AUTH = "auth"  # the client's credentials are in (RFC 4954 4), the AUTH reply not yet sent
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"
    BODY = "body"
    BDAT = "bdat"  # a BDAT chunk has been read (RFC 3030), before its reply
    END_OF_DATA = "end_of_data"
    QUIT = "quit"

    @property
    def label(self) -> str:
        """How the stage reads in a journal line: ``after MAIL``, ``on DATA``."""
        return _LABELS[self]


_LABELS = {
    Stage.CONNECT: "after connect",
    Stage.GREETING: "at the greeting",
    Stage.EHLO: "after EHLO",
    Stage.STARTTLS: "after STARTTLS",
    Stage.AUTH: "after AUTH",
    Stage.MAIL: "after MAIL",
    Stage.RCPT: "after RCPT",
    Stage.DATA: "on DATA",
    Stage.BODY: "during the body",
    Stage.BDAT: "after a BDAT chunk",
    Stage.END_OF_DATA: "after the final dot",
    Stage.QUIT: "after QUIT",
}


# Conditions (``when`` keys) that only make sense at one stage.
CONDITIONS_ONLY_AT = {"after_bytes": Stage.BODY, "mechanism": Stage.AUTH, "login": Stage.AUTH}


class ListenerState(StrEnum):
    """What the TCP listener does with a SYN (below SMTP, so not a rule)."""

    OPEN = "open"  # accept and speak SMTP
    REFUSE = "refuse"  # port bound but not listening: the kernel answers the SYN with RST
    BLACKHOLE = "blackhole"  # accept queue kept full: the SYN is never answered


class TlsMode(StrEnum):
    NONE = "none"  # STARTTLS not offered
    STARTTLS = "starttls"  # offered on the plain port (RFC 3207)
    IMPLICIT = "implicit"  # TLS from the first byte (SMTPS, RFC 8314)


class Protocol(StrEnum):
    """What fakemx speaks on the connection."""

    SMTP = "smtp"  # RFC 5321, with the extensions the profile advertises
    LMTP = "lmtp"  # RFC 2033: LHLO, and one reply per recipient after the message
