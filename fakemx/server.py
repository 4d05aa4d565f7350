"""FakeMX: the one object every door (CLI, pytest plugin, HTTP API) drives.

    async with FakeMX("4.4.317-greeting-421") as mx:   # on the caller's loop
        ...
    with FakeMX("4.4.316-connection-refused") as mx:   # own loop in a thread, for sync code
        smtplib.SMTP(mx.host, mx.port)
"""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from fakemx import certs
from fakemx.journal import Journal, Outcome, Session, StoredMessage
from fakemx.listener import Listener
from fakemx.model import Profile
from fakemx.profiles import load_profile
from fakemx.smtp import FakeSMTP
from fakemx.stages import ListenerState, TlsMode
from fakemx.state import ServerState
from fakemx.store import Store

T = TypeVar("T")
ProfileSpec = str | os.PathLike[str] | Profile | None
_SHUTDOWN_GRACE_SECONDS = 2.0


class FakeMX:
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
    ) -> None:
        self.time_scale = time_scale
        self._profile = load_profile(profile).scaled(time_scale)
        self.host = host
        self._port = port
        self._temp_dir: tempfile.TemporaryDirectory[str] | None = None
        if state_dir is None:
            self._temp_dir = tempfile.TemporaryDirectory(prefix="fakemx-")
            state_dir = self._temp_dir.name
        self.state_dir = Path(state_dir)
        self.seed = seed
        self.hostname = hostname
        self._clock = clock
        self._shared_store = store
        self._name = name
        self.journal = Journal()
        self._state: ServerState | None = None
        self._listener: Listener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # region lifecycle ----------------------------------------------------------

    async def start(self) -> Self:
        self._loop = asyncio.get_running_loop()
        store = self._shared_store or Store(self.state_dir)
        self._state = ServerState(
            name=self._name or "",
            hostname=self.hostname,
            profile=self._profile,
            store=store,
            journal=self.journal,
            clock=self._clock,
            seed=self.seed if self.seed is not None else self._profile.seed,
            tls_context=self._tls_context_for(self._profile),
        )
        state = self._state
        self._listener = Listener(
            self.host, self._port, lambda: FakeSMTP(state), self._implicit_tls_context
        )
        try:
            await self._listener.start(self._profile.listener)
        except BaseException:
            if self._shared_store is None:
                store.close()
            raise
        self._port = self._listener.port
        state.name = self._name or self.address
        return self

    async def stop(self) -> None:
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None
        if self._state is not None:
            await self._state.close_sessions(_SHUTDOWN_GRACE_SECONDS)
            if self._shared_store is None:
                self._state.store.close()
            self._state = None
        if self._temp_dir is not None:
            self._temp_dir.cleanup()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def __enter__(self) -> Self:
        """Run on a private event loop in a background thread (for sync clients)."""
        loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=loop.run_forever, name="fakemx", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result()
        except BaseException:
            self._stop_thread(loop)
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        loop = self._loop
        assert loop is not None
        try:
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result()
        finally:
            self._stop_thread(loop)

    def _stop_thread(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join()
        loop.close()
        self._thread = None

    # endregion
    # region observation --------------------------------------------------------

    @property
    def port(self) -> int:
        return self._port

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self._port}" if ":" in self.host else f"{self.host}:{self._port}"

    @property
    def profile(self) -> Profile:
        return self._profile

    @property
    def listener_state(self) -> ListenerState:
        return self._listener.state if self._listener else self._profile.listener

    @property
    def sessions(self) -> list[Session]:
        return self.journal.sessions

    @property
    def messages(self) -> list[StoredMessage]:
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

        Call it from a thread other than the server's loop (in thread mode, the test's).
        """
        if not self.journal.wait_for(
            sessions=sessions, ended=ended, messages=messages, timeout=timeout
        ):
            have = (
                f"{len(self.sessions)} sessions "
                f"({sum(s.outcome is not Outcome.OPEN for s in self.sessions)} ended), "
                f"{len(self.messages)} messages"
            )
            raise TimeoutError(f"fakemx: still {have} after {timeout:g} s")

    @property
    def ca_path(self) -> Path:
        certs.load_or_create_ca(self.state_dir)
        return self.state_dir / certs.CA_FILE

    @property
    def ca_pem(self) -> bytes:
        return certs.ca_pem(self.state_dir)

    # endregion
    # region control ------------------------------------------------------------

    def load(self, profile: ProfileSpec) -> None:
        """Switch to another profile; applies from the next connection."""
        new = load_profile(profile).scaled(self.time_scale)  # validate all, then change
        self._call(self.apply(new))

    def set_listener(self, state: ListenerState | str) -> None:
        self._call(self._set_listener(ListenerState(state)))

    def reset(self) -> None:
        """Forget sessions, messages in memory, attempt counters and the seeded draws."""
        self.journal.clear()
        if self._state is not None:
            self._state.reset()

    async def apply(self, profile: Profile) -> None:
        state = self._require_state()
        context = self._tls_context_for(profile)
        self._profile = profile
        state.tls_context = context
        state.profile = profile
        assert self._listener is not None
        if self._listener.state is not profile.listener or self._implicit_changed(profile):
            await self._listener.set_state(profile.listener)

    async def _set_listener(self, state: ListenerState) -> None:
        self._require_state()
        assert self._listener is not None
        await self._listener.set_state(state)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the server's loop, from its thread or from another."""
        loop = self._loop
        if loop is None:
            coro.close()
            raise RuntimeError("fakemx is not running: use `with FakeMX(...)` first")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            # On the loop itself we cannot block; the change is scheduled in order.
            loop.create_task(coro)
            return None  # type: ignore[return-value]
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def _require_state(self) -> ServerState:
        if self._state is None:
            raise RuntimeError("fakemx is not running: use `with FakeMX(...)` first")
        return self._state

    # endregion
    # region TLS ----------------------------------------------------------------

    def _tls_context_for(self, profile: Profile) -> ssl.SSLContext | None:
        if profile.tls.mode is TlsMode.NONE:
            return None
        return certs.server_context(self.state_dir, self.hostname)

    def _implicit_tls_context(self) -> ssl.SSLContext | None:
        if self._state is None or self._profile.tls.mode is not TlsMode.IMPLICIT:
            return None
        return self._state.tls_context

    def _implicit_changed(self, profile: Profile) -> bool:
        # Implicit TLS lives in the listening server, so switching to or from it rebinds.
        return (profile.tls.mode is TlsMode.IMPLICIT) != (
            self._listener is not None and self._listener.serves_tls
        )

    # endregion
