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

The zone must publish ``_mta-sts.example.test TXT "v=STSv1; id=..."`` and an
address for ``mta-sts.example.test`` (``{fakemx}``): they are ``[dns]`` records
like any other, so a profile can also leave them out or break them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

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
    model_config = ConfigDict(extra="forbid", frozen=True)

    domain: str = "example.test"
    mode: PolicyMode = "enforce"
    mx: list[str] = ["mx.fakemx.test"]
    max_age: Annotated[int, Field(ge=0, le=MAX_AGE_LIMIT)] = 86_400
    fault: PolicyFault | None = None
    cert: PolicyHostCert = "valid"

    @property
    def host(self) -> str:
        return f"mta-sts.{self.domain.strip().rstrip('.').lower()}"
