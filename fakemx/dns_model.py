"""The ``[dns]`` section of a profile: the zone fakemx's DNS server answers, and its faults.

TOML shape::

    [dns]
    origin = "test"                      # authoritative for test. and below; REFUSED elsewhere
    tcp = "open"                         # or "refuse": nothing accepts DNS over TCP

    [[dns.records]]
    name = "example.test"
    type = "MX"
    value = "10 mx.example.test"
    ttl = 300

    [[dns.records]]
    name = "mx.example.test"
    type = "A"
    value = "{fakemx}"                   # the address fakemx's SMTP server listens on

    [[dns.faults]]
    name = "example.test"
    type = "MX"                          # leave out for every type
    rcode = "SERVFAIL"                   # or no_answer / delay_seconds / truncate

Records with ``from_seconds`` / ``until_seconds`` exist only in that window,
counted from the server's start on its (injectable) clock: two MX records, one
until 5 s and one from 5 s, make "the MX changed recently" while the old
answer's TTL still runs in every cache.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

RecordType = Literal["A", "AAAA", "MX", "TXT", "CNAME"]
# The types a fault can match; "ANY" matches every query type.
QueryType = Literal["A", "AAAA", "MX", "TXT", "CNAME", "SOA", "NS", "ANY"]
# RFC 1035 4.1.1 / RFC 2136 response codes a broken or expired zone gives.
DnsRcode = Literal["SERVFAIL", "NXDOMAIN", "REFUSED"]
TcpState = Literal["open", "refuse"]

# Stands for the address of the fakemx SMTP server the DNS server fronts.
FAKEMX_ADDRESS = "{fakemx}"
MAX_TTL = 2**31 - 1  # RFC 2181 8
DEFAULT_TTL = 300
DEFAULT_NEGATIVE_TTL = 60  # the SOA minimum: how long resolvers cache "no such name" (RFC 2308)

Ttl = Annotated[int, Field(ge=0, le=MAX_TTL)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def normal_name(name: str) -> str:
    """Lower case, no trailing dot: how names are compared (RFC 4343: case-insensitive)."""
    return name.strip().rstrip(".").lower()


class DnsRecord(_Strict):
    """One resource record. ``value`` is in zone-file form for its type.

    A: an IPv4 address or ``{fakemx}``; AAAA: an IPv6 address or ``{fakemx}``;
    MX: ``PREFERENCE TARGET`` (``0 .`` is a null MX, RFC 7505); CNAME: a name;
    TXT: the text (an SPF policy, say), split into 255-byte strings on the wire.
    """

    name: str
    type: RecordType
    value: str
    ttl: Ttl | None = None  # the zone's ``ttl`` when left out
    from_seconds: Annotated[float, Field(ge=0)] | None = None
    until_seconds: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _value_fits_type(self) -> DnsRecord:
        value = self.value.strip()
        if self.type in ("A", "AAAA") and value != FAKEMX_ADDRESS:
            version = 4 if self.type == "A" else 6
            try:
                address = ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(
                    f"{self.type} value {value!r} is not an IPv{version} address "
                    f"(or {FAKEMX_ADDRESS})"
                ) from None
            if address.version != version:
                raise ValueError(f"{self.type} value {value!r} is not an IPv{version} address")
        elif self.type == "MX":
            parts = value.split()
            if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) > 65535:
                raise ValueError(
                    f"MX value {value!r} must be 'PREFERENCE TARGET', e.g. '10 mx.example.test'"
                )
        elif self.type == "CNAME" and (not value or " " in value):
            raise ValueError(f"CNAME value {value!r} must be one name")
        if (
            self.from_seconds is not None
            and self.until_seconds is not None
            and self.from_seconds >= self.until_seconds
        ):
            raise ValueError("from_seconds must be before until_seconds")
        return self

    def active(self, elapsed_seconds: float) -> bool:
        """Whether the record exists ``elapsed_seconds`` after the server started."""
        if self.from_seconds is not None and elapsed_seconds < self.from_seconds:
            return False
        return self.until_seconds is None or elapsed_seconds < self.until_seconds


class DnsFault(_Strict):
    """What goes wrong for queries of ``name`` (and ``type``). Exactly one of:

    ``rcode``: answer SERVFAIL, NXDOMAIN or REFUSED.
    ``no_answer``: never answer; the resolver times out.
    ``delay_seconds``: the right answer, but this late (beyond a resolver's timeout).
    ``truncate``: over UDP, an empty answer with the TC bit set, so the resolver
    retries over TCP (RFC 7766); with ``[dns] tcp = "refuse"`` that fails too.
    """

    name: str
    type: QueryType = "ANY"
    rcode: DnsRcode | None = None
    no_answer: Literal[True] | None = None
    delay_seconds: Annotated[float, Field(gt=0)] | None = None
    truncate: Literal[True] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> DnsFault:
        given = [key for key in FAULT_KEYS if getattr(self, key) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(
                f"a DNS fault needs exactly one of {', '.join(FAULT_KEYS)} (found {found})"
            )
        return self

    def matches(self, name: str, qtype: str) -> bool:
        return normal_name(self.name) == normal_name(name) and self.type in ("ANY", qtype)

    @property
    def label(self) -> str:
        """E.g. ``SERVFAIL``, ``no answer``, ``delay 30s``, ``truncated``."""
        if self.rcode is not None:
            return self.rcode
        if self.no_answer:
            return "no answer"
        if self.delay_seconds is not None:
            return f"delay {self.delay_seconds:g}s"
        return "truncated"


FAULT_KEYS = ("rcode", "no_answer", "delay_seconds", "truncate")


class Dns(_Strict):
    """A fake authoritative zone (and the resolver a relay is pointed at) for ``origin``.

    Names at or below ``origin`` are answered from ``records``; a name with no
    record is NXDOMAIN, a name with records but none of the asked type is an
    empty NOERROR (NODATA), both with the zone's SOA so resolvers cache them
    for ``negative_ttl`` (RFC 2308). Names outside ``origin`` get REFUSED, as
    from a server that is not authoritative for them. ``faults`` are checked
    first, in order; the first that matches the name and type wins.
    """

    origin: str = "test"
    ttl: Ttl = DEFAULT_TTL
    negative_ttl: Ttl = DEFAULT_NEGATIVE_TTL
    tcp: TcpState = "open"
    records: list[DnsRecord] = []
    faults: list[DnsFault] = []

    def fault_for(self, name: str, qtype: str) -> DnsFault | None:
        return next((fault for fault in self.faults if fault.matches(name, qtype)), None)

    def scaled(self, time_scale: float) -> Dns:
        """Every duration, TTLs included, multiplied by ``time_scale`` (TTLs stay >= 1 s).

        TTLs are durations in every resolver's cache, so a lab run at 0.01
        shows the stale-cache window end as the profile says, only sooner.
        """
        if time_scale == 1:
            return self

        def ttl(value: int) -> int:
            return value if value == 0 else max(1, round(value * time_scale))

        def seconds(value: float | None) -> float | None:
            return None if value is None else value * time_scale

        return self.model_copy(update={
            "ttl": ttl(self.ttl),
            "negative_ttl": ttl(self.negative_ttl),
            "records": [
                record.model_copy(update={
                    "ttl": None if record.ttl is None else ttl(record.ttl),
                    "from_seconds": seconds(record.from_seconds),
                    "until_seconds": seconds(record.until_seconds),
                })
                for record in self.records
            ],
            "faults": [
                fault.model_copy(update={"delay_seconds": seconds(fault.delay_seconds)})
                for fault in self.faults
            ],
        })
