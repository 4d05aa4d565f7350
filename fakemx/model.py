"""The profile schema: one set of pydantic models for files, API bodies and markers.

A profile is a list of rules. A rule says: at this *stage*, *when* these
conditions all hold, take this *action*. Actions are data; the server is the
only thing that carries them out on a socket.

TOML shape (each rule has exactly one action key)::

    [[rules]]
    stage = "rcpt"
    when = { first_attempts = 2 }
    reply = { code = 451, text = "4.7.1 Greylisted, try again later" }
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, PrivateAttr, field_validator, model_validator

from fakemx.actions import (
    ONLY_AT,
    Accept,
    BreakHandshake,
    Drop,
    DropHow,
    HandshakeFault,
    MaskBanner,
    StripExtensions,
)
from fakemx.authconfig import Auth, AuthMechanism
from fakemx.counters import HELP, Count, Event, check_scopes, scale_when
from fakemx.dns.model import Dns
from fakemx.edge_actions import (
    EDGE_ACTION_KEYS,
    HeloOnly,
    InjectPlaintext,
    MixedCodes,
    OtherServer,
    Segmented,
    Unterminated,
)
from fakemx.extensions import Extensions
from fakemx.mtasts.model import MtaSts
from fakemx.stages import CONDITIONS_ONLY_AT, ListenerState, Protocol, Stage, TlsMode
from fakemx.strict import Strict, one_line
from fakemx.verdicts import About as About  # re-exported: fakemx.About
from fakemx.verdicts import EximVerdict as EximVerdict  # re-exported: fakemx.EximVerdict
from fakemx.verdicts import PostfixVerdict as PostfixVerdict  # re-exported: fakemx.PostfixVerdict


class CertKind(StrEnum):
    """The server certificate, each kind wrong in one way (see fakemx.tls.certs)."""

    VALID = "valid"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    WRONG_HOST = "wrong_host"  # names another host
    SELF_SIGNED = "self_signed"
    UNTRUSTED = "untrusted"  # signed by a CA fakemx never exports
    MISSING_INTERMEDIATE = "missing_intermediate"  # served without its intermediate CA
    REVOKED = "revoked"  # listed in fakemx's CRL and OCSP responder
    WEAK_SHA1 = "weak_sha1"  # SHA-1 signature
    WEAK_RSA1024 = "weak_rsa1024"  # 1024-bit RSA key


TlsVersion = Literal["1.0", "1.1", "1.2", "1.3"]

# RFC 5321 4.5.3.2.7: a server should wait at least 5 minutes for the next command.
DEFAULT_IDLE_TIMEOUT_SECONDS = 300.0
# aiosmtpd's default, advertised as SIZE (RFC 1870).
DEFAULT_MAX_MESSAGE_SIZE = 33_554_432


class Reply(Strict):
    """Answer with ``code`` and ``text``; a text with newlines becomes a multi-line reply.

    ``text`` may name ``{client_ip}``, ``{helo}``, ``{sender}``, ``{recipient}`` and
    ``{hostname}``. ``close`` hangs up after the reply: ``"fin"`` (or ``true``) for
    an orderly close, ``"rst"`` for a reset.
    """

    code: Annotated[int, Field(ge=200, le=599)]
    text: str = ""
    close: DropHow | None = None

    @field_validator("close", mode="before")
    @classmethod
    def _close_true_means_fin(cls, value: Any) -> Any:
        if value is True:
            return "fin"
        if value is False:
            return None
        return value

    @field_validator("text")
    @classmethod
    def _no_bare_cr(cls, value: str) -> str:
        if "\r" in value:
            raise ValueError("must not contain a carriage return; use \\n between lines")
        return value


class Then(Strict):
    """What a stall does when its time is up: reply, or drop. Neither: carry on normally."""

    reply: Reply | None = None
    drop: DropHow | None = None

    @model_validator(mode="after")
    def _at_most_one(self) -> Then:
        if self.reply is not None and self.drop is not None:
            raise ValueError("give either reply or drop after a stall, not both")
        return self

    @property
    def action(self) -> Reply | Drop | None:
        """What to do when the stall is over; None: carry on normally."""
        return Drop(self.drop) if self.drop is not None else self.reply


class Stall(Strict):
    """Stay silent for ``seconds`` (for ever when omitted), then do ``then``."""

    seconds: Annotated[float, Field(gt=0)] | None = None
    then: Then | None = None


class When(Strict):
    """Conditions for a rule; every one given must hold (an empty ``when`` always fires)."""

    # ``not`` is a Python keyword: the field is ``not_``, written ``not`` in files and JSON.
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)
    first_attempts: Annotated[int, Field(ge=1)] | None = None
    within_seconds: Annotated[float, Field(gt=0)] | None = None
    probability: Annotated[float, Field(ge=0, le=1)] | None = None
    client_ip: list[str] | None = None
    client_ip_not: list[str] | None = None  # fires for clients outside these (an allow-list)
    helo: list[str] | None = None
    sender_domain: list[str] | None = None
    recipient: list[str] | None = None
    concurrent_above: Annotated[int, Field(ge=0)] | None = None
    after_bytes: Annotated[int, Field(ge=0)] | None = None
    authenticated: bool | None = None  # has the client logged in (AUTH) in this session?
    mechanism: list[AuthMechanism] | None = None  # stage auth: the mechanism it chose
    login: list[str] | None = None  # stage auth: globs on the login it gave
    sessions: Count | None = Field(default=None, description=HELP[Event.SESSIONS])
    messages: Count | None = Field(default=None, description=HELP[Event.MESSAGES])
    recipients: Count | None = Field(default=None, description=HELP[Event.RECIPIENTS])
    not_: When | None = Field(default=None, alias="not", description=HELP["not"])
    _countable = model_validator(mode="after")(check_scopes)

    @field_validator("client_ip", "client_ip_not")
    @classmethod
    def _networks(cls, value: list[str] | None) -> list[str] | None:
        for item in value or []:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value


# One type per action; a rule's action key in the file picks one (see fakemx.actions).
Action = (Reply | Stall | Drop | Accept | StripExtensions | MaskBanner | BreakHandshake
          | Unterminated | Segmented | MixedCodes | HeloOnly | OtherServer | InjectPlaintext)

ACTION_KEYS = ("reply", "drop", "stall", "accept", "strip_extensions", "mask_banner",
               "handshake", *EDGE_ACTION_KEYS)


class Rule(Strict):
    stage: Stage
    name: str | None = None
    when: When = When.model_construct()
    reply: Reply | None = None
    drop: DropHow | None = None
    stall: Stall | None = None
    accept: Literal[True] | None = None
    strip_extensions: list[str] | None = None
    mask_banner: str | None = None
    handshake: HandshakeFault | None = None
    unterminated: Unterminated | None = None  # the malformed and edge replies:
    segmented: Segmented | None = None  # see fakemx.edge_actions
    mixed_codes: MixedCodes | None = None
    helo_only: Literal[True] | None = None
    other_server: OtherServer | None = None
    inject_plaintext: InjectPlaintext | None = None
    times: Annotated[int, Field(ge=1)] | None = Field(default=None, description=HELP["times"])
    after: Annotated[int, Field(ge=1)] | None = Field(default=None, description=HELP["after"])
    times_per: Literal["server", "client"] = Field(default="server",
                                                   description=HELP["times_per"])

    # The action as one of its types (fakemx.actions), made once: every session asks.
    _action: Action = PrivateAttr()

    # A CR or LF would add reply lines of the profile's own making to the greeting
    # (RFC 5321 4.2: a reply line ends at CRLF); the name is a label and a log line.
    _one_line_texts = field_validator("name", "mask_banner")(one_line)

    @model_validator(mode="after")
    def _exactly_one_action(self) -> Rule:
        given = [key for key in ACTION_KEYS if getattr(self, key) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(
                f"a rule needs exactly one action of {', '.join(ACTION_KEYS)} (found {found})"
            )
        self._action = self._make_action()
        only_at = ONLY_AT.get(type(self._action))
        if only_at is not None and self.stage is not only_at:
            raise ValueError(f"{self.action_key} only applies at stage '{only_at}'")
        for key, at in CONDITIONS_ONLY_AT.items():
            if getattr(self.when, key) is not None and self.stage is not at:
                raise ValueError(f"when.{key} only applies at stage '{at}'")
        return self

    @property
    def counted(self) -> bool:
        """Does the server keep this rule's matches and firings (``times``, ``after``)?"""
        return self.times is not None or self.after is not None

    def _make_action(self) -> Action:
        if self.reply is not None:
            return self.reply
        if self.stall is not None:
            return self.stall
        if self.drop is not None:
            return Drop(self.drop)
        if self.strip_extensions is not None:
            return StripExtensions(frozenset(n.upper() for n in self.strip_extensions))
        if self.mask_banner is not None:
            return MaskBanner(self.mask_banner)
        if self.handshake is not None:
            return BreakHandshake(self.handshake)
        if self.helo_only:
            return HeloOnly()
        edge: Action | None = next((getattr(self, key) for key in EDGE_ACTION_KEYS
                                    if getattr(self, key) is not None), None)
        return edge if edge is not None else Accept()

    @property
    def action(self) -> Action:
        """What the rule does, as one of the action types (see fakemx.actions)."""
        return self._action

    @property
    def action_key(self) -> str:
        return next(key for key in ACTION_KEYS if getattr(self, key) is not None)

    @property
    def label(self) -> str:
        """The rule's name, or ``<stage>-<action>`` as toxiproxy names unnamed toxics."""
        return self.name or f"{self.stage}-{self.action_key}"


