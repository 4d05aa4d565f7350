"""FakeMX: the one object every door (CLI, pytest plugin, HTTP API) drives.

    async with FakeMX("4.4.317-greeting-421") as mx:   # on the caller's loop
        ...
    with FakeMX("4.4.316-connection-refused") as mx:   # own loop in a thread, for sync code
        smtplib.SMTP(mx.host, mx.port)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from fakemx import control, logs
from fakemx.addresses import host_port, loopback_like
from fakemx.clientbytes import shown
from fakemx.control import RuleSpec
from fakemx.errors import FakeMXError
from fakemx.incidents import Incidents, ServerSideError
from fakemx.journal import Journal, Outcome, Session, StoredMessage
from fakemx.loopthread import ExceptionHandler, LoopBridge, ThreadMode
from fakemx.model import Profile, Rule
from fakemx.profiles import load_profile
from fakemx.running import DnsPlace, Running
from fakemx.stages import ListenerState
from fakemx.state import ServerState
from fakemx.store import Store
from fakemx.tls import certs
from fakemx.tls.serving import TlsServing

if TYPE_CHECKING:  # imported when first needed: dnspython and cryptography cost start-up time
    from fakemx.dns.server import DnsServer
    from fakemx.mtasts.server import PolicyHost
    from fakemx.tls.revocation import RevocationServer

ProfileSpec = str | os.PathLike[str] | Profile | None


class FakeMX(ThreadMode):
    """A fake destination mail server running one profile.

    Args:
        profile: a catalog name, a path to a profile file, a Profile, or None
            for the default sink (accepts everything, in-band triggers on).
        host: the address to listen on (loopback by default).
        port: the port; 0 (the default) picks a free one, read back as ``port``.
        state_dir: where messages, the journal and the CA live; a fresh
            temporary directory (removed on stop) when None.
        seed: seeds the draws of ``probability`` conditions.
        hostname: the name in the greeting and in the certificate.
        clock: seconds, monotonic; injectable so time-based conditions
            (``within_seconds``) can be tested without waiting.
        time_scale: multiplies every duration in the profile (stalls, greylist
            windows, idle timeout): 0.01 runs a 300 s greylist in 3 s.
        store: share one store between several servers (the lab does).
        name: how sessions name this server; ``host:port`` by default.
        dns_host: where the profile's ``[dns]`` zone is served: by default ``host``
            when that is a loopback address, else loopback (a DNS server on a
            public address is a reflector for anyone's amplification attack).
        dns_port: where the profile's ``[dns]`` zone is served (on ``dns_host``, UDP
            and TCP; 0 = a free port), read back as ``mx.dns.port``.
        mta_sts_port: where the profile's ``[mta_sts]`` policy host serves HTTPS (on
            ``host``; 0 = a free port), read back as ``mx.mta_sts.port``.
        dns_fakemx_address: what ``{fakemx}`` in the zone's A/AAAA records stands
            for (default ``host``): the lab's address as its relay reaches it.
        attempts_per_sender: count attempts (and greylisting's first-seen time) per
            client and MAIL FROM sender instead of per client, from the MAIL command
            on: a classroom's students behind one relay keep their own.
    """

    def __init__(
        self,
        profile: ProfileSpec = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        state_dir: str | os.PathLike[str] | None = None,
        seed: int | None = None,
        hostname: str = certs.DEFAULT_HOSTNAME,
        clock: Callable[[], float] = time.monotonic,
        time_scale: float = 1.0,
        store: Store | None = None,
        name: str | None = None,
        dns_host: str | None = None,
        dns_port: int = 0,
        mta_sts_port: int = 0,
        dns_fakemx_address: str | None = None,
        attempts_per_sender: bool = False,
    ) -> None:
        if not (math.isfinite(time_scale) and time_scale > 0):
            raise FakeMXError(f"FakeMX: time_scale must be a finite number above 0, e.g. 0.01"
                              f" (got {time_scale!r})")
        if not hostname or any(c.isspace() or not c.isprintable() for c in hostname):
            raise FakeMXError(f"FakeMX: hostname {shown(hostname)!r} must be one word such as"
                              f" mx.example.test (it goes into the 220 greeting)")
        self.time_scale = time_scale
        self._profile = load_profile(profile).scaled(time_scale)
        self.host = host
        self._port = port
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None
        self._state_dir = None if state_dir is None else Path(state_dir)
        self.seed = seed
        self.hostname = hostname
        self._clock = clock
        self._shared_store = store
        self._name = name
        self._dns_host = dns_host if dns_host is not None else loopback_like(host)
        self._dns_port = dns_port
        self._mta_sts_port = mta_sts_port
        # What {fakemx} in the zone's records stands for: where relays reach this server.
        self._dns_fakemx_address = dns_fakemx_address or host
        self._attempts_per_sender = attempts_per_sender
        self.dns: DnsServer | None = None  # started when the profile has a [dns] section
        self.journal = Journal()
        self.incidents = Incidents()  # exceptions inside the server; see check()
        self._running: Running | None = None
        self._bridge = LoopBridge()  # to the loop fakemx runs on, from any thread

    def __repr__(self) -> str:
        """``<FakeMX 4.4.318-rst-after-mail on 127.0.0.1:40123 listener=open sessions=2>``.

        What a failing assertion or a debugger shows; ``listener=stopped`` when
        the server is not running.
        """
        listener = self._running.listener.state if self._running is not None else "stopped"
        return (
            f"<FakeMX {self._profile.name} on {self.address} "
            f"listener={listener} sessions={len(self.journal.sessions)}>"
        )

    # region lifecycle ----------------------------------------------------------

    async def start(self) -> Self:
        self._bridge.loop = asyncio.get_running_loop()
        logs.install()  # what clients can make aiosmtpd and asyncio log: escaped, throttled
        store = self._shared_store or Store(self.state_dir)
        state = ServerState(name=self._name or "", hostname=self.hostname, profile=self._profile,
                            store=store, journal=self.journal, clock=self._clock,
                            incidents=self.incidents,
                            attempts_per_sender=self._attempts_per_sender)
        running = Running(state, self.host, self._port,
                          TlsServing(lambda: self.state_dir, self.hostname),
                          DnsPlace(self._dns_host, self._dns_port, self._dns_fakemx_address,
                                   self._clock, self._mta_sts_port),
                          self.dns)
        try:
            await running.switch(self._profile, self.seed)
        except BaseException:
            if self._shared_store is None:
                store.close()
            raise
        self._running, self.dns = running, running.dns
        self._port = running.listener.port
        state.name = self._name or self.address
        return self

    async def stop(self) -> None:
        running, self._running = self._running, None
        if running is not None:  # its DNS server stays as self.dns: its queries stay readable
            await running.stop(close_store=self._shared_store is None)
        if self._temp_dir is not None:
            self._temp_dir.cleanup()
        self._bridge.loop = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def loop_exception_handler(self) -> ExceptionHandler:
        """``with FakeMX(...)`` runs on a private loop in a thread (fakemx.loopthread)."""
        return self._loop_exception

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        error = context.get("exception")
        if isinstance(error, Exception):
            self.incidents.add(f"event loop: {context.get('message', '')}", error)
        loop.default_exception_handler(context)

    # endregion
    # region observation --------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def name(self) -> str:
        """How sessions name this server (``Session.server``): ``name`` if given, else
        ``host:port``. The HTTP API addresses servers by it."""
        return self._name or self.address

    @property
    def address(self) -> str:
        return host_port(self.host, self._port)

    @property
    def mta_sts(self) -> PolicyHost | None:
        """The running MTA-STS policy host (a profile with ``[mta_sts]``): ``port``,
        ``requests``."""
        return self._running.policy_host if self._running is not None else None

    @property
    def profile(self) -> Profile:
        """The running profile, with rules added at run time first."""
        return self._profile

    @property
    def listener_state(self) -> ListenerState:
        return self._running.listener.state if self._running else self._profile.listener

    @property
    def sessions(self) -> list[Session]:
        """Every connection so far (since the last ``reset()``), oldest first."""
        return self.journal.sessions

    @property
    def messages(self) -> list[StoredMessage]:
        """Accepted messages: envelope (``mail_from``, ``rcpt_tos``) and ``.message``,
        the parsed ``email.message.EmailMessage``."""
        return self.journal.messages

    def wait_for(
        self,
        *,
        sessions: int | None = None,
        ended: int | None = None,
        messages: int | None = None,
        timeout: float = 5.0,
    ) -> None:
        """Block until so many sessions (started/ended) and messages exist; TimeoutError if not.

        Returns as soon as it holds. From the server's own event loop use
        ``await mx.await_for(...)``: blocking there would stop the server.
        """
        self._bridge.refuse_here("wait_for", "await_for")
        self._wait(sessions, ended, messages, timeout)

    async def await_for(
        self,
        *,
        sessions: int | None = None,
        ended: int | None = None,
        messages: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109 (the same signature as wait_for, on purpose)
    ) -> None:
        """``wait_for`` for async code; the event loop keeps running meanwhile."""
        # The journal's condition variable is notified from the server's loop;
        # waiting on it in a worker thread keeps that loop free.
        await asyncio.to_thread(self._wait, sessions, ended, messages, timeout)

    def _wait(
        self, sessions: int | None, ended: int | None, messages: int | None, timeout: float
    ) -> None:
        if self.journal.wait_for(
            sessions=sessions, ended=ended, messages=messages, timeout=timeout
        ):
            return
        listed = self.sessions
        closed = sum(s.outcome is not Outcome.OPEN for s in listed)
        have = f"{len(listed)} sessions ({closed} ended), {len(self.messages)} messages"
        raise TimeoutError(f"fakemx: still {have} after {timeout:g} s")

    def check(self) -> None:
        """Raise ServerSideError if anything failed inside the server (the fixtures do)."""
        found = self.incidents.snapshot()
        if found:
            raise ServerSideError(self.address, found) from found[0].error

    @property
    def state_dir(self) -> Path:
        """Messages, journal and CA; a temporary directory made on first use if none was given
        (so a FakeMX that never starts leaves nothing behind), removed on stop."""
        if self._state_dir is None:
            self._temp_dir = tempfile.TemporaryDirectory(prefix="fakemx-")
            self._state_dir = Path(self._temp_dir.name)
        return self._state_dir

    @property
    def ca_path(self) -> Path:
        return certs.ensure_ca(self.state_dir)

    @property
    def ca_pem(self) -> bytes:
        return certs.ca_pem(self.state_dir)

    # endregion
    # region control ------------------------------------------------------------
    # Sync verbs work from any thread but the server's own loop; ``load`` and
    # ``set_listener`` may rebind the port, so on that loop use their ``a``-forms.
    # Rule edits and ``reset`` never wait, so they work everywhere.

    def load(self, profile: ProfileSpec) -> None:
        """Switch to another profile (dropping run-time rules); applies from the next connection."""
        new = load_profile(profile).scaled(self.time_scale)  # validate all, then change
        self._bridge.refuse_here("load", "aload")
        self._bridge.run(self.apply(new))

    async def aload(self, profile: ProfileSpec) -> None:
        new = load_profile(profile).scaled(self.time_scale)
        await self._bridge.arun(self.apply(new))

    def set_listener(self, state: ListenerState | str) -> None:
        """``open``, ``refuse`` (RST on SYN) or ``blackhole`` (SYNs unanswered); next SYN on."""
        wanted = ListenerState(state)
        self._bridge.refuse_here("set_listener", "aset_listener")
        self._bridge.run(self._set_listener(wanted))

    async def aset_listener(self, state: ListenerState | str) -> None:
        await self._bridge.arun(self._set_listener(ListenerState(state)))

    def add_rule(self, spec: RuleSpec | None = None, /, **fields: Any) -> Rule:
        """Add a rule, checked before the profile's own; returns it as stored.

        ``spec`` is a Rule or a dict, or give the fields as keywords; validated
        like a profile file (ProfileError, nothing changes). Durations are
        scaled by ``time_scale``.
        """
        rule = control.rule_from_spec(fields if spec is None else spec, "mx.add_rule()")
        rule = control.scaled_rule(rule, self.time_scale)
        self._swap(lambda current: control.with_rule(current, rule))
        return rule

    def remove_rule(self, name: str) -> list[Rule]:
        """Remove the rules labelled ``name`` (a rule's ``name``, else ``<stage>-<action>``)."""
        removed: list[Rule] = []

        def edit(current: Profile) -> Profile:
            new, gone = control.without_rule(current, name)
            removed.extend(gone)
            return new

        self._swap(edit)
        return removed

    @contextlib.contextmanager
    def rule(self, spec: RuleSpec | None = None, /, **fields: Any) -> Iterator[Rule]:
        """``with mx.rule(stage="rcpt", reply={"code": 451}):`` the rule holds inside only."""
        added = self.add_rule(spec, **fields)
        try:
            yield added
        finally:
            self._swap(lambda current: control.without_exact(current, added) or current)

    def reset(self) -> None:
        """Forget sessions, messages in memory, attempt counters and the seeded draws.

        The profile and its run-time rules stay; recorded server-side errors too
        (``mx.incidents.clear()`` forgets those).
        """
        self.journal.clear()
        if self._running is not None:
            self._bridge.call(self._running.state.reset)

    async def apply(self, profile: Profile) -> None:
        """Switch to ``profile`` (already validated and scaled), as ``start`` sets one up:
        wholly or not at all (see fakemx.running)."""
        running = self._require_running(change="switching the profile")
        await running.switch(profile, self.seed)
        self._profile, self.dns = profile, running.dns

    async def _set_listener(self, state: ListenerState) -> None:
        await self._require_running(change="changing the listener").listener.set_state(state)

    def _swap(self, edit: Callable[[Profile], Profile]) -> None:
        """Replace the profile by ``edit(profile)`` on the loop (no rebind: rules only)."""
        state = self._require_running(change="changing the rules").state

        def swap() -> None:
            self._profile = state.profile = edit(self._profile)

        self._bridge.call(swap)

    def _require_running(self, *, change: str = "") -> Running:
        if self._running is None:
            raise RuntimeError("fakemx is not running: use `with FakeMX(...)` first")
        if change and self._running.state.shared is not None:  # not half done: refused
            raise FakeMXError(f"{change} at run time would reach one worker only (use"
                              " --workers 1, or put the change in the profile file)")
        return self._running

    # endregion
    # region TLS ----------------------------------------------------------------

    @property
    def revocation(self) -> RevocationServer | None:
        """The CRL/OCSP server of a ``revoked`` profile (its ``base_url`` and ``requests``)."""
        return None if self._running is None else self._running.tls.revocation

    # endregion
