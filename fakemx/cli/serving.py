"""fakemx serve, lab and dns: start servers, say where they are, stop on a signal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from fakemx import profile_cache
from fakemx.api.server import (
    ApiAddress,
    ApiServer,
    check_exposure,
    parse_address,
    token_from,
)
from fakemx.cli.offline import _usable_state_dir
from fakemx.config import origin
from fakemx.errors import FakeMXError, ListenError
from fakemx.journal import Session
from fakemx.listener import share_ports
from fakemx.model import CertKind
from fakemx.profiles import load_profile
from fakemx.server import FakeMX
from fakemx.sessionlog import SessionLog
from fakemx.sharedstate import SharedState
from fakemx.stages import Protocol
from fakemx.store import Store
from fakemx.tls import certs
from fakemx.workerjournal import OtherWorkers
from fakemx.workers import Parent, WorkerPlace, report_ready, this_worker

if TYPE_CHECKING:
    from fakemx.api.views import StudentMode


GC_YOUNG_OBJECTS = 10_000  # see long_lived_heap


def _serve(args: argparse.Namespace) -> int:
    api = _api_settings(args)  # refuse an exposed API before anything starts
    profile = profile_cache.load_profile(args.profile)  # validated once per file content
    if args.protocol is not None:
        profile = profile.model_copy(update={"protocol": Protocol(args.protocol)})
    _usable_state_dir(args.state_dir, origin(args, "state_dir"))
    place = this_worker()
    if place is None and args.workers > 1:
        if profile.dns is not None or profile.mta_sts is not None:
            what = "DNS" if profile.dns is not None else "an MTA-STS policy host"
            raise FakeMXError(f"{origin(args, 'workers')} {args.workers}: {profile.name} serves"
                              f" {what} on one port, which workers cannot share (use"
                              f" {origin(args, 'workers')} 1 for it)")
        return _parent(args)
    api = _api_of_worker(api, place)
    log = SessionLog(args.log_format)

    async def run() -> None:
        stop = _stop_on_signals()
        store = _store(args)
        shared = _shared(store, place)
        port = place.ports[""] if place is not None and place.ports else args.port
        server = FakeMX(profile, host=args.host, port=port, state_dir=args.state_dir,
                        seed=args.seed, hostname=args.hostname, time_scale=args.time_scale,
                        dns_host=args.dns_host, dns_port=args.dns_port,
                        mta_sts_port=args.mta_sts_port, store=store)
        subscriber, others = _other_workers(store, place, [server], log, api is not None)
        server.journal.subscribe(subscriber)
        try:
            # Relays are told to trust STATE_DIR/ca.pem: it exists whatever the profile's
            # certificate (self-signed and untrusted ones do not come from this CA).
            certs.ensure_ca(args.state_dir)
            try:
                await server.start()
            except ListenError as exc:
                port = "dns_port" if "for DNS" in str(exc) else "port"
                raise ListenError(_for_option(str(exc), origin(args, port))) from None
            try:
                if place is None or place.slot == 0:
                    log.info(f"fakemx: serving {profile.name} on {server.address} "
                             f"(listener {server.listener_state}, state dir {args.state_dir})")
                if server.mta_sts is not None:
                    log.info(f"fakemx: MTA-STS policy host {server.mta_sts.spec.host} on"
                             f" https://{server.mta_sts.address}/.well-known/mta-sts.txt")
                if server.dns is not None and server.dns.trust_anchor is not None:
                    from fakemx.dns.dnssec import ANCHOR_FILE  # loaded: the zone is signed

                    log.info(f"fakemx: DNSSEC trust anchor in {args.state_dir / ANCHOR_FILE}:"
                             f" {server.dns.trust_anchor.strip()}")
                if server.dns is not None:
                    log.info(f"fakemx: DNS for {profile.name} on {server.dns.address}")
                async with _api(api, [server], log) as api_server, _following(others):
                    long_lived_heap()
                    if place is not None:
                        report_ready({"": server.port},
                                     None if api_server is None else api_server.address.port)
                    await stop.wait()
            finally:
                await server.stop()
        finally:
            store.close()
            if shared is not None:
                shared.close()

    return run_logging(run(), log)


def long_lived_heap() -> None:
    """Once a server is up, fewer and cheaper passes of the cyclic GC.

    What start-up made (the imported modules, the profile, the catalog) lives as long
    as the process: ``gc.freeze`` takes it out of every pass. A session makes hundreds
    of objects, so at Python's young threshold of 700 the GC ran every few sessions and
    a full pass (over the journal, up to 44-65 ms) every 1,500 messages or so; at 10,000
    it runs a ninth as often and takes about half the time in all, with no full pass
    in 6,000 messages, but a young pass takes up to 5-6 ms rather than under 1 ms.
    Measured: bench/results/gc-pauses-2026-12-01.txt, bench/results/gc-2026-11-30.txt."""
    gc.freeze()
    gc.set_threshold(GC_YOUNG_OBJECTS, 10, 10)


def run_logging(main: Coroutine[Any, Any, None], log: SessionLog) -> int:
    """Run ``main`` (serve, lab) to its end, then write the last sessions' lines."""
    try:
        asyncio.run(main)
    finally:
        log.close()
    return 0


def _parent(args: argparse.Namespace) -> int:
    """``--workers N`` (N > 1): start the workers, watch them, stop them on a signal."""
    log = SessionLog(args.log_format)
    try:
        return Parent(args.argv, args.workers, args.state_dir, log.info).run()
    finally:
        log.close()


