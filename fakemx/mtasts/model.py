"""The ``[mta_sts]`` section: the policy fakemx's policy host serves, and how it fails.

TOML shape::

    [mta_sts]
    domain = "example.test"        # the host is mta-sts.example.test (RFC 8461 3.2)
    mode = "enforce"               # or testing, none
    mx = ["mx.fakemx.test"]        # the policy's mx: patterns ("*.fakemx.test" allowed)
    max_age = 86400
    fault = "not_found"            # optional: down, timeout, not_found, server_error,
                                   #   invalid_policy
    cert = "expired"               # optional: the policy host's certificate kind
    changes_after_seconds = 60     # optional: from then on the policy lists mx_after
    mx_after = ["mail.example.test"]   # (give the TXT record a new id from then too)

The zone must publish ``_mta-sts.example.test TXT "v=STSv1; id=..."`` and an
address for ``mta-sts.example.test`` (``{fakemx}``): they are ``[dns]`` records
like any other, so a profile can also leave them out or break them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

PolicyMode = Literal["enforce", "testing", "none"]
# What goes wrong at the policy host, each a real thing on the wire:
# down: nothing listens (the SYN gets an RST); timeout: the connection is accepted
# and never answered; not_found / server_error: HTTP 404 / 500; invalid_policy:
# 200 with a body that is not a valid policy (RFC 8461 3.2).
PolicyFault = Literal["down", "timeout", "not_found", "server_error", "invalid_policy"]
# The policy host's certificate: a fakemx.model.CertKind (named here, not imported:
# fakemx.model imports this module), each failing PKIX validation in its own way.
PolicyHostCert = Literal["valid", "expired", "not_yet_valid", "wrong_host", "self_signed",
                         "untrusted"]
MAX_AGE_LIMIT = 31_557_600  # RFC 8461 3.2: at most one year


class MtaSts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    domain: str = "example.test"
    mode: PolicyMode = "enforce"
    mx: list[str] = ["mx.fakemx.test"]
    max_age: Annotated[int, Field(ge=0, le=MAX_AGE_LIMIT)] = 86_400
    fault: PolicyFault | None = None
    cert: PolicyHostCert = "valid"
    # A policy that changes: RFC 8461 3.3 has senders fetch it again when the TXT
    # record's id changes, and only then (the id changing is a [dns] record window).
    changes_after_seconds: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    mx_after: list[str] = []

    @model_validator(mode="after")
    def _a_change_has_both_halves(self) -> MtaSts:
        if (self.changes_after_seconds is None) != (not self.mx_after):
            raise ValueError("changes_after_seconds and mx_after go together: give both, or"
                             " neither")
        return self

    def mx_at(self, elapsed_seconds: float) -> list[str]:
        """The policy's mx patterns ``elapsed_seconds`` after the host started."""
        after = self.changes_after_seconds
        return self.mx_after if after is not None and elapsed_seconds >= after else self.mx

    def scaled(self, time_scale: float) -> MtaSts:
        if self.changes_after_seconds is None:
            return self
        return self.model_copy(update={
            "changes_after_seconds": self.changes_after_seconds * time_scale})

    @property
    def host(self) -> str:
        return f"mta-sts.{self.domain.strip().rstrip('.').lower()}"
