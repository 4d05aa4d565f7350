"""The ``fakemx`` command: a thin argparse layer over FakeMX and the catalog.

``main(argv)`` returns the exit code, so tests call it in-process. Errors a
user can fix print one line on stderr and exit 2; there is never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import NoReturn

from fakemx import explain as reference
from fakemx.api.server import (
    MAX_PORT,
    ApiAddress,
    ApiServer,
    check_exposure,
    parse_address,
    token_from,
)
from fakemx.clientbytes import shown
from fakemx.errors import FakeMXError, ListenError
from fakemx.model import Profile
from fakemx.profiles import catalog, load_file, load_profile
from fakemx.server import FakeMX
from fakemx.store import Store, export_messages
from fakemx.tls import certs

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


# region commands ---------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    api = _api_settings(args)  # refuse an exposed API before anything starts
    profile = load_profile(args.profile)
    _usable_state_dir(args.state_dir)
    server = FakeMX(profile, host=args.host, port=args.port, state_dir=args.state_dir,
                    seed=args.seed, hostname=args.hostname, time_scale=args.time_scale,
                    dns_host=args.dns_host, dns_port=args.dns_port)

    async def run() -> None:
        stop = _stop_on_signals()
        # Relays are told to trust STATE_DIR/ca.pem: it exists whatever the profile's
        # certificate (self-signed and untrusted ones do not come from this CA).
        certs.load_or_create_ca(args.state_dir)
        try:
            await server.start()
        except ListenError as exc:
            if "for DNS" not in str(exc):  # the SMTP port: --port is the right name
                raise
            raise ListenError(_for_option(str(exc), "--dns-port")) from None
        try:
            print(f"fakemx: serving {profile.name} on {server.address} "
                  f"(listener {server.listener_state}, state dir {args.state_dir})", flush=True)
            if server.dns is not None:
                print(f"fakemx: DNS for {profile.name} on {server.dns.address}", flush=True)
            async with _api(api, [server]):
                await stop.wait()
        finally:
            await server.stop()

    asyncio.run(run())
    return 0


def _dns(args: argparse.Namespace) -> int:
    from fakemx.dns.server import DnsServer

    profile = load_profile(args.profile)
    server = DnsServer(profile, host=args.host, port=args.port, time_scale=args.time_scale,
                       fakemx_address=args.fakemx_address or args.host)

    async def run() -> None:
        stop = _stop_on_signals()
        async with server:
            tcp = "udp+tcp" if server.spec.tcp == "open" else "udp; tcp refused"
            print(f"fakemx: DNS for {profile.name} on {server.address} ({tcp})", flush=True)
            await stop.wait()

    asyncio.run(run())
    return 0


def _lab(args: argparse.Namespace) -> int:
    # The healthy sink first, on the base port: the positive control for students.
    profiles = sorted(catalog(), key=lambda p: p.name != "sink")
    api = _api_settings(args)
    last_port = args.base_port + len(profiles) - 1
    if args.base_port and last_port > MAX_PORT:
        raise FakeMXError(
            f"--base-port {args.base_port}: the lab needs {len(profiles)} ports, up to"
            f" {last_port}, above {MAX_PORT} (use --base-port {MAX_PORT - len(profiles) + 1}"
            f" or lower, or --base-port 0 for free ports)")
    _usable_state_dir(args.state_dir)

    async def run() -> None:
        stop = _stop_on_signals()
        store = Store(args.state_dir)
        certs.load_or_create_ca(args.state_dir)  # relays are told to trust STATE_DIR/ca.pem
        servers: list[tuple[Profile, FakeMX]] = []
        try:
            for index, profile in enumerate(profiles):
                port = args.base_port + index if args.base_port else 0
                server = FakeMX(profile, host=args.host, port=port, state_dir=args.state_dir,
                                seed=args.seed, hostname=args.hostname, store=store,
                                time_scale=args.time_scale,
                                name=profile.name)
                try:
                    await server.start()
                except ListenError as exc:  # the port came from --base-port, not --port
                    raise ListenError(f"{profile.name} (--base-port + {index}): "
                                      f"{_for_option(str(exc), '--base-port')}") from None
                servers.append((profile, server))
            if args.postfix_transport is not None:
                _write_postfix_transport(args.postfix_transport, servers,
                                         args.advertise or args.host)
            if args.export_ca is not None:
                _export_ca(args.state_dir, args.export_ca, "--export-ca")
            _print_lab_table(servers)
            async with _api(api, [server for _, server in servers]):
                await stop.wait()
        finally:
            for _, server in servers:
                await server.stop()
            store.close()

    asyncio.run(run())
    return 0


def _print_lab_table(servers: list[tuple[Profile, FakeMX]]) -> None:
    rows = [("ADDRESS", "PROFILE", "CODE", "WHAT THE RELAY SEES")]
    for profile, server in servers:
        about = profile.about
        rows.append((server.address, profile.name, about.code if about else "",
                     about.relay_sees if about else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])), row[3])
    for profile, server in servers:
        if server.dns is not None:  # a 4.4.312 profile: point the relay's resolver here
            print(f"DNS for {profile.name}: {server.dns.address} (udp+tcp)")
    print(f"fakemx: lab ready, {len(servers)} profiles on {servers[0][1].host}", flush=True)


LAB_DOMAIN = "lab.fakemx.test"


def _write_postfix_transport(path: Path, servers: list[tuple[Profile, FakeMX]],
                             host: str) -> None:
    """``<profile>.lab.fakemx.test smtp:[host]:port`` for each profile, atomically."""
    lines = [f"# written by fakemx lab: send to <anyone>@<profile>.{LAB_DOMAIN}"]
    lines += [f"{profile.name}.{LAB_DOMAIN} smtp:[{host}]:{server.port}"
              for profile, server in servers]
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(path)
    except OSError as exc:
        raise FakeMXError(f"--postfix-transport {path}: cannot write it: {exc.strerror}"
                          " (choose a file in a directory fakemx can write)") from None


def _journal(args: argparse.Namespace) -> int:
    if not (args.state_dir / "fakemx.sqlite3").is_file():
        raise FakeMXError(f"{args.state_dir}: no fakemx store here (pass --state-dir)")
    store = Store(args.state_dir)
    try:
        rows = store.session_rows(server=args.server, limit=args.limit)
    finally:
        store.close()
    for row in reversed(rows):
        started = time.strftime("%H:%M:%S", time.localtime(row["started"]))
        print(f"#{row['id']} {started} {row['server']} {row['client_ip']} "
              f"attempt {row['attempt']}: {row['ended_by']}")
        if args.events:
            for event in row["events"]:
                mark = {"client": "C:", "server": "S:"}.get(event["kind"], "  ")
                # What a client sent, escaped: no terminal escape, no unprintable byte.
                print(f"    {mark} {shown(event['text'])}")
    return 0


def _list(args: argparse.Namespace) -> int:
    if args.markdown:
        print(reference.markdown_table())
        return 0
    entries = [reference.entry(p) for p in catalog()]
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    width = max(len(e["name"]) for e in entries)
    for item in entries:
        print(f"{item['code']:<8} {item['name']:<{width}}  {item['title']}")
    return 0


def _explain(args: argparse.Namespace) -> int:
    print(reference.explain(args.query))
    return 0


def _check(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            profile = load_file(path)
        except FakeMXError as exc:
            print(exc, file=sys.stderr)
            failed += 1
        else:
            print(f"{path}: ok ({len(profile.rules)} rules, listener {profile.listener})")
    return 2 if failed else 0


def _schema(args: argparse.Namespace) -> int:
    print(json.dumps(Profile.model_json_schema(), indent=2))
    return 0


def _export(args: argparse.Namespace) -> int:
    if not (args.state_dir / "fakemx.sqlite3").is_file():
        raise FakeMXError(f"{args.state_dir}: no fakemx store here (pass --state-dir)")
    store = Store(args.state_dir)
    try:
        count = export_messages(store, args.out, args.format)
    except OSError as exc:
        raise FakeMXError(f"--out {args.out}: cannot write there: {exc.strerror} (choose a"
                          " directory fakemx can create or write)") from None
    finally:
        store.close()
    print(f"fakemx: wrote {count} messages to {args.out} ({args.format})")
    return 0


def _ca(args: argparse.Namespace) -> int:
    _usable_state_dir(args.state_dir)
    pem = _export_ca(args.state_dir, args.out, "--out")
    if args.out is None:
        sys.stdout.write(pem.decode("ascii"))
    else:
        print(f"fakemx: wrote the CA certificate to {args.out} (state dir {args.state_dir})")
    return 0


def _export_ca(state_dir: Path, out: Path | None, option: str) -> bytes:
    from fakemx.tls.certs import export_ca  # trustme and cryptography only when asked for

    try:
        return export_ca(state_dir, out)
    except OSError as exc:
        raise FakeMXError(f"{option} {out}: cannot write it: {exc.strerror}"
                          " (choose a file in a directory fakemx can write)") from None


def _usable_state_dir(path: Path) -> Path:
    """``--state-dir``, made owner-only (0700) when missing; one line if it cannot be used."""
    fix = "pass --state-dir a directory fakemx can write, e.g. --state-dir ./.fakemx"
    if path.exists() and not path.is_dir():
        raise FakeMXError(f"--state-dir {path}: not a directory ({fix})")
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise FakeMXError(f"--state-dir {path}: cannot create it: {exc.strerror} ({fix})") \
            from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise FakeMXError(f"--state-dir {path}: not writable ({fix})")
    return path


def _for_option(message: str, option: str) -> str:
    """A listener's error, its fix naming ``option`` where it says --port."""
    if option == "--base-port":  # one port per profile from there
        message = message.replace("--port 0 for a free one", "--base-port 0 for free ports")
    return message.replace("--port", option)


# endregion
# region HTTP API ----------------------------------------------------------------


def _api_settings(args: argparse.Namespace) -> tuple[ApiAddress, str | None] | None:
    """``--api`` parsed and checked (a non-loopback bind needs a token), or None."""
    if args.api is None:
        return None
    address = parse_address(args.api)
    token = token_from(args.api_token, args.api_token_file)
    check_exposure(address, token)
    return address, token


@contextlib.asynccontextmanager
async def _api(
    settings: tuple[ApiAddress, str | None] | None, servers: list[FakeMX]
) -> AsyncIterator[None]:
    """Serve the API over ``servers`` on this loop while the block runs (if asked for)."""
    if settings is None:
        yield
        return
    address, token = settings
    async with ApiServer(servers, host=address.host, port=address.port, token=token) as api:
        print(f"fakemx: API on {api.url}", flush=True)
        yield


# endregion


def _stop_on_signals() -> asyncio.Event:
    """An event SIGINT and SIGTERM set: both stop fakemx cleanly.

    Installed before the ready line is printed, so that ready means ready: a
    SIGTERM sent the moment a supervisor reads that line stops fakemx cleanly
    (before, 4 of 8 such runs died with the default handler).
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    return stop
