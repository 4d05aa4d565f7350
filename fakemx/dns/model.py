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
from collections import defaultdict
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fakemx.dns.tlsa import check_tlsa_value

RecordType = Literal["A", "AAAA", "MX", "TXT", "CNAME", "TLSA"]
# The types a fault can match; "ANY" matches every query type.
QueryType = Literal["A", "AAAA", "MX", "TXT", "CNAME", "TLSA", "SOA", "NS", "DNSKEY", "DS",
                    "ANY"]
# RFC 1035 4.1.1 / RFC 2136 response codes a broken or expired zone gives.
DnsRcode = Literal["SERVFAIL", "NXDOMAIN", "REFUSED"]
TcpState = Literal["open", "refuse"]
# What is wrong with the signatures of a signed zone's answers (fakemx.dns.dnssec).
RrsigFault = Literal["expired", "not_yet_valid", "bad", "missing"]

# Stands for the address of the fakemx SMTP server the DNS server fronts.
FAKEMX_ADDRESS = "{fakemx}"
MAX_TTL = 2**31 - 1  # RFC 2181 8
DEFAULT_TTL = 300
DEFAULT_NEGATIVE_TTL = 60  # the SOA minimum: how long resolvers cache "no such name" (RFC 2308)

# RFC 1035 2.3.4: a label holds at most 63 bytes, a name 255 on the wire.
MAX_LABEL_BYTES = 63
MAX_NAME_BYTES = 255
# RFC 1035 3.2.1 / 4.2.2: RDLENGTH, and a whole message over TCP, are 16-bit.
MAX_WIRE_BYTES = 65535
TXT_STRING_BYTES = 255  # RFC 1035 3.3.14: one <character-string>

