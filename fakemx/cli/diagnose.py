"""``fakemx diagnose``: the options, read into ``fakemx.diagnose.Options``; the report printed.

Exit status: 0 when the probe met no failure, 1 when the verdict names one, 2
for a usage error (as every fakemx command).
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
from pathlib import Path

from fakemx.config import _positive
from fakemx.diagnose.model import Options, Target, Timeouts, TlsPolicy, is_address
from fakemx.errors import FakeMXError

# The probe's own modules (dnspython's DNSSEC, ssl, the catalog) are imported when it
# runs: every fakemx command builds this parser, and `fakemx list` must start fast.

_DEFAULTS = Timeouts()
_ADDRESS = re.compile(r"^[^\s<>@]+@[^\s<>@]+$")


HELP = "probe a destination as a relay would and name the error it causes"


def configure(parser: argparse.ArgumentParser) -> None:
    """``fakemx diagnose``'s options."""
    parser.description = ("Resolve, connect, greet, EHLO, STARTTLS and check the certificate (MAIL"
                          " FROM:<> and RCPT TO only with --rcpt), then QUIT: never DATA, never a"
                          " message; a domain's MTA-STS policy when it has one, DANE with --tls"
                          " dane. One line per step, then the verdict from the catalog.")
    parser.add_argument("target", metavar="DOMAIN|HOST[:PORT]",
                        help="a mail domain (its MX is looked up) or a host; port 25 unless"
                             " given ([::1]:2525 for IPv6)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--mx-lookup", dest="mx_lookup", action="store_true", default=None,
                      help="look up the MX of the name (the default for a name)")
    mode.add_argument("--host", dest="mx_lookup", action="store_false",
                      help="connect to the name itself (the default for an address)")
    parser.add_argument("--tls", choices=[p.value for p in TlsPolicy], default="verify",
                        help="verify (default): STARTTLS and a certificate that verifies;"
                             " require: STARTTLS, certificate reported only; dane: TLSA records"
                             " in DNSSEC-signed DNS (RFC 7672); none: no STARTTLS")
    parser.add_argument("--trust-anchor", type=Path, default=None, metavar="FILE",
                        help="--tls dane: validate DNSSEC against this DS (e.g. fakemx's"
                             " STATE_DIR/dnssec-anchor.ds); without it the resolver's AD bit"
                             " decides")
    parser.add_argument("--mta-sts-port", type=int, default=443, metavar="PORT",
                        help="the MTA-STS policy host's HTTPS port (default 443, as relays)")
    parser.add_argument("--ca", type=Path, default=None, metavar="FILE",
                        help="trust the CAs in this PEM file instead of the system's"
                             " (e.g. `fakemx ca --out fakemx-ca.pem`)")
    parser.add_argument("--resolver", default=None, metavar="IP[:PORT]",
                        help="ask this DNS server (default: the system's first)")
    parser.add_argument("--rcpt", default=None, metavar="ADDR",
                        help="also probe MAIL FROM:<> and RCPT TO:<ADDR> (no message is sent)")
    parser.add_argument("--helo", default=None, metavar="NAME",
                        help="the EHLO name (default: this machine's name)")
    parser.add_argument("--timeout", type=_seconds, default=_DEFAULTS.reply_seconds,
                        metavar="SECONDS", help="connect, and each reply and handshake"
                        f" (default {_DEFAULTS.reply_seconds:g})")
    parser.add_argument("--dns-timeout", type=_seconds, default=_DEFAULTS.dns_seconds,
                        metavar="SECONDS",
                        help=f"each DNS query (default {_DEFAULTS.dns_seconds:g})")
    parser.add_argument("--slow", type=_seconds, default=_DEFAULTS.slow_seconds,
                        metavar="SECONDS", help="report answers slower than this"
                        f" (default {_DEFAULTS.slow_seconds:g})")
    parser.add_argument("--json", action="store_true", help="the report as JSON, for tools")
    parser.set_defaults(run=run)


def _seconds(text: str) -> float:
    return _positive(text, "a number of seconds above 0, e.g. 10")


