"""fakemx lab: every catalog profile on its own port, for a relay and a class in front of it.

What the relay and the students need is decided in ``fakemx.classroom``; here
the servers start, the files the relay reads are written (its transport map,
the DNS exercises' ports, the CA certificate) and, in student mode, the
exercise sheet and the answer key.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from pathlib import Path

from fakemx import classroom
from fakemx.addresses import loopback_like
from fakemx.api.server import MAX_PORT
from fakemx.classroom import Case
from fakemx.cli.offline import _export_ca, _usable_state_dir
from fakemx.cli.serving import (
    _api,
    _api_of_worker,
    _api_settings,
    _following,
    _for_option,
    _other_workers,
    _parent,
    _shared,
    _stop_on_signals,
    _store,
    long_lived_heap,
    run_logging,
)
from fakemx.config import origin
from fakemx.errors import FakeMXError, ListenError
from fakemx.profiles import catalog
from fakemx.server import FakeMX
from fakemx.sessionlog import SessionLog
from fakemx.tls import certs
from fakemx.workers import report_ready, this_worker

LAB_DOMAIN = classroom.LAB_DOMAIN


def _lab(args: argparse.Namespace) -> int:
    api = _api_settings(args)
    if args.student and api is not None and api[1] is None:
        raise FakeMXError(f"{origin(args, 'student')} with {origin(args, 'api')}: the trainer"
                          " needs a token of their own to reveal scenarios (set"
                          " --api-token-file or $FAKEMX_API_TOKEN; students get"
                          " --student-token)")
    _usable_state_dir(args.state_dir, origin(args, "state_dir"))
    lab = classroom.cases(catalog(), student=args.student, state_dir=args.state_dir)
    _check_ports(args, "base_port", len(lab))
    dns_count = sum(classroom.resolved_by_relay(case) for case in lab)
    _check_ports(args, "dns_base_port", dns_count)
    dns_host = args.dns_host or loopback_like(args.host)
    place = this_worker()
    if place is None and args.workers > 1:
        return _parent(args)
    api = _api_of_worker(api, place)
    first = place is None or place.slot == 0  # the worker that says where things are
    log = SessionLog(args.log_format)
    advertised = _advertised_address(args.advertise or args.host, args.host, log)

    async def run() -> None:
        stop = _stop_on_signals()
        store = _store(args)
        shared = _shared(store, place)
        certs.ensure_ca(args.state_dir)  # relays are told to trust STATE_DIR/ca.pem
        servers: list[tuple[Case, FakeMX]] = []
        started: list[FakeMX] = []
        subscriber, others = _other_workers(store, place, started, log, api is not None)
        dns_index = 0
        try:
            for index, case in enumerate(lab):
                port = args.base_port + index if args.base_port else 0
                if place is not None and place.ports:  # worker 0's, after its start
                    port = place.ports[case.name]
                # Fixed ports for the zones the relay resolves (published); any for the rest.
                relay_resolves = classroom.resolved_by_relay(case)
                dns_port = args.dns_base_port + dns_index if relay_resolves and \
                    args.dns_base_port else 0
                dns_index += relay_resolves
                if not first:  # a zone's fixed port is worker 0's; the others' are unused
                    dns_port = 0
                server = FakeMX(classroom.lab_zone(case), host=args.host,
                                port=port, state_dir=args.state_dir, seed=args.seed,
                                hostname=args.hostname, store=store,
                                time_scale=args.time_scale, name=case.name,
                                dns_host=dns_host, dns_port=dns_port,
                                dns_fakemx_address=advertised,
                                # students behind the one relay: each their own attempts
                                attempts_per_sender=args.student)
                server.journal.subscribe(subscriber)
                started.append(server)
                try:
                    await server.start()
                except ListenError as exc:  # the port came from --base-port, not --port
                    base = origin(args, "dns_base_port" if "for DNS" in str(exc)
                                  else "base_port")
                    raise ListenError(f"{case.name} ({base} + {index}): "
                                      f"{_for_option(str(exc), base)}") from None
                servers.append((case, server))
            if first:
                _write_lab_files(args, lab, servers, log)
            students = None
            if args.student:
                from fakemx.api.views import StudentMode

                students = StudentMode(frozenset(c.name for c in lab if c.hidden))
            async with (_api(api, [server for _, server in servers], log, students,
                             args.student_token) as api_server, _following(others)):
                long_lived_heap()
                if place is not None:
                    report_ready({case.name: server.port for case, server in servers},
                                 None if api_server is None else api_server.address.port)
                await stop.wait()
        finally:
            for _, server in servers:
                await server.stop()
            store.close()
            if shared is not None:
                shared.close()

    return run_logging(run(), log)


def _write_lab_files(args: argparse.Namespace, lab: list[Case],
                     servers: list[tuple[Case, FakeMX]], log: SessionLog) -> None:
    """The relay's files, the CA, the sheets and the table (by worker 0 alone)."""
    if args.postfix_transport is not None:
        _write_relay_files(args.postfix_transport, servers, args.advertise or args.host)
    if args.export_ca is not None:
        _export_ca(args.state_dir, args.export_ca, origin(args, "export_ca"))
    if args.student:
        sheets = args.sheets or args.state_dir / "classroom"
        for path in classroom.write_sheets(sheets, lab):
            log.info(f"fakemx: wrote {path}")
    _print_lab_table(servers, log)


