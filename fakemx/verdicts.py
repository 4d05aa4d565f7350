"""What a real Postfix relay logs for a catalog profile: ``[about.postfix]``.

The catalog documents what a relay will say, and tests/e2e holds every profile
to it with a private Postfix instance (tests/postfix.py). Data only: the test
reads these fields, fakemx itself never does.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Status = Literal["sent", "deferred", "bounced"]
Dsn = Annotated[str, Field(pattern=r"^[245]\.\d{1,3}\.\d{1,3}$")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class PostfixAttempt(_Strict):
    """Another verdict the same profile may get from Postfix, when the wire allows a race."""

    status: Status
    dsn: Dsn
    reason: str


class PostfixVerdict(_Strict):
    """What a real Postfix relay logs for this profile (asserted by tests/e2e).

    ``status``, ``dsn`` and ``reason`` (a substring; ``{host}`` stands for the
    relay's name for fakemx, ``127.0.0.1[127.0.0.1]``) describe the first
    delivery attempt of the probe message, made with
    ``smtp_tls_security_level`` set to ``tls`` (``implicit``: SMTPS,
    ``smtp_tls_wrappermode`` with ``verify``) and Postfix's timeouts scaled by
    0.01 like the profile.

    The probe goes from ``sender`` to ``local_part@...`` (with ``recipients =
    N`` above 1: to ``local_part1`` ... ``local_partN``, in one message), with
    the relay's normal EHLO name or, with ``bad_helo``,
    ``localhost.localdomain``; ``hold_connections`` other sessions are held
    open meanwhile. ``warm_up_messages`` messages are relayed first, one after
    the other, and each must be sent; fakemx's clock stands still from its
    start until the probe's first verdict, so a rate window ("5/60s", 0.6 s at
    this scale) holds them all however slow the machine is, and runs again for
    the retries. ``sent_recipients``: the first N recipients of the probe are
    sent at its first attempt, and only the others get status, dsn and reason
    (a recipient limit).

    ``sent_on_attempt``: the later attempt that is accepted (greylisting by
    count, intermittent failure, a rate window that has passed);
    ``eventually_sent``: accepted on some later attempt (greylisting by time).
    """

    status: Status
    dsn: Dsn
    reason: str
    # dane, dane-only: smtp_tls_security_level for a relay resolving through a validating
    # resolver (tests/test_dane_postfix.py)
    tls: Literal["may", "encrypt", "verify", "implicit", "dane", "dane-only"] = "may"
    log: str = ""  # a substring of another log line about fakemx, e.g. the verification cause
    sender: str = ""
    local_part: str = "bob"
    recipients: Annotated[int, Field(ge=1, le=50)] = 1  # Postfix sends up to 50 in one message
    sent_recipients: Annotated[int, Field(ge=0)] = 0
    warm_up_messages: Annotated[int, Field(ge=0, le=100)] = 0
    bad_helo: bool = False
    hold_connections: Annotated[int, Field(ge=0)] = 0
    sent_on_attempt: Annotated[int, Field(ge=2)] | None = None
    eventually_sent: bool = False
    # e.g. an RST right after the handshake can overtake it: then connect() itself fails
    alternatives: list[PostfixAttempt] = []

    @model_validator(mode="after")
    def _some_recipient_gets_the_verdict(self) -> PostfixVerdict:
        if self.sent_recipients >= self.recipients:
            raise ValueError(f"sent_recipients ({self.sent_recipients}) must be below"
                             f" recipients ({self.recipients}): some recipient must get"
                             " status, dsn and reason")
        return self

    @property
    def local_parts(self) -> list[str]:
        """The probe's recipients' local parts, in the order the message names them."""
        if self.recipients == 1:
            return [self.local_part]
        return [f"{self.local_part}{n}" for n in range(1, self.recipients + 1)]
