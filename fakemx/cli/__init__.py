"""The ``fakemx`` command: a thin argparse layer over FakeMX and the catalog.

``main(argv)`` returns the exit code, so tests call it in-process. Errors a
user can fix print one line on stderr and exit 2; there is never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from fakemx import config
from fakemx.cli import diagnose
from fakemx.cli.offline import (
    _ca,
    _check,
    _explain,
    _export,
    _journal,
    _list,
    _messages,
    _schema,
    time_bound,
)
from fakemx.config import DEFAULT_HOSTNAME, port, time_scale
from fakemx.errors import FakeMXError

__all__ = ["LAB_DOMAIN", "main"]


def _serving(name: str,
             module: str = "fakemx.cli.serving") -> Callable[[argparse.Namespace], int]:
    """A command of fakemx.cli.serving (or lab), imported when it runs: the server's
    modules (aiosmtpd, cryptography, the API) cost most of a second to import, which
    `fakemx list` and `explain` must not pay."""

    def run(args: argparse.Namespace) -> int:
        # Importing them makes objects by the hundred thousand, almost all kept for
        # good: the cyclic GC's passes over them meanwhile (some 0.02 s) find nothing.
        gc.disable()
        try:
            command: Callable[[argparse.Namespace], int] = getattr(
                importlib.import_module(module), name)
        finally:
            gc.enable()
        return command(args)

    return run


_serve, _dns = _serving("_serve"), _serving("_dns")
_lab = _serving("_lab", "fakemx.cli.lab")


def __getattr__(name: str) -> Any:
    if name == "LAB_DOMAIN":  # kept importable from here, without importing the server
        return importlib.import_module("fakemx.classroom").LAB_DOMAIN
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

DEFAULT_DNS_PORT = 5300


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"] and not {"-h", "--help"} & set(argv[1:]):
        try:  # `fakemx run OPTIONS` is `fakemx serve|lab OPTIONS`, as FAKEMX_MODE says
            argv = [config.mode(), *argv[1:]]
        except FakeMXError as exc:
            print(f"fakemx: {exc}", file=sys.stderr)
            return 2
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed)
        return exc.code if isinstance(exc.code, int) else 2
    command: Callable[[argparse.Namespace], int] = args.run
    args.argv = argv  # a `--workers N` parent starts its workers with the same arguments
    try:
        config.resolve(args)  # FAKEMX_* variables for the options not given as flags
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


def _lab_has_no_port(text: str) -> int:
    """``fakemx lab --port``: a common slip; the lab takes a base port."""
    raise argparse.ArgumentTypeError(
        f"the lab serves one port per profile (use --base-port {text}: the healthy sink there,"
        f" the other profiles on the ports after it)")


def version() -> str:
    """The installed distribution's version (what pip and ``--version`` report)."""
    from importlib import metadata

    try:
        return metadata.version("fakemx")
    except metadata.PackageNotFoundError:  # run from a source tree without installing
        from fakemx import __version__

        return __version__