class Tls(Strict):
    """How fakemx does TLS: where it is offered, which certificate, which protocols.

    ``min_version``/``max_version`` left out mean OpenSSL's and Python's
    defaults (TLS 1.2 and up). Versions below 1.2 and the weak certificate kinds
    lower the OpenSSL security level to 0, which they need to work at all.
    ``ciphers`` is an OpenSSL cipher list for TLS 1.2 and below (TLS 1.3 suites
    are not configurable from Python). ``require_client_cert`` asks for a
    client certificate and trusts no issuer, so every client is refused.
    ``send_ca``: the chain sent ends with fakemx's root CA, as a DANE-TA(2)
    TLSA record that names the CA needs (RFC 7672 3.1.2).
    """

    mode: TlsMode = TlsMode.STARTTLS
    cert: CertKind = CertKind.VALID
    send_ca: bool = False
    min_version: TlsVersion | None = None
    max_version: TlsVersion | None = None
    ciphers: str | None = None
    require_client_cert: bool = False

    @model_validator(mode="after")
    def _versions_in_order(self) -> Tls:
        if self.min_version and self.max_version and self.min_version > self.max_version:
            raise ValueError(
                f"min_version {self.min_version} is above max_version {self.max_version}"
            )
        return self


class Limits(Strict):
    """What fakemx will take before it says 421 (or 452), to stay up under load.

    ``sessions``: open sessions in all (also capped by the process's file
    descriptors, see fakemx.fdbudget); ``sessions_per_client``: open sessions from
    one address, so no one address takes every slot; ``commands_per_session``:
    commands in one session; ``recipients_per_message``: RCPTs in one transaction,
    then ``452 4.5.3`` (RFC 5321 4.5.3.1.8 asks for at least 100; Postfix's
    default is 1,000). None: no limit.
    """

    sessions: Annotated[int, Field(ge=1)] | None = 16_000  # below a 20,000 fd limit
    sessions_per_client: Annotated[int, Field(ge=1)] | None = 1_000
    commands_per_session: Annotated[int, Field(ge=1)] | None = 10_000
    recipients_per_message: Annotated[int, Field(ge=1)] | None = 1_000


