"""Every ``serve`` and ``lab`` option in one table: its flag, its ``FAKEMX_*`` variable, its type.

A value comes from the flag, else from the variable, else from the default. The
variable goes through the flag's own type function, so ``FAKEMX_PORT=99999``
is the same one-line error as ``--port 99999``, naming the variable (exit 2).
An empty variable counts as unset (``FAKEMX_API=`` in a compose file).

``docs/run-anywhere.md`` has the table for people; a test keeps the two in step.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from fakemx.errors import FakeMXError

MAX_PORT = 65535
DEFAULT_PORT = 2525
DEFAULT_LAB_BASE_PORT = 2600
DEFAULT_STATE_DIR = ".fakemx"
DEFAULT_HOSTNAME = "mx.fakemx.test"
LOG_FORMATS = ("human", "json")
MODE_ENV = "FAKEMX_MODE"  # `fakemx run`: serve (default) or lab
MODES = ("serve", "lab")
MAX_WORKERS = 256

SERVE, LAB, TOOLS = "serve", "lab", "tools"  # tools: journal, messages, export, ca
BOTH = (SERVE, LAB)


# region type functions: for flags and variables alike -------------------------


def port(text: str) -> int:
    """A TCP/UDP port: 0..65535 (0 = any free port)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a port number (use 0..65535; 0 = any free port)") from None
    if not 0 <= value <= MAX_PORT:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range (use 0..65535; 0 = any free port)")
    return value


def _positive(text: str, what: str) -> float:
    """A finite number above 0, or the one-line error that says what to give."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
    return value


def time_scale(text: str) -> float:
    """A duration multiplier: a finite number above 0."""
    return _positive(text, "a finite number above 0 (e.g. 0.01 runs 300 s as 3 s; 1 = real time)")


def hostname(text: str) -> str:
    """A name for the greeting and the certificate: one word, no control characters."""
    if not text or any(char.isspace() or not char.isprintable() for char in text):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a host name (use one word such as mx.example.test; it goes"
            f" into the 220 greeting)")
    return text


def protocol(text: str) -> str:
    if text not in ("smtp", "lmtp"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a protocol (use smtp, or lmtp for a delivery agent's LMTP)")
    return text


def seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (e.g. 42)") from None


def api_address(text: str) -> str:
    """``[HOST:]PORT`` for the API, checked here and parsed again where it is used."""
    from fakemx.api.server import parse_address  # light: no FastAPI, no uvicorn

    try:
        parse_address(text)
    except FakeMXError as exc:  # "--api 'x': problem": keep the problem
        raise argparse.ArgumentTypeError(str(exc).split(": ", 1)[-1]) from None
    return text


def log_format(text: str) -> str:
    if text not in LOG_FORMATS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a log format (use human or json: one JSON object per line)")
    return text


def count(text: str) -> int:
    """A message count: a whole number from 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 1 (e.g. 1000)")
    return value


def days(text: str) -> float:
    """An age in days: a finite number above 0 (0.5 = 12 hours)."""
    return _positive(text, "a number of days above 0 (e.g. 7, or 0.5 for 12 hours)")


def workers(text: str) -> int:
    """How many worker processes: a whole number from 1, or ``auto`` (one per core)."""
    if text == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of workers (use 1..{MAX_WORKERS}, or auto: one per core)")
    return value


def text(value: str) -> str:
    if not value:
        raise argparse.ArgumentTypeError("empty (give a value)")
    return value


# endregion


@dataclass(frozen=True)
class Option:
    """One option of ``serve``/``lab``: ``--flag`` (or a positional), ``FAKEMX_*`` variable."""

    flag: str  # "--port", or "profile" for the positional
    env: str
    parse: Callable[[str], object]
    default: object
    help: str
    commands: tuple[str, ...] = BOTH
    metavar: str | None = None
    group: str | None = None  # flags of one group exclude each other, and so do their variables

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