class _Version(argparse.Action):
    """``--version``, looked up only when asked (importlib.metadata costs every command
    ~25 ms, a tenth of `fakemx list`)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        print(f"fakemx {version()}")  # on stdout, as argparse's own version action does
        parser.exit(0)


def _run(args: argparse.Namespace) -> int:
    """``fakemx run``: ``serve`` or ``lab`` as FAKEMX_MODE says; the container's command."""
    return main([config.mode(), *args.rest])


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fakemx",
        description="A fake destination mail server that fails on purpose.",
    )
    parser.add_argument("--version", action=_Version, nargs=0,
                        help="show fakemx's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="serve one profile (default: the healthy sink)")
    config.add_options(serve, config.SERVE)
    serve.add_argument("--lmtp", dest="protocol", action="store_const", const="lmtp",
                       help="speak LMTP: the same as --protocol lmtp")
    serve.set_defaults(run=_serve)

    run = sub.add_parser("run", help="serve or lab, as $FAKEMX_MODE says (default serve):"
                                     " for containers, configured by FAKEMX_* variables")
    run.add_argument("rest", nargs=argparse.REMAINDER, metavar="OPTION",
                     help="more options for serve or lab")
    run.set_defaults(run=_run)

    dns = sub.add_parser("dns", help="serve only a profile's [dns] zone (UDP and TCP)")
    dns.add_argument("profile", help="catalog name or profile file with a [dns] section")
    dns.add_argument("--host", default="127.0.0.1", help="address to listen on")
    dns.add_argument("--port", type=port, default=DEFAULT_DNS_PORT,
                     help=f"port (default {DEFAULT_DNS_PORT}; 0 = any free port; 53 needs root)")
    dns.add_argument("--fakemx-address", default=None, metavar="IP",
                     help="what {fakemx} in A/AAAA records stands for (default: --host)")
    dns.add_argument("--time-scale", type=time_scale, default=1.0,
                     help="multiply every duration in the zone, TTLs too (0.01: 300 s -> 3 s)")
    config.add_options(dns, config.TOOLS)  # --state-dir: DNSSEC keys, the certificate
    dns.add_argument("--hostname", default=DEFAULT_HOSTNAME,
                     help="the certificate's name, for TLSA records that describe it"
                          f" (default {DEFAULT_HOSTNAME}, as fakemx serve)")
    dns.add_argument("--trust-anchor", action="store_true",
                     help="print the DS a validating resolver must trust for a signed zone"
                          " ([dns.dnssec]), and exit")
    dns.set_defaults(run=_dns)

    lab = sub.add_parser("lab", help="serve every catalog profile, each on its own port")
    config.add_options(lab, config.LAB)
    lab.add_argument("--student", action="store_true",
                     help="student mode: cases named case-001 ..., the scenario hidden on the"
                          " page, an exercise sheet and an answer key written (--sheets)")
    lab.add_argument("--port", type=_lab_has_no_port, help=argparse.SUPPRESS)
    lab.set_defaults(run=_lab)

    journal = sub.add_parser("journal", help="the newest sessions from a state dir")
    config.add_options(journal, config.TOOLS)
    journal.add_argument("--server", default=None, help="only this server (profile name in a lab)")
    journal.add_argument("--limit", type=int, default=10, help="how many sessions (default 10)")
    journal.add_argument("--events", action="store_true", help="each command and reply too")
    journal.add_argument("--follow", "-f", action="store_true",
                         help="then each session as it ends, until Ctrl-C")
    journal.add_argument("--json", action="store_true",
                         help="one JSON object per session and line, as --log-format json")
    journal.set_defaults(run=_journal)

    messages = sub.add_parser("messages", help="find (and delete) stored messages")
    config.add_options(messages, config.TOOLS)
    messages.add_argument("--from", dest="sender", default=None, metavar="TEXT",
                          help="the envelope sender (MAIL FROM) contains TEXT")
    messages.add_argument("--to", dest="recipient", default=None, metavar="TEXT",
                          help="an envelope recipient (RCPT TO) contains TEXT")
    messages.add_argument("--subject", default=None, metavar="TEXT",
                          help="the Subject contains TEXT (any case)")
    messages.add_argument("--since", type=time_bound, default=None, metavar="WHEN",
                          help="received at or after WHEN: 2026-11-30, 2026-11-30T16:00,"
                               " or an age such as 30m, 2h, 7d")
    messages.add_argument("--until", type=time_bound, default=None, metavar="WHEN",
                          help="received before WHEN (same forms as --since)")
    messages.add_argument("--server", default=None, help="only this server")
    messages.add_argument("--json", action="store_true", help="one JSON object per message")
    messages.add_argument("--delete", action="store_true",
                          help="delete the messages found (prints how many)")
    messages.set_defaults(run=_messages)

    listing = sub.add_parser("list", help="list the catalog")
    listing.add_argument("--json", action="store_true", help="a JSON array of objects")
    listing.add_argument("--markdown", action="store_true", help="the README's table")
    listing.add_argument("--relays", action="store_true",
                         help="what Postfix, Exim and smtplib report, as a Markdown table")
    listing.set_defaults(run=_list)

    explain = sub.add_parser("explain", help="what a code or profile means: causes, fixes")
    explain.add_argument("query", nargs="?", help="a code such as 4.4.316, or a profile name")
    explain.add_argument("--log", metavar="FILE|-", default=None,
                         help="name the code and fixes of each failure in a relay's log or a"
                              " bounce (Postfix, Exim, an Exchange NDR, nodemailer, smtplib);"
                              " - reads stdin")
    explain.set_defaults(run=_explain)

    diagnose.configure(sub.add_parser("diagnose", help=diagnose.HELP))

    check = sub.add_parser("check", help="validate profile files")
    check.add_argument("files", nargs="+", type=Path)
    check.set_defaults(run=_check)

    schema = sub.add_parser("schema", help="print the JSON Schema of profile files")
    schema.set_defaults(run=_schema)

    export = sub.add_parser("export", help="write stored messages as .eml files or a Maildir")
    config.add_options(export, config.TOOLS)
    export.add_argument("--out", type=Path, required=True, help="target directory")
    export.add_argument("--format", choices=("eml", "maildir"), default="eml")
    export.add_argument("--as-received", action="store_true",
                        help="without the Return-Path, X-Original-To, Delivered-To and"
                             " Received headers added on export")
    export.set_defaults(run=_export)

    ca = sub.add_parser("ca", help="print or write the root certificate relays must trust")
    config.add_options(ca, config.TOOLS)
    ca.add_argument("--out", type=Path, default=None, help="write it to this file (PEM)")
    ca.set_defaults(run=_ca)
    return parser