# Every duration in an action: (action key, field), scaled by time_scale.
_DURATIONS = (("stall", "seconds"), ("segmented", "pause_seconds"), ("other_server", "seconds"))


class Profile(Strict):
    name: str = "custom"
    about: About | None = None
    listener: ListenerState = ListenerState.OPEN
    protocol: Protocol = Protocol.SMTP
    tls: Tls = Tls.model_construct()
    extensions: Extensions = Extensions.model_construct()
    inband: bool = False
    seed: int | None = None  # for probability conditions; `--seed` overrides it
    # RFC 1870 SIZE; at least 1: fakemx always enforces a size (0 is not "unlimited").
    max_message_size: Annotated[int, Field(json_schema_extra={"minimum": 1})] = \
        DEFAULT_MAX_MESSAGE_SIZE
    idle_timeout_seconds: Annotated[float, Field(gt=0)] = DEFAULT_IDLE_TIMEOUT_SECONDS
    limits: Limits = Limits.model_construct()
    auth: Auth | None = None  # SMTP AUTH offered (RFC 4954); None: not offered
    rules: list[Rule] = []
    dns: Dns | None = None  # a fake DNS zone in front of this server (fakemx.dns.model)
    mta_sts: MtaSts | None = None  # an MTA-STS policy host beside it (fakemx.mtasts)

    _one_line_name = field_validator("name")(one_line)

    @field_validator("max_message_size")
    @classmethod
    def _a_size(cls, value: int) -> int:
        if value < 1:
            raise ValueError(
                f"{value} is not a size: give the largest message fakemx takes in bytes, e.g."
                f" {DEFAULT_MAX_MESSAGE_SIZE}, the default; fakemx always enforces one, so 0"
                " does not mean unlimited")
        return value

    # Rules grouped by stage once: every connection asks at every stage.
    _by_stage: dict[Stage, tuple[Rule, ...]] = PrivateAttr(default_factory=dict)

    def model_post_init(self, context: Any, /) -> None:
        self._by_stage = self._group_by_stage()

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Profile:
        # pydantic copies private attributes as they are: regroup for the new rules.
        copy = super().model_copy(update=update, deep=deep)
        copy._by_stage = copy._group_by_stage()
        return copy

    def _group_by_stage(self) -> dict[Stage, tuple[Rule, ...]]:
        return {stage: tuple(r for r in self.rules if r.stage is stage) for stage in Stage}

    def rules_at(self, stage: Stage) -> tuple[Rule, ...]:
        return self._by_stage[stage]

    def scaled(self, time_scale: float) -> Profile:
        """This profile with every duration multiplied by ``time_scale``.

        So a lab or a test suite can run "greylisted for 300 s" or "stall
        660 s" in a fraction of the time, with the same profile file.
        """
        if time_scale == 1:
            return self
        data = self.model_dump(exclude_none=True)
        data["idle_timeout_seconds"] *= time_scale
        for rule in data["rules"]:
            scale_when(rule.get("when", {}), time_scale)
            for action, seconds in _DURATIONS:
                if seconds in rule.get(action, {}):
                    rule[action][seconds] *= time_scale
        if self.dns is not None:
            data["dns"] = self.dns.scaled(time_scale)
        if self.mta_sts is not None:
            data["mta_sts"] = self.mta_sts.scaled(time_scale)
        return Profile.model_validate(data)
