"""The documented import path of the DNS server: ``from fakemx.dnsserver import DnsServer``.

The server lives in fakemx.dns.server; this name stays so code written against
the documented path keeps working.
"""

from fakemx.dns.server import DnsServer

__all__ = ["DnsServer"]
