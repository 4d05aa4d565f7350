"""A tiny retrying relay: the system under test of the "testing your relay" guide.

It is what your own code might look like, cut to the bone: deliver one message
to one MX with smtplib, retry temporary failures (4xx replies, timeouts,
dropped connections, a refusing greeting) with back-off, and give up at once on
a permanent one (5xx). TLS as Postfix does it: "may" uses STARTTLS when
offered (falling back to plain text if the handshake fails), "encrypt"
requires it, "verify" also checks the certificate against ``ca_file``. With
``credentials`` it logs in (SMTP AUTH) where the server offers it.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Status(StrEnum):
    SENT = "sent"
    DEFERRED = "deferred"  # every attempt failed temporarily: still queued
    BOUNCED = "bounced"  # a permanent failure: back to the sender


@dataclass
class Delivery:
    status: Status
    attempts: int
    errors: list[str] = field(default_factory=list)  # why each failed attempt failed


class Permanent(Exception):
    """A 5xx answer to the message (not to the greeting, which only says "not now")."""


@dataclass
class Relay:
    host: str
    port: int
    helo: str = "relay.example.net"
    tls: str = "may"  # "may", "encrypt" or "verify"
    ca_file: Path | None = None
    implicit_tls: bool = False  # SMTPS (RFC 8314): TLS from the first byte, e.g. port 465
    credentials: tuple[str, str] | None = None  # login, password: SMTP AUTH where offered
    timeout: float = 300.0  # RFC 5321 4.5.3.2 suggests minutes
    max_attempts: int = 3
    first_retry: float = 120.0  # seconds, doubling each time
    sleep: Callable[[float], None] = time.sleep

    def send(self, sender: str, recipient: str, message: bytes) -> Delivery:
        errors: list[str] = []
        for attempt in range(1, self.max_attempts + 1):
            try:
                self._attempt(sender, recipient, message, self.tls)
                return Delivery(Status.SENT, attempt, errors)
            except Permanent as exc:
                return Delivery(Status.BOUNCED, attempt, [*errors, str(exc)])
            except (smtplib.SMTPException, OSError) as exc:  # timeouts and resets are OSErrors
                errors.append(f"{type(exc).__name__}: {exc}")
            if attempt < self.max_attempts:
                self.sleep(self.first_retry * 2 ** (attempt - 1))
        return Delivery(Status.DEFERRED, self.max_attempts, errors)

    def _attempt(self, sender: str, recipient: str, message: bytes, tls: str) -> None:
        with self._connect() as smtp:
            code, text = smtp.ehlo()
            if code not in (250, 421):
                # An old server refuses EHLO: say HELO and go on without extensions
                # (RFC 5321 3.2), as Postfix does. A 421 is "not now" to both.
                code, text = smtp.helo()
            if code != 250:
                self._raise_if_permanent(code, text)
                raise smtplib.SMTPHeloError(code, text)
            if self.implicit_tls:
                pass
            elif tls != "none" and smtp.has_extn("starttls"):
                try:
                    smtp.starttls(context=self._tls_context())
                except ssl.SSLError:
                    if tls != "may":
                        raise
                    # Opportunistic TLS: try once more without it, on a new connection.
                    return self._attempt(sender, recipient, message, "none")
                smtp.ehlo()
            elif tls in ("encrypt", "verify"):
                raise smtplib.SMTPNotSupportedError("TLS is required but STARTTLS is not offered")
            if self.credentials is not None and smtp.has_extn("auth"):
                # A refused login raises SMTPAuthenticationError, retried like a 4xx: as
                # Postfix does by default (smtp_sasl_auth_soft_bounce), since a wrong
                # password is fixed on the relay, and the mail should still go then.
                smtp.login(*self.credentials)
            options = []
            if not (sender + recipient).isascii():  # an internationalized address (RFC 6531)
                if not smtp.has_extn("smtputf8"):
                    raise Permanent("SMTPUTF8 is required, but was not offered")  # as Postfix
                options.append("SMTPUTF8")
            try:
                smtp.sendmail(sender, [recipient], message, mail_options=options)
            except smtplib.SMTPRecipientsRefused as exc:
                code, text = exc.recipients[recipient]
                self._raise_if_permanent(code, text)
                raise
            except smtplib.SMTPResponseException as exc:
                self._raise_if_permanent(exc.smtp_code, exc.smtp_error)
                raise

    def _connect(self) -> smtplib.SMTP:
        if self.implicit_tls:
            return smtplib.SMTP_SSL(
                self.host, self.port, self.helo, timeout=self.timeout, context=self._tls_context()
            )
        return smtplib.SMTP(self.host, self.port, self.helo, timeout=self.timeout)

    def _tls_context(self) -> ssl.SSLContext:
        if self.tls == "verify":
            return ssl.create_default_context(cafile=self.ca_file)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # "may" and "encrypt" do not authenticate
        return context

    @staticmethod
    def _raise_if_permanent(code: int, text: bytes) -> None:
        if 500 <= code < 600:
            raise Permanent(f"{code} {text.decode(errors='replace')}")