OPTIONS: tuple[Option, ...] = (
    Option("profile", "FAKEMX_PROFILE", text, None,
           "catalog name or profile file (default: sink, the healthy server)", (SERVE,)),
    Option("--host", "FAKEMX_HOST", text, "127.0.0.1", "address to listen on"),
    Option("--port", "FAKEMX_PORT", port, DEFAULT_PORT,
           f"port (default {DEFAULT_PORT}; 0 = any free port)", (SERVE,)),
    Option("--base-port", "FAKEMX_BASE_PORT", port, DEFAULT_LAB_BASE_PORT,
           f"first port, for the healthy sink; the other profiles take the next ports"
           f" (default {DEFAULT_LAB_BASE_PORT}; 0 = any free ports)", (LAB,)),
    Option("--state-dir", "FAKEMX_STATE_DIR", Path, Path(DEFAULT_STATE_DIR),
           f"messages, journal and CA (default ./{DEFAULT_STATE_DIR})", (SERVE, LAB, TOOLS)),
    Option("--seed", "FAKEMX_SEED", seed, None, "seed for probability rules"),
    Option("--protocol", "FAKEMX_PROTOCOL", protocol, None,
           "smtp or lmtp (RFC 2033: LHLO, a reply per recipient); default: the profile's"
           " protocol, smtp unless it says otherwise; --lmtp is --protocol lmtp", (SERVE,),
           metavar="smtp|lmtp"),
    Option("--time-scale", "FAKEMX_TIME_SCALE", time_scale, 1.0,
           "multiply every duration in the profile (0.01: 300 s -> 3 s)"),
    Option("--hostname", "FAKEMX_HOSTNAME", hostname, DEFAULT_HOSTNAME,
           "name in the greeting and the certificate"),
    Option("--api", "FAKEMX_API", api_address, None,
           "also serve the HTTP control API and the web page (HOST default 127.0.0.1;"
           " PORT 0 = any free port)", metavar="[HOST:]PORT"),
    Option("--api-token", "FAKEMX_API_TOKEN", text, None,
           "every API request must carry `Authorization: Bearer TOKEN`; required for a"
           " non-loopback HOST. Visible in `ps`: prefer --api-token-file or $FAKEMX_API_TOKEN"
           " (used when neither option is given)", metavar="TOKEN", group="api-token"),
    Option("--api-token-file", "FAKEMX_API_TOKEN_FILE", Path, None,
           "read the API token from FILE (its one line; a trailing newline is dropped)",
           metavar="FILE", group="api-token"),
    Option("--log-format", "FAKEMX_LOG_FORMAT", log_format, "human",
           "the line per finished session on stdout: human (default) or json (one object"
           " per line, for log collectors)", metavar="human|json"),
    Option("--keep-messages", "FAKEMX_KEEP_MESSAGES", count, None,
           "keep at most N messages in the state dir, deleting the oldest (default: all)",
           metavar="N"),
    Option("--keep-days", "FAKEMX_KEEP_DAYS", days, None,
           "delete messages older than D days from the state dir (default: never)",
           metavar="D"),
    Option("--workers", "FAKEMX_WORKERS", workers, 1,
           "serve from N processes on the same port(s) (SO_REUSEPORT; auto = one per core;"
           " default 1); greylisting, counts and rule uses are shared through the state dir",
           metavar="N|auto"),
    Option("--dns-port", "FAKEMX_DNS_PORT", port, 0,
           "where a profile's [dns] zone is served (default 0: any free port)", (SERVE,)),
    Option("--mta-sts-port", "FAKEMX_MTA_STS_PORT", port, 0,
           "where a profile's [mta_sts] policy host serves HTTPS, on --host (default 0: any"
           " free port; relays fetch policies from 443)", (SERVE,)),
    Option("--dns-base-port", "FAKEMX_DNS_BASE_PORT", port, 0,
           "the DNS exercises' zones, one port each from here, UDP and TCP (default 0:"
           " any free ports; a relay in front of the lab needs fixed ones)", (LAB,)),
    Option("--dns-host", "FAKEMX_DNS_HOST", text, None,
           "where a profile's [dns] zone is served (default: --host if it is a loopback"
           " address, else loopback: a public DNS server is a reflector)", BOTH,
           metavar="ADDRESS"),
    Option("--postfix-transport", "FAKEMX_POSTFIX_TRANSPORT", Path, None,
           "also write a Postfix transport map: <profile>.lab.fakemx.test -> [ADVERTISE]:PORT,"
           " for a relay in front of the lab", (LAB,), metavar="FILE"),
    Option("--export-ca", "FAKEMX_EXPORT_CA", Path, None,
           "also write the root certificate relays must trust to FILE (PEM), e.g. on a"
           " volume a relay mounts without the CA's key", (LAB,), metavar="FILE"),
    Option("--advertise", "FAKEMX_ADVERTISE", text, None,
           "the name relays use to reach the lab (default: --host)", (LAB,), metavar="HOST"),
    Option("--sheets", "FAKEMX_SHEETS", Path, None,
           "with --student: where the exercise sheet and the answer key are written"
           " (default STATE_DIR/classroom)", (LAB,), metavar="DIR"),
    Option("--student-token", "FAKEMX_STUDENT_TOKEN", text, None,
           "with --student: the students' API token: the page and read-only API with each"
           " scenario hidden until the instructor (--api-token) reveals it", (LAB,),
           metavar="TOKEN"),
)