Ttl = Annotated[int, Field(ge=0, le=MAX_TTL)]
# Every duration is finite: TOML's inf and nan are no time a timer can wait.
Seconds = Annotated[float, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


def normal_name(name: str) -> str:
    """Lower case, no trailing dot: how names are compared (RFC 4343: case-insensitive)."""
    return name.strip().rstrip(".").lower()


def name_wire_bytes(name: str, what: str = "name") -> int:
    """How many bytes ``name`` takes on the wire, uncompressed; ValueError if it cannot.

    Checked at load, so that no query meets a name dnspython refuses to build.
    """
    text = normal_name(name)
    if not text:
        return 1  # the root, e.g. the null MX's "."
    size = 1  # the root's empty label ends every name
    for label in text.split("."):
        try:
            # dnspython writes a non-ASCII label in its IDNA (xn--) form.
            raw = label.encode("idna") if not label.isascii() else label.encode()
        except UnicodeError:
            raise ValueError(f"{what} {name!r}: label {label!r} is not a valid IDN; "
                             "write it in its xn-- form") from None
        if not raw:
            raise ValueError(f"{what} {name!r} has an empty label; remove the doubled dot")
        if len(raw) > MAX_LABEL_BYTES:
            raise ValueError(f"{what} {name!r} has a label of {len(raw)} bytes "
                             f"(at most {MAX_LABEL_BYTES}); shorten it")
        size += 1 + len(raw)
    if size > MAX_NAME_BYTES:
        raise ValueError(f"{what} {name!r} is {size} bytes on the wire "
                         f"(at most {MAX_NAME_BYTES}); shorten it")
    return size


def _fits_the_wire(name: str) -> str:
    """A name DNS can carry (labels of 63 bytes at most, 255 in all), else ValueError."""
    name_wire_bytes(name)
    return name


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
    from_seconds: Annotated[Seconds, Field(ge=0)] | None = None
    until_seconds: Annotated[Seconds, Field(gt=0)] | None = None

    _name_fits_the_wire = field_validator("name")(_fits_the_wire)

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
        elif self.type == "TLSA":
            check_tlsa_value(value)
        size = self.rdata_bytes()  # also checks the MX and CNAME target names
        if size > MAX_WIRE_BYTES:
            raise ValueError(
                f"{self.type} value is {size:,} bytes on the wire, over the {MAX_WIRE_BYTES:,} "
                "one record can hold; shorten it"
            )
        if (
            self.from_seconds is not None
            and self.until_seconds is not None
            and self.from_seconds >= self.until_seconds
        ):
            raise ValueError("from_seconds must be before until_seconds")
        return self

    def rdata_bytes(self) -> int:
        """The record's data on the wire (at most: names counted uncompressed).

        A TXT value is split into 255-byte strings, each after its length byte.
        """
        value = self.value.strip()
        if self.type == "A":
            return 4
        if self.type == "AAAA":
            return 16
        if self.type == "MX":
            return 2 + name_wire_bytes(value.split()[1], "MX target")
        if self.type == "CNAME":
            return name_wire_bytes(value, "CNAME target")
        if self.type == "TLSA":  # usage, selector, matching type; a digest of at most 64 bytes
            return 3 + max(64, len(value.split()[-1]) // 2)
        # {fakemx} stands for an address here too: at most 39 bytes of IPv6 text.
        text = 39 if value == FAKEMX_ADDRESS else len(value.encode())
        return text + max(1, -(-text // TXT_STRING_BYTES))

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
    ``rrsig`` (a signed zone only): the answer's signatures are ``expired``,
    ``not_yet_valid``, ``bad`` (do not verify) or ``missing``; a validating
    resolver calls the answer bogus and says SERVFAIL (RFC 4035 5.5).
    """

    name: str
    type: QueryType = "ANY"
    rcode: DnsRcode | None = None
    no_answer: Literal[True] | None = None
    delay_seconds: Annotated[Seconds, Field(gt=0)] | None = None
    truncate: Literal[True] | None = None
    rrsig: RrsigFault | None = None

    _name_fits_the_wire = field_validator("name")(_fits_the_wire)

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
        if self.rrsig is not None:
            return f"rrsig {self.rrsig.replace('_', ' ')}"
        return "truncated"


FAULT_KEYS = ("rcode", "no_answer", "delay_seconds", "truncate", "rrsig")


class Dnssec(_Strict):
    """``[dns.dnssec]``: the zone is signed (RFC 4033-4035) with the state dir's keys.

    Its trust anchor (``fakemx dns --trust-anchor``, ``STATE_DIR/dnssec-anchor.ds``)
    is the DS of the key-signing key for ``origin``: give it to a validating
    resolver (unbound ``trust-anchor-file``) and the zone is secure, no chain to
    the real root needed. Names that do not exist, or lack a type, are proven
    so with NSEC records (RFC 4035 3.1.3).
    ``signature_days``: how long signatures made at start stay valid.
    """

    signature_days: Annotated[int, Field(ge=1, le=3650)] = 30
    child: ChildZone | None = None


class ChildZone(_Strict):
    """``[dns.dnssec.child]``: a zone delegated below the apex (RFC 4035 2.4), signed
    with its own signer name; the apex holds its DS.

    ``ds``: ``valid``; ``missing`` (the apex proves there is none, so the child is
    insecure: a "missing DS chain"); ``wrong`` (a DS naming no key of the child:
    a broken chain of trust, bogus). ``signed = false``: the child's answers carry
    no signatures (insecure without a DS, bogus with one).
    """

    name: str
    ds: Literal["valid", "missing", "wrong"] = "valid"
    signed: bool = True

    _name_fits_the_wire = field_validator("name")(_fits_the_wire)


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
    dnssec: Dnssec | None = None  # sign the zone (fakemx.dns.dnssec)

    @field_validator("origin")
    @classmethod
    def _origin_fits_the_wire(cls, origin: str) -> str:
        name_wire_bytes(origin)
        return origin

    @field_validator("records")
    @classmethod
    def _answers_fit_a_message(cls, records: list[DnsRecord]) -> list[DnsRecord]:
        """Every record at one name must fit one message: an ANY query gets them all."""
        at_name: dict[str, list[int]] = defaultdict(list)
        for index, record in enumerate(records):
            at_name[normal_name(record.name)].append(index)
        for name, indexes in at_name.items():
            size = _answer_bytes(name, [records[i] for i in indexes])
            if size > MAX_WIRE_BYTES:
                listed = ", ".join(f"records[{i}]" for i in indexes[:5])
                more = ", ..." if len(indexes) > 5 else ""
                raise ValueError(
                    f"the records at {name!r} ({listed}{more}) take {size:,} bytes on the wire, "
                    f"over the {MAX_WIRE_BYTES:,} one DNS answer can hold; shorten or remove some"
                )
        return records

    @model_validator(mode="after")
    def _signed_for_signature_faults(self) -> Dns:
        if self.dnssec is None and any(fault.rrsig for fault in self.faults):
            raise ValueError("an rrsig fault needs a signed zone: add [dns.dnssec]")
        child = self.dnssec.child if self.dnssec is not None else None
        if child is not None:
            name, origin = normal_name(child.name), normal_name(self.origin)
            if not name.endswith(f".{origin}") and origin:
                raise ValueError(f"dnssec.child.name {child.name!r} must be below the origin"
                                 f" {self.origin!r}, e.g. 'example.{origin}'")
        return self

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
            # At most MAX_TTL: a TTL is 32 bits on the wire, and RFC 2181 8 caps it.
            return value if value == 0 else min(MAX_TTL, max(1, round(value * time_scale)))

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


# RFC 1035 4.1: a header, then the question (name, type, class), and an EDNS
# OPT record (RFC 6891 6.1.2) in the answer to a client that sent one.
_HEADER_BYTES = 12
_QUESTION_FIXED_BYTES = 4
_OPT_BYTES = 11
# Each answer record: its owner (a 2-byte pointer to the question's name,
# RFC 1035 4.1.4), then type, class, TTL and RDLENGTH.
_RECORD_FIXED_BYTES = 2 + 10


def _answer_bytes(name: str, records: list[DnsRecord]) -> int:
    """The largest message answering for ``name``: every record there (an ANY query)."""
    return (_HEADER_BYTES + name_wire_bytes(name) + _QUESTION_FIXED_BYTES + _OPT_BYTES
            + sum(_RECORD_FIXED_BYTES + record.rdata_bytes() for record in records))
