"""The ``fakemx`` command: a thin argparse layer over FakeMX and the catalog.

``main(argv)`` returns the exit code, so tests call it in-process. Errors a
user can fix print one line on stderr and exit 2; there is never a traceback.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from fakemx.api.server import MAX_PORT
from fakemx.cli.offline import _ca, _check, _explain, _export, _journal, _list, _schema
from fakemx.cli.serving import LAB_DOMAIN, _dns, _lab, _serve
from fakemx.errors import FakeMXError

__all__ = ["LAB_DOMAIN", "main"]

DEFAULT_PORT = 2525


DEFAULT_LAB_BASE_PORT = 2600


DEFAULT_DNS_PORT = 5300


DEFAULT_STATE_DIR = ".fakemx"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else 2
    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except FakeMXError as exc:
        print(f"fakemx: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `fakemx list | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # a bug: still one line, never a traceback
        print(f"fakemx: internal error: {type(exc).__name__}: {exc} (please report it)",
              file=sys.stderr)
        return 70


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error as one line: the option, the problem, the fix."""

    def error(self, message: str) -> NoReturn:
        hint = "" if message.endswith(")") else f" (see `{self.prog} --help`)"
        self.exit(2, f"{self.prog}: {message}{hint}\n")


def _port(text: str) -> int:
    """A TCP/UDP port for argparse: 0..65535 (0 = any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port number (use 0..65535; 0 = any free port)") from None
    if not 0 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range (use 0..65535; 0 = any free port)")
    return value


def _lab_has_no_port(text: str) -> int:
    """``fakemx lab --port``: a common slip; the lab takes a base port."""
    raise argparse.ArgumentTypeError(
        f"the lab serves one port per profile (use --base-port {text}: the healthy sink there,"
        f" the other profiles on the ports after it)")


def _time_scale(text: str) -> float:
    """A duration multiplier for argparse: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a finite number above 0 (e.g. 0.01 runs 300 s as 3 s; 1 = real"
            f" time)")
    return value