def _shared(store: Store, place: WorkerPlace | None) -> SharedState | None:
    """In a worker: ports shared with the other workers, and state through the store."""
    if place is None:
        return None  # one process: everything stays in memory, as always
    share_ports(holds_blackhole=place.slot == 0)
    store.worker = place.slot
    return store.share_state()  # every server on this store keeps its counters there


def _api_of_worker(api: tuple[ApiAddress, str | None] | None, place: WorkerPlace | None
                   ) -> tuple[ApiAddress, str | None] | None:
    """The API is served by worker 0 alone, on the port it had (after a restart too)."""
    if api is None or place is None:
        return api
    if place.slot != 0:
        return None
    address, token = api
    if place.api_port is not None:
        address = ApiAddress(address.host, place.api_port)
    return address, token


def _other_workers(store: Store, place: WorkerPlace | None, servers: list[FakeMX],
                   log: SessionLog, api_served: bool
                   ) -> tuple[Callable[[str, Session], None], OtherWorkers | None]:
    """What to subscribe to each server's journal for the session log; in worker 0 when it
    serves the API, also the reader that adds the other workers' sessions and messages to
    the journals of ``servers`` (as the list is when it reads), for the API.

    Without the API nothing reads those journals but the session log, which prints each
    worker's own: the reader, a few percent of worker 0's CPU at full load, is not run."""
    if place is None or place.slot != 0 or not api_served:
        return log, None
    others = OtherWorkers(store.path, place.slot, lambda: {s.name: s.journal for s in servers},
                          store.content_of)

    def own_only(kind: str, session: Session) -> None:
        if not others.is_theirs(session):  # each worker prints its own sessions
            log(kind, session)

    return own_only, others


@contextlib.asynccontextmanager
async def _following(others: OtherWorkers | None) -> AsyncIterator[None]:
    """Read the other workers' sessions and messages while the block runs."""
    if others is None:
        yield
        return
    task = asyncio.create_task(others.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        others.close()


def _store(args: argparse.Namespace) -> Store:
    """The state dir's store, with ``--keep-messages``/``--keep-days`` applied now."""
    store = Store(args.state_dir)
    if args.keep_messages is not None or args.keep_days is not None:
        store.set_retention(args.keep_messages, args.keep_days)
    return store


def _dns(args: argparse.Namespace) -> int:
    from fakemx.dns.dnssec import zone_material
    from fakemx.dns.server import DnsServer, dns_spec

    profile = load_profile(args.profile)
    spec = dns_spec(profile)
    _usable_state_dir(args.state_dir, origin(args, "state_dir"))
    if profile.tls.cert is CertKind.REVOKED and any(r.type == "TLSA" for r in spec.records):
        raise FakeMXError(f"profile {profile.name!r}: its TLSA records describe a revoked"
                          " certificate, made only by fakemx serve (serve it with that)")
    keys, digests = zone_material(spec, args.state_dir, lambda: certs.cert_files(
        args.state_dir, args.hostname, profile.tls.cert).leaf)
    server = DnsServer(profile, host=args.host, port=args.port, time_scale=args.time_scale,
                       fakemx_address=args.fakemx_address or args.host, keys=keys,
                       tlsa_digests=digests)
    if args.trust_anchor:
        if server.trust_anchor is None:
            raise FakeMXError(f"profile {profile.name!r}: the zone is not signed, so it has no"
                              " trust anchor (add [dns.dnssec] to sign it)")
        print(server.trust_anchor, end="")
        return 0

    async def run() -> None:
        stop = _stop_on_signals()
        async with server:
            tcp = "udp+tcp" if server.spec.tcp == "open" else "udp; tcp refused"
            print(f"fakemx: DNS for {profile.name} on {server.address} ({tcp})", flush=True)
            await stop.wait()

    asyncio.run(run())
    return 0


def _for_option(message: str, option: str) -> str:
    """A listener's error, its fix naming ``option`` where it says --port."""
    if option in ("--base-port", "FAKEMX_BASE_PORT"):  # one port per profile from there
        message = message.replace("--port 0 for a free one", f"{option} 0 for free ports")
    return message.replace("--port", option)


def _api_settings(args: argparse.Namespace) -> tuple[ApiAddress, str | None] | None:
    """``--api`` parsed and checked (a non-loopback bind needs a token), or None."""
    if args.api is None:
        return None
    address = parse_address(args.api)
    try:
        token = token_from(args.api_token, args.api_token_file)
        check_exposure(address, token)
    except FakeMXError as exc:  # name the variables where the values came from them
        message = str(exc)
        for dest in ("api", "api_token_file"):
            flag = "--" + dest.replace("_", "-")
            message = message.replace(f"{flag} ", f"{origin(args, dest)} ", 1)
        raise FakeMXError(message) from None
    return address, token


@contextlib.asynccontextmanager
async def _api(
    settings: tuple[ApiAddress, str | None] | None, servers: list[FakeMX], log: SessionLog,
    students: StudentMode | None = None, student_token: str | None = None,
) -> AsyncIterator[ApiServer | None]:
    """Serve the API over ``servers`` on this loop while the block runs (if asked for)."""
    if settings is None:
        yield None
        return
    address, token = settings
    async with ApiServer(servers, host=address.host, port=address.port, token=token,
                         students=students, student_token=student_token) as api:
        log.info(f"fakemx: API on {api.url}")
        yield api


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


