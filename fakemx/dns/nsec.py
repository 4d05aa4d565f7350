"""NSEC denial of existence (RFC 4034 4, RFC 4035 3.1.3) over one zone's names: pure."""

from __future__ import annotations

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from fakemx.dns.zone import Zone


class NsecChain:
    """One zone's names in canonical order (RFC 4034 6.1), each NSEC naming the next.

    ``apex``: the zone's top (fakemx's origin, or a child's); ``cut``: a child
    zone below it, whose names are not this zone's; at the cut itself this zone
    has only the delegation (NS, and DS when ``cut_ds``).
    """

    def __init__(self, apex: dns.name.Name, zone: Zone, elapsed_seconds: float, *,
                 signed_apex: bool = True, cut: dns.name.Name | None = None,
                 cut_ds: bool = False) -> None:
        self.types = {name: types for name, types in zone.types_by_name(elapsed_seconds).items()
                      if name.is_subdomain(apex)
                      and (cut is None or apex == cut or not name.is_subdomain(cut))}
        at_apex = {dns.rdatatype.SOA} | ({dns.rdatatype.DNSKEY} if signed_apex else set())
        self.types.setdefault(apex, set()).update(at_apex)
        if cut is not None and apex != cut:
            self.types[cut] = {dns.rdatatype.NS} | ({dns.rdatatype.DS} if cut_ds else set())
        self.names = sorted(self.types)
        self.ttl = zone.spec.negative_ttl  # RFC 4035 2.3: the SOA minimum

    def proof(self, name: dns.name.Name, *, nxdomain: bool) -> list[dns.rrset.RRset]:
        """NSEC records proving that ``name`` has no such type (NODATA), or does not
        exist and no wildcard could have made it (NXDOMAIN; RFC 4035 3.1.3)."""
        if not nxdomain:
            # The name's own NSEC lists its types; an empty non-terminal has none,
            # and the NSEC before it, whose next name is below it, proves so.
            return [self._nsec(name if name in self.types else self._before(name))]
        encloser = name.parent()
        while not self._exists(encloser):
            encloser = encloser.parent()
        wildcard = dns.name.Name((b"*", *encloser.labels))
        owners = dict.fromkeys([self._before(name), self._before(wildcard)])
        return [self._nsec(owner) for owner in owners]

    def _exists(self, name: dns.name.Name) -> bool:
        return any(owner.is_subdomain(name) for owner in self.names)

    def _before(self, name: dns.name.Name) -> dns.name.Name:
        """The last name in the chain that sorts before ``name`` (the apex sorts first)."""
        earlier = [owner for owner in self.names if owner < name]
        return earlier[-1] if earlier else self.names[-1]

    def _nsec(self, owner: dns.name.Name) -> dns.rrset.RRset:
        index = self.names.index(owner)
        following = self.names[(index + 1) % len(self.names)]
        types = self.types[owner] | {dns.rdatatype.NSEC, dns.rdatatype.RRSIG}
        text = " ".join([following.to_text(), *sorted(t.name for t in types)])
        rrset = dns.rrset.RRset(owner, dns.rdataclass.IN, dns.rdatatype.NSEC)
        rrset.add(dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.NSEC, text), self.ttl)
        return rrset