def _hostname(text: str) -> str:
    """A name for the greeting and the certificate: one word, no control characters."""
    if not text or any(char.isspace() or not char.isprintable() for char in text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a host name (use one word such as mx.example.test; it goes"
            f" into the 220 greeting)")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fakemx",
        description="A fake destination mail server that fails on purpose.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve one profile (default: the healthy sink)")
    serve.add_argument("profile", nargs="?", default=None, help="catalog name or profile file")
    _server_options(serve, port=True)
    serve.add_argument("--dns-port", type=_port, default=0,
                       help="where a profile's [dns] zone is served (default 0: any free port)")
    serve.add_argument("--dns-host", default=None, metavar="ADDRESS",
                       help="where a profile's [dns] zone is served (default: --host if it is a"
                            " loopback address, else loopback: a public DNS server is a"
                            " reflector)")
    serve.set_defaults(run=_serve)

    dns = sub.add_parser("dns", help="serve only a profile's [dns] zone (UDP and TCP)")
    dns.add_argument("profile", help="catalog name or profile file with a [dns] section")
    dns.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dns.add_argument("--port", type=_port, default=DEFAULT_DNS_PORT,
                     help=f"port (default {DEFAULT_DNS_PORT}; 0 = any free port; 53 needs root)")
    dns.add_argument("--fakemx-address", default=None, metavar="IP",
                     help="what {fakemx} in A/AAAA records stands for (default: --host)")
    dns.add_argument("--time-scale", type=_time_scale, default=1.0,
                     help="multiply every duration in the zone, TTLs too (0.01: 300 s -> 3 s)")
    dns.set_defaults(run=_dns)

    lab = sub.add_parser("lab", help="serve every catalog profile, each on its own port")
    _server_options(lab, port=False)
    lab.add_argument("--base-port", type=_port, default=DEFAULT_LAB_BASE_PORT,
                     help=f"first port, for the healthy sink; the other profiles take the"
                          f" next ports (default {DEFAULT_LAB_BASE_PORT}; 0 = any free ports)")
    lab.add_argument("--port", type=_lab_has_no_port, help=argparse.SUPPRESS)
    lab.add_argument("--postfix-transport", type=Path, default=None, metavar="FILE",
                     help="also write a Postfix transport map: <profile>.lab.fakemx.test ->"
                          " [ADVERTISE]:PORT, for a relay in front of the lab")
    lab.add_argument("--export-ca", type=Path, default=None, metavar="FILE",
                     help="also write the root certificate relays must trust to FILE (PEM),"
                          " e.g. on a volume a relay mounts without the CA's key")
    lab.add_argument("--advertise", default=None, metavar="HOST",
                     help="the name relays use to reach the lab (default: --host)")
    lab.set_defaults(run=_lab)

    journal = sub.add_parser("journal", help="the newest sessions from a state dir")
    journal.add_argument("--state-dir", type=Path, default=Path(DEFAULT_STATE_DIR))
    journal.add_argument("--server", default=None, help="only this server (profile name in a lab)")
    journal.add_argument("--limit", type=int, default=10, help="how many sessions (default 10)")
    journal.add_argument("--events", action="store_true", help="each command and reply too")
    journal.set_defaults(run=_journal)

    listing = sub.add_parser("list", help="list the catalog")
    listing.add_argument("--json", action="store_true", help="a JSON array of objects")
    listing.add_argument("--markdown", action="store_true", help="the README's table")
    listing.set_defaults(run=_list)

    explain = sub.add_parser("explain", help="what a code or profile means: causes, fixes")
    explain.add_argument("query", help="a code such as 4.4.316, or a profile name")
    explain.set_defaults(run=_explain)

    check = sub.add_parser("check", help="validate profile files")
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(run=_check)

    schema = sub.add_parser("schema", help="print the JSON Schema of profile files")
    schema.set_defaults(run=_schema)

    export = sub.add_parser("export", help="write stored messages as .eml files or a Maildir")
    export.add_argument("--state-dir", type=Path, default=Path(DEFAULT_STATE_DIR))
    export.add_argument("--out", type=Path, required=True, help="target directory")
    export.add_argument("--format", choices=("eml", "maildir"), default="eml")
    export.set_defaults(run=_export)

    ca = sub.add_parser("ca", help="print or write the root certificate relays must trust")
    ca.add_argument("--state-dir", type=Path, default=Path(DEFAULT_STATE_DIR),
                    help=f"where the CA lives (default ./{DEFAULT_STATE_DIR}; made if missing)")
    ca.add_argument("--out", type=Path, default=None, help="write it to this file (PEM)")
    ca.set_defaults(run=_ca)
    return parser


def _server_options(parser: argparse.ArgumentParser, *, port: bool) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    if port:
        parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                            help=f"port (default {DEFAULT_PORT}; 0 = any free port)")
    parser.add_argument("--state-dir", type=Path, default=Path(DEFAULT_STATE_DIR),
                        help=f"messages, journal and CA (default ./{DEFAULT_STATE_DIR})")
    parser.add_argument("--seed", type=int, default=None, help="seed for probability rules")
    parser.add_argument("--time-scale", type=_time_scale, default=1.0,
                        help="multiply every duration in the profile (0.01: 300 s -> 3 s)")
    parser.add_argument("--hostname", type=_hostname, default="mx.fakemx.test",
                        help="name in the greeting and the certificate")
    parser.add_argument("--api", default=None, metavar="[HOST:]PORT",
                        help="also serve the HTTP control API and the web page (HOST default"
                             " 127.0.0.1; PORT 0 = any free port)")
    token = parser.add_mutually_exclusive_group()
    token.add_argument("--api-token", default=None, metavar="TOKEN",
                       help="every API request must carry `Authorization: Bearer TOKEN`;"
                            " required for a non-loopback HOST. Visible in `ps`: prefer"
                            " --api-token-file or $FAKEMX_API_TOKEN (used when neither"
                            " option is given)")
    token.add_argument("--api-token-file", type=Path, default=None, metavar="FILE",
                       help="read the API token from FILE (its one line; a trailing newline"
                            " is dropped)")