def _check_ports(args: argparse.Namespace, dest: str, count: int) -> None:
    first = getattr(args, dest)
    last_port = first + count - 1
    if first and last_port > MAX_PORT:
        option = origin(args, dest)
        raise FakeMXError(
            f"{option} {first}: the lab needs {count} ports, up to {last_port}, above"
            f" {MAX_PORT} (use {option} {MAX_PORT - count + 1} or lower, or {option} 0"
            " for free ports)")


def _advertised_address(name: str, host: str, log: SessionLog) -> str:
    """The IPv4 address relays reach the lab at, for ``{fakemx}`` in DNS exercises' records.

    A name (compose's service name ``fakemx``) is looked up as the relay will look it
    up; a wildcard bind advertises loopback unless a name is given.
    """
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        try:
            return str(socket.getaddrinfo(name, None, socket.AF_INET)[0][4][0])
        except (OSError, IndexError):
            fallback = loopback_like(host)
            log.info(f"fakemx: --advertise {name} does not resolve here: the DNS exercises'"
                     f" records name {fallback} (give --advertise an IP address a relay"
                     " reaches)")
            return fallback
    return loopback_like(host) if address.is_unspecified else str(address)


def _print_lab_table(servers: list[tuple[Case, FakeMX]], log: SessionLog) -> None:
    rows = [("ADDRESS", "PROFILE", "CODE", "WHAT THE RELAY SEES")]
    for case, server in servers:
        about = case.profile.about
        if case.hidden:  # the terminal of a student-mode lab is the instructor's
            rows.append((server.address, f"{case.name} = {case.profile.name}",
                         about.code if about else "", about.relay_sees if about else ""))
        else:
            rows.append((server.address, case.name, about.code if about else "",
                         about.relay_sees if about else ""))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        log.info(" ".join(["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])),
                           row[3]]))
    for case, server in servers:
        if server.dns is not None:  # a 4.4.312 case: a relay's resolver is pointed here
            log.info(f"DNS for {case.name}: {server.dns.address} (udp+tcp)")
    log.info(f"fakemx: lab ready, {len(servers)} profiles on {servers[0][1].host}")


DNS_ZONES = "dns-zones"


def _write_relay_files(path: Path, servers: list[tuple[Case, FakeMX]], host: str) -> None:
    """The relay's transport map at ``path``, and beside it ``dns-zones``: each DNS
    case's domain and the port of its DNS server (the relay's resolver forwards there)."""
    lines = [f"# written by fakemx lab: send to <anyone>@<case>.{LAB_DOMAIN}"]
    lines += [classroom.transport_line(case, host, server.port) for case, server in servers]
    zones = [f"# written by fakemx lab: <case>.{LAB_DOMAIN}, its DNS server's port, the"
             " relay's service and smart host for it"]
    zones += [f"{case.domain} {server.dns.port} {classroom.service(case)}"
              f" {classroom.smart_host(case, server.port)}"
              for case, server in servers
              if server.dns is not None and classroom.resolved_by_relay(case)]
    for target, text in ((path.with_name(DNS_ZONES), zones), (path, lines)):
        tmp = target.with_name(target.name + ".tmp")
        try:
            tmp.write_text("\n".join(text) + "\n")
            tmp.replace(target)
        except OSError as exc:
            raise FakeMXError(f"--postfix-transport {path}: cannot write {target.name}:"
                              f" {exc.strerror} (choose a file in a directory fakemx can"
                              " write)") from None
