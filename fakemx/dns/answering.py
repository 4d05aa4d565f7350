"""Answering one DNS query: pure decisions over the zone, and the wire form per transport.

No sockets here: the server parses, asks ``decide``, journals and sends.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype

from fakemx.dns.journal import Query
from fakemx.dns.zone import Answer, Zone

if TYPE_CHECKING:
    from fakemx.dns.dnssec import ZoneSigner

# RFC 1035 4.2.1: without EDNS a UDP answer holds at most 512 bytes.
CLASSIC_UDP_BYTES = 512
# RFC 6891 6.2.5 / DNS flag day 2020: the EDNS buffer size we offer and honour at most.
EDNS_PAYLOAD_BYTES = 1232
# RFC 1035 4.2.2: a TCP message's length is two bytes.
TCP_MESSAGE_BYTES = 65535
TOO_BIG = "answer too big"


@dataclasses.dataclass(frozen=True)
class Decided:
    response: dns.message.Message
    answer: Answer
    entry: Query
    udp_limit: int  # the largest UDP answer this client takes


def parse(wire: bytes) -> dns.message.Message | str:
    """The query in ``wire``, or why there is none: garbage, or a response.

    Neither gets a reply: garbage has no trustworthy ID to answer to, and
    answering a response invites two servers to answer each other forever.
    """
    try:
        query = dns.message.from_wire(wire)
    except dns.exception.DNSException:
        return "malformed query"
    if query.flags & dns.flags.QR:
        return "a response, not a query"
    return query


def decide(query: dns.message.Message, zone: Zone, elapsed: float, client: str,
           transport: str, signer: ZoneSigner | None = None) -> Decided:
    response = dns.message.make_response(
        query, recursion_available=True, our_payload=EDNS_PAYLOAD_BYTES
    )
    dnssec_ok = bool(query.ednsflags & dns.flags.DO)
    if dnssec_ok:
        response.ednsflags |= dns.flags.DO  # RFC 3225 3: copied into the response
    if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
        # RFC 1035 4.1.1: NOTIMP for a kind of query we do not serve; FORMERR
        # for none or several questions, which no server answers (RFC 9619).
        wrong_opcode = query.opcode() != dns.opcode.QUERY
        response.set_rcode(dns.rcode.NOTIMP if wrong_opcode else dns.rcode.FORMERR)
        rcode = dns.rcode.to_text(response.rcode())
        entry = Query(time.time(), client, transport, "", "", rcode)
        return Decided(response, Answer(response.rcode()), entry, CLASSIC_UDP_BYTES)
    question = query.question[0]
    answer = zone.answer(question.name, question.rdtype, elapsed)
    if signer is not None:
        answer = signer.complete(answer, question.name, question.rdtype, zone, elapsed,
                                 dnssec_ok=dnssec_ok)
    if transport == "tcp" and answer.fault is not None and answer.fault.truncate:
        answer = dataclasses.replace(answer, fault=None)  # truncation is a UDP matter
    response.flags |= dns.flags.AA  # the zone's own server: its word is final
    response.set_rcode(answer.rcode)
    response.answer = list(answer.answer)
    response.authority = list(answer.authority)
    entry = Query(
        at=time.time(),
        client=client,
        transport=transport,
        name=question.name.to_text(),
        type=dns.rdatatype.to_text(question.rdtype),
        rcode=dns.rcode.to_text(answer.rcode),
        answer=tuple(line for rrset in answer.answer for line in rrset.to_text().splitlines()),
        fault=answer.fault.label if answer.fault else None,
    )
    # RFC 6891 6.2.3: a client's EDNS payload size; 512 without EDNS (RFC 1035 4.2.1).
    asked = query.payload if query.edns >= 0 else CLASSIC_UDP_BYTES
    limit = max(CLASSIC_UDP_BYTES, min(asked, EDNS_PAYLOAD_BYTES))
    return Decided(response, answer, entry, limit)


def tcp_wire(decided: Decided) -> tuple[bytes, Query]:
    """The response for TCP; SERVFAIL (fault ``TOO_BIG``) when even 65,535 bytes
    cannot hold it: dns.model rejects a zone whose records at one name do not fit,
    but a long CNAME chain across names still can, and must not raise per query."""
    response = decided.response
    try:
        return response.to_wire(max_size=TCP_MESSAGE_BYTES), decided.entry
    except dns.exception.TooBig:
        pass
    response.answer, response.authority, response.additional = [], [], []
    response.set_rcode(dns.rcode.SERVFAIL)
    entry = dataclasses.replace(decided.entry, rcode="SERVFAIL", answer=(), fault=TOO_BIG)
    return response.to_wire(max_size=TCP_MESSAGE_BYTES), entry


def udp_wire(
    response: dns.message.Message, limit: int, truncate: bool
) -> tuple[bytes, bool]:
    """The response for UDP: whole, or empty with TC set when it does not fit or must not.

    RFC 2181 9: a truncated answer sets TC and the client retries over TCP;
    sending no records at all is the common (and simplest correct) form.
    """
    if not truncate:
        try:
            return response.to_wire(max_size=limit), False
        except dns.exception.TooBig:
            pass
    response.flags |= dns.flags.TC
    response.answer, response.authority, response.additional = [], [], []
    return response.to_wire(max_size=limit), True
