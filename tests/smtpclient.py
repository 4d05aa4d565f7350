"""What Python's smtplib sees of a profile: the client behind ``[about.smtplib]``.

``smtplib.SMTP`` (``SMTP_SSL`` for implicit TLS) with
``ssl.create_default_context()`` trusting fakemx's CA: OpenSSL's checks and
Debian's security level, as most Python senders have them. It sends the
verdict's probe once (no retries: that is a relay's job) and reports what
came back: ``sent``, ``refused`` (``sendmail`` returned refused recipients),
or the exception it raised.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from dataclasses import dataclass
from pathlib import Path

from wire import connect, read_reply

from fakemx.verdicts import SmtplibVerdict

TIMEOUT_SECONDS = 3.0  # a relay's 300 s, scaled by the profiles' 0.01
BODY = "\r\n".join(f"line {n:04d} " + "x" * 60 for n in range(64))  # ~4.5 KB, as tests/e2e


@dataclass(frozen=True)
class Outcome:
    result: str  # "sent", "refused", or the exception's class name
    code: int | None
    message: str

    def line(self) -> str:
        return f"{self.result}: {self.message}"


def send(host: str, port: int, ca_file: Path, expected: SmtplibVerdict) -> Outcome:
    """Hold ``hold_connections`` sessions, send the warm-ups, then the probe."""
    with contextlib.ExitStack() as held:
        for _ in range(expected.hold_connections):
            sock = held.enter_context(connect(host, port))
            assert read_reply(sock).startswith(b"220")
        domain = "fakemx.test"
        for n in range(1, expected.warm_up_messages + 1):
            warm_up = _send_once(host, port, ca_file, expected, [f"warm{n}@{domain}"])
            assert warm_up.result == "sent", (n, warm_up)
        return _send_once(host, port, ca_file, expected,
                          [f"{local}@{domain}" for local in expected.local_parts])


def _send_once(host: str, port: int, ca_file: Path, expected: SmtplibVerdict,
               recipients: list[str]) -> Outcome:
    context = ssl.create_default_context(cafile=str(ca_file))
    helo = "localhost.localdomain" if expected.bad_helo else "client.fakemx.test"
    message = f"From: <{expected.sender}>\r\nSubject: probe\r\n\r\n{BODY}\r\n"
    client: smtplib.SMTP | None = None
    try:
        if expected.tls == "implicit":
            client = smtplib.SMTP_SSL(host, port, local_hostname=helo, timeout=TIMEOUT_SECONDS,
                                      context=context)
        else:
            client = smtplib.SMTP(host, port, local_hostname=helo, timeout=TIMEOUT_SECONDS)
            client.ehlo_or_helo_if_needed()  # as sendmail() would: EHLO, then HELO
            if expected.tls == "required" or client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
        if expected.sasl is not None and client.has_extn("auth"):
            login, _, password = expected.sasl.partition(":")
            client.login(login, password)
        refused = client.sendmail(expected.sender, recipients, message)
    except smtplib.SMTPRecipientsRefused as error:  # every recipient: the first one's reply
        code, text = next(iter(error.recipients.values()))
        return Outcome(type(error).__name__, code, text.decode(errors="replace"))
    except Exception as error:  # what the client sees is the point: any exception
        return Outcome(type(error).__name__, getattr(error, "smtp_code", None), str(error))
    finally:
        if client is not None:
            client.close()
    if not refused:
        return Outcome("sent", None, "")
    code, text = next(iter(refused.values()))
    return Outcome("refused", code, text.decode(errors="replace"))