def add_options(parser: argparse.ArgumentParser, command: str) -> None:
    """The options of ``command`` (serve or lab), defaults left to ``resolve``."""
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for option in OPTIONS:
        if command not in option.commands:
            continue
        help_text = f"{option.help} [${option.env}]".replace("%", "%%")
        if not option.flag.startswith("--"):
            parser.add_argument(option.dest, nargs="?", default=None, help=help_text)
            continue
        target: argparse._ActionsContainer = parser
        if option.group is not None:
            if option.group not in groups:
                groups[option.group] = parser.add_mutually_exclusive_group()
            target = groups[option.group]
        target.add_argument(option.flag, type=option.parse, default=None, help=help_text,
                            metavar=option.metavar)
    parser.set_defaults(config_command=command)


def resolve(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> None:
    """Fill every option not given as a flag from its variable, else its default.

    ``args.origins`` then maps each option's dest to where its value came from
    (the flag or the variable), for errors found later (``origin``).
    """
    env = os.environ if environ is None else environ
    command = getattr(args, "config_command", None)
    if command is None:
        return
    options = [o for o in OPTIONS if command in o.commands]
    given = {o.dest for o in options if getattr(args, o.dest) is not None}
    flag_groups = {o.group for o in options if o.dest in given and o.group}
    origins = {o.dest: o.flag for o in options}
    set_vars: dict[str, list[str]] = {}
    for option in options:
        if option.dest in given:
            continue
        raw = env.get(option.env, "")
        if not raw or option.group in flag_groups:
            setattr(args, option.dest, option.default)
            continue
        if option.group is not None:
            set_vars.setdefault(option.group, []).append(option.env)
        try:
            value = option.parse(raw)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            raise FakeMXError(f"{option.env}={raw!r}: {_problem(exc)}") from None
        setattr(args, option.dest, value)
        origins[option.dest] = option.env
    for names in set_vars.values():
        if len(names) > 1:
            raise FakeMXError(f"{' and '.join(names)} are both set (set only one of them)")
    args.origins = origins


def origin(args: argparse.Namespace, dest: str) -> str:
    """``--state-dir`` or ``FAKEMX_STATE_DIR``: where ``args.<dest>`` came from."""
    origins: dict[str, str] = getattr(args, "origins", {})
    return origins.get(dest, "--" + dest.replace("_", "-"))


def environment_names() -> list[str]:
    """Every variable fakemx reads for its options, ``FAKEMX_MODE`` first."""
    return [MODE_ENV, *(option.env for option in OPTIONS)]


def mode(environ: Mapping[str, str] | None = None) -> str:
    """``serve`` or ``lab``, from ``FAKEMX_MODE`` (default serve), for ``fakemx run``."""
    env = os.environ if environ is None else environ
    value = env.get(MODE_ENV, "") or SERVE
    if value not in MODES:
        raise FakeMXError(f"{MODE_ENV}={value!r}: not a mode (use serve, one profile, or lab,"
                          f" every catalog profile)")
    return value


def _problem(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
