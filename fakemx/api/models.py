"""The HTTP API's bodies: the profile and rule models themselves, plus small envelopes.

Request bodies reuse ``fakemx.model`` (``Profile``, ``Rule``) so a body is
validated exactly like a profile file; the models here only wrap them
(``ProfileChoice``) or describe what the API returns. Response models are
plain data with no behaviour; ``fakemx.api.views`` fills them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fakemx.journal import Outcome
from fakemx.model import About, Profile, Rule
from fakemx.stages import ListenerState, TlsMode

# The biggest page a list endpoint returns, so one request cannot make fakemx
# serialise its whole journal (10,000 sessions per server).
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50

# A catalog name is a file stem in profiles/; no separators, so a name can
# never point the loader at a path outside the catalog.
CATALOG_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ApiError(BaseModel):
    """Every error: the HTTP status again, and one line that says what to do."""

    status: int
    error: str


class ProfileChoice(_Body):
    """Switch to a catalog profile by name, or to a full profile given inline."""

    catalog: Annotated[str, Field(pattern=CATALOG_NAME.pattern, max_length=200)] | None = None
    profile: Profile | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ProfileChoice:
        if (self.catalog is None) == (self.profile is None):
            raise ValueError("give either catalog (a profile name) or profile (a full profile)")
        return self


class ListenerChoice(_Body):
    state: ListenerState


class RuleOut(BaseModel):
    """A rule of the running profile, with the label ``DELETE .../rules/{label}`` takes."""

    label: str
    rule: Rule


class ServerInfo(BaseModel):
    """One running fake MX: where it listens and what it plays."""

    name: str
    address: str
    host: str
    port: int
    profile: str
    code: str
    title: str
    listener: ListenerState
    tls: TlsMode
    inband: bool
    rules: int
    sessions: int
    messages: int
    about: About | None
    # A lab in student mode: "hidden" (students see neither profile nor about) or
    # "revealed" (the trainer revealed it); "" otherwise.
    students: Literal["", "hidden", "revealed"] = ""


class EventOut(BaseModel):
    at: float
    kind: str  # "client": a command; "server": a reply line; "fakemx": rules, stalls, TLS, ends
    text: str


class SessionOut(BaseModel):
    id: int
    server: str
    profile: str
    client_ip: str
    client_port: int
    attempt: int
    started: float
    ended: float | None
    outcome: Outcome
    stage: str
    ended_by: str
    helo: str | None
    tls: str | None
    events: list[EventOut]
    message_ids: list[int]
    sender: str | None = None  # the first MAIL FROM address (a lab's students filter by it)


class SessionPage(BaseModel):
    """Newest first; ``total`` counts every match, ``items`` holds at most ``limit``."""

    items: list[SessionOut]
    total: int
    limit: int
    offset: int


class MessageSummary(BaseModel):
    id: int
    server: str
    session_id: int
    received: float
    mail_from: str
    rcpt_tos: list[str]
    size: int
    subject: str


class MessagePage(BaseModel):
    items: list[MessageSummary]
    total: int
    limit: int
    offset: int


class MessagesDeleted(BaseModel):
    """What ``DELETE /api/messages`` removed from the state dir."""

    deleted: int
    ids: list[int]


class Header(BaseModel):
    name: str
    value: str


class MessageOut(MessageSummary):
    """A message parsed: headers in order, the text and HTML bodies, attachment names."""

    headers: list[Header]
    text: str | None
    html: str | None
    attachments: list[str]


class SenderReport(BaseModel):
    sender: str  # Postfix, Exim, smtplib
    setting: str  # the sender's setting the verdict was proven with
    says: str


class CatalogEntry(BaseModel):
    """A catalog profile as ``fakemx list --json`` shows it, plus its teaching text."""

    name: str
    code: str
    title: str
    relay_sees: str
    ndr: str
    listener: str
    tls: str
    causes: list[str]
    fixes: list[str]
    postfix_reason: str | None  # what a real Postfix logs, from [about.postfix]
    reports: list[SenderReport]  # what Postfix, Exim and smtplib report (fakemx explain)
    needs: list[str]  # the sender settings without which the profile does not fail


class CatalogExplanation(CatalogEntry):
    explanation: str  # ``fakemx explain NAME``


class CodeInfo(BaseModel):
    code: str
    reply: str
    meaning: str
    causes: list[str]
    fixes: list[str]
    profiles: list[str]


class CodeExplanation(CodeInfo):
    explanation: str  # ``fakemx explain CODE``


class Version(BaseModel):
    fakemx: str
    servers: int


__all__ = [
    "ApiError",
    "CatalogEntry",
    "CatalogExplanation",
    "CodeExplanation",
    "CodeInfo",
    "EventOut",
    "Header",
    "ListenerChoice",
    "MessageOut",
    "MessagePage",
    "MessageSummary",
    "Profile",
    "ProfileChoice",
    "Rule",
    "RuleOut",
    "ServerInfo",
    "SessionOut",
    "SessionPage",
    "Version",
]
