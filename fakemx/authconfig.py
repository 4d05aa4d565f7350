"""The profile's ``[auth]`` table: SMTP AUTH's mechanisms, users and rules of use.

The schema only (pydantic, like fakemx.model); fakemx/smtp/auth.py serves it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

AuthMechanism = Literal["PLAIN", "LOGIN", "CRAM-MD5"]  # what fakemx can offer
MECHANISMS: tuple[AuthMechanism, ...] = ("PLAIN", "LOGIN", "CRAM-MD5")


class Auth(BaseModel):
    """SMTP AUTH (RFC 4954): the mechanisms offered, who may log in, and when it is a must.

    ``users`` maps a login to its password. ``required``: MAIL, RCPT and DATA
    before a successful AUTH get ``530 5.7.0 Authentication required``.
    ``require_tls`` (the default): AUTH only over TLS, as RFC 4954 14 advises for
    plaintext mechanisms; before STARTTLS it is not advertised and the command
    gets ``538 5.7.11``. ``advertise_before_tls`` lists it before TLS anyway (a
    server that shows AUTH everywhere, or whose TLS is off), still refusing it
    there with 538. Without ``[auth]`` fakemx offers no AUTH and answers the
    command ``503 5.5.1``, as a Postfix without SASL does.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    mechanisms: Annotated[list[AuthMechanism], Field(min_length=1)] = ["PLAIN", "LOGIN"]
    users: dict[str, str] = {}
    required: bool = False
    require_tls: bool = True
    advertise_before_tls: bool = False

    @field_validator("mechanisms")
    @classmethod
    def _each_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("names a mechanism twice: list each once")
        return value