def run(args: argparse.Namespace) -> int:
    from fakemx.diagnose import diagnose, render

    report = diagnose(options(args))
    print(render.as_json(report) if args.json else render.text(report))
    return 0 if report.verdict.healthy else 1


def options(args: argparse.Namespace) -> Options:
    """The command line as ``Options``; a one-line FakeMXError for what cannot work."""
    name, port = target(args.target)
    if args.trust_anchor is not None and not args.trust_anchor.is_file():
        raise FakeMXError(f"--trust-anchor {args.trust_anchor}: no such file (give a DS file,"
                          " e.g. STATE_DIR/dnssec-anchor.ds from `fakemx dns PROFILE"
                          " --trust-anchor`)")
    if args.trust_anchor is not None and TlsPolicy(args.tls) is not TlsPolicy.DANE:
        raise FakeMXError("--trust-anchor: only --tls dane validates DNSSEC (add --tls dane)")
    if args.trust_anchor is not None:
        from fakemx.diagnose.dnssec import read_anchor

        read_anchor(args.trust_anchor)  # a file without a DS is one line now, not mid-probe
    if args.ca is not None and not args.ca.is_file():
        raise FakeMXError(f"--ca {args.ca}: no such file (give a PEM file of CA certificates,"
                          " e.g. from `fakemx ca --out FILE`)")
    if args.rcpt is not None and not _ADDRESS.match(args.rcpt):
        raise FakeMXError(f"--rcpt {args.rcpt!r}: not a mail address (use local@domain,"
                          " without <> or spaces)")
    # gethostname, not getfqdn: a reverse lookup could wait on DNS before any timeout applies
    helo = args.helo or socket.gethostname() or "localhost"
    if any(char.isspace() or not char.isprintable() for char in helo):
        raise FakeMXError(f"--helo {helo!r}: not a host name (use one word such as"
                          " relay.example.net)")
    mx_lookup = args.mx_lookup if args.mx_lookup is not None else not is_address(name)
    if mx_lookup and is_address(name):
        raise FakeMXError(f"--mx-lookup {name}: an address has no MX (leave out --mx-lookup,"
                          " or give a domain)")
    return Options(
        target=Target(name, port, mx_lookup),
        tls=TlsPolicy(args.tls),
        ca_file=args.ca,
        resolver=resolver(args.resolver) if args.resolver else None,
        rcpt=args.rcpt,
        helo=helo,
        timeouts=Timeouts(dns_seconds=args.dns_timeout, connect_seconds=args.timeout,
                          reply_seconds=args.timeout, slow_seconds=args.slow),
        trust_anchor=args.trust_anchor,
        mta_sts_port=args.mta_sts_port,
    )


def _split(text: str, what: str, default_port: int) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    found = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?", text)
    if found:
        host, port_text = found[1], found[2]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, None
    if not host or any(char.isspace() or not char.isprintable() for char in host):
        raise FakeMXError(f"{what} {text!r}: not a host name or address (e.g. example.com,"
                          " 192.0.2.1:2525, [::1]:2525)")
    if port_text is None:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise FakeMXError(f"{what} {text!r}: {port_text!r} is not a port (use 1..65535)")
    return host, int(port_text)


def target(text: str) -> tuple[str, int]:
    return _split(text, "target", 25)


def resolver(text: str) -> tuple[str, int]:
    host, port = _split(text, "--resolver", 53)
    if not is_address(host):
        raise FakeMXError(f"--resolver {text!r}: give the DNS server's IP address, e.g."
                          " 127.0.0.1:5300")
    return host, port


def explain_log(source: str) -> int:
    """``fakemx explain --log FILE|-``: 0 when a failure was named, 1 when none was found."""
    from fakemx import logread

    if source == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            lines = Path(source).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError as exc:
            raise FakeMXError(f"--log {source}: cannot read: {exc.strerror or exc} (give a log"
                              " file, or - for stdin)") from None
    explained = list(logread.explain_lines(lines))
    print(logread.render(explained, lines))
    return 0 if explained else 1
