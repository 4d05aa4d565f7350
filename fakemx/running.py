"""The machinery of a started server: its state, listener, DNS server and TLS, set up
from a profile as a whole or not at all (FakeMX's start and load both come here)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fakemx.errors import FakeMXError
from fakemx.listener import Listener
from fakemx.model import Profile
from fakemx.smtp import FakeSMTP
from fakemx.stages import ListenerState, TlsMode
from fakemx.state import ServerState
from fakemx.tls.implicit import ImplicitTls
from fakemx.tls.serving import TlsServing

if TYPE_CHECKING:  # dnspython costs start-up time: imported when a profile needs DNS
    from fakemx.dns.server import DnsServer
    from fakemx.mtasts.server import PolicyHost

SHUTDOWN_GRACE_SECONDS = 2.0


@dataclass(frozen=True)
class DnsPlace:
    """Where a profile's zone is served, and what ``{fakemx}`` in its records means."""

    host: str
    port: int
    fakemx_address: str
    clock: Callable[[], float]
    policy_port: int = 0  # the MTA-STS policy host's, on fakemx_address (fakemx.mtasts)


class Running:
    def __init__(self, state: ServerState, host: str, port: int, tls: TlsServing,
                 dns_place: DnsPlace, dns: DnsServer | None) -> None:
        self.state = state
        self.tls = tls
        self.dns = dns  # the last one, kept after a stop so its queries stay readable
        self._dns_place = dns_place
        self._dns_profile: Profile | None = None  # the profile whose zone self.dns serves
        self.policy_host: PolicyHost | None = None  # MTA-STS, for a profile with [mta_sts]
        # Implicit TLS is done per connection by ImplicitTls, not by the listening socket.
        self.listener = Listener(host, port, self._protocol, lambda: None)

    def _protocol(self) -> asyncio.Protocol:
        """A new connection: SMTP, wrapped in the TLS handshake first for implicit TLS."""
        smtp = FakeSMTP(self.state)
        if smtp.profile.tls.mode is TlsMode.IMPLICIT and self.state.tls_context is not None:
            return ImplicitTls(smtp, self.state.tls_context)
        return smtp

    async def switch(self, profile: Profile, seed: int | None) -> None:
        """Make ``profile`` the running one, wholly or not at all.

        What can fail comes first (the TLS context, the listener's socket, the DNS
        server); on any failure what was changed is put back and the old profile
        keeps serving. Then the swap, which cannot fail.
        """
        listener = self.listener
        context = await self.tls.context_for(profile)
        was: ListenerState | None = listener.state if listener.bound else None
        if was is None:
            await listener.start(profile.listener)
        elif was is not profile.listener:
            await listener.set_state(profile.listener)
        old_policy = self.policy_host
        try:
            policy = await self._policy_host_for(profile)
            try:
                dns = await self._dns_for(profile)
            except BaseException:
                if policy is not old_policy:  # the old one back, as it was
                    if policy is not None:
                        await policy.stop()
                    if old_policy is not None:
                        with contextlib.suppress(OSError):
                            await old_policy.start()
                raise
        except BaseException:
            if was is None:
                await listener.stop()
            elif was is not profile.listener:
                await listener.set_state(was)
            raise
        self.policy_host = policy
        self.state.profile = profile
        self.state.tls_context = context
        self.state.reseed(seed if seed is not None else profile.seed)
        self.dns, self._dns_profile = dns, profile if dns is not None else None

    async def _dns_for(self, profile: Profile) -> DnsServer | None:
        """The DNS server ``profile`` needs, on the same address as before: the running
        one if its zone is the same, else a new one (the old one restarted on failure)."""
        current = self.dns if self.dns is not None and self.dns.running else None
        if current is not None and self._dns_profile is not None \
                and profile.dns == self._dns_profile.dns:
            return current
        place = self._dns_place
        port = current.port if current is not None else place.port
        if current is not None:
            await current.stop()
        if profile.dns is None:
            return None
        from fakemx.dns.dnssec import zone_material
        from fakemx.dns.server import DnsServer

        try:
            keys, digests = zone_material(profile.dns, self.tls.state_dir(),
                                          lambda: self.tls.presented(profile))
            fresh = DnsServer(profile.dns, host=place.host, port=port, clock=place.clock,
                              fakemx_address=place.fakemx_address,
                              fds=self.state.fds,  # DNS over TCP holds descriptors too
                              keys=keys, tlsa_digests=digests)
            return await fresh.start()
        except BaseException:
            if current is not None:
                with contextlib.suppress(FakeMXError):
                    await current.start()
            raise

    async def _policy_host_for(self, profile: Profile) -> PolicyHost | None:
        """The MTA-STS policy host ``profile`` needs: the running one if its policy is the
        same, else a new one on the same port (the old one restarted on failure)."""
        current = self.policy_host
        if current is not None and profile.mta_sts == current.spec:
            return current
        port = current.port if current is not None else self._dns_place.policy_port
        if current is not None:
            await current.stop()
        if profile.mta_sts is None:
            return None
        from fakemx.mtasts.server import PolicyHost

        fresh = PolicyHost(profile.mta_sts, self.tls.state_dir(),
                           host=self._dns_place.fakemx_address, port=port,
                           clock=self._dns_place.clock)
        try:
            return await fresh.start()
        except BaseException:
            await fresh.stop()
            if current is not None:
                with contextlib.suppress(OSError):
                    await current.start()
            raise

    async def stop(self, *, close_store: bool) -> None:
        """Stop listening and serving DNS, say 421 to every session, then close."""
        if self.policy_host is not None:
            await self.policy_host.stop()
        if self.dns is not None:
            await self.dns.stop()
        await self.listener.stop()
        await self.tls.stop()
        await self.state.close_sessions(SHUTDOWN_GRACE_SECONDS)
        if close_store:
            self.state.store.close()
