"""A running fakemx with its HTTP API, for the API and web page tests.

The servers and the API run on one event loop in a background thread, as the
CLI runs them (``fakemx serve|lab --api``); the tests talk to them over real
sockets only: httpx for HTTP, smtplib for SMTP, a browser for the page.
"""

from __future__ import annotations

import asyncio
import smtplib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from fakemx import FakeMX
from fakemx.api.server import ApiServer
from fakemx.api.views import StudentMode
from fakemx.store import Store

TIMEOUT_SECONDS = 5.0


@dataclass
class Running:
    url: str
    servers: list[FakeMX]
    token: str | None = None
    clients: list[httpx.Client] = field(default_factory=list)

    def server(self, name: str | None = None) -> FakeMX:
        if name is None:
            return self.servers[0]
        return next(mx for mx in self.servers if mx.name == name)

    def http(self, *, token: str | None = None) -> httpx.Client:
        """A client for the API; sends the token when one is given."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.url, timeout=TIMEOUT_SECONDS, headers=headers)
        self.clients.append(client)
        return client


@contextmanager
def running_api(
    state_dir: Path,
    profiles: Sequence[str | None] = (None,),
    *,
    names: Sequence[str] | None = None,
    token: str | None = None,
    api_host: str = "127.0.0.1",
    students: StudentMode | None = None,
    student_token: str | None = None,
) -> Iterator[Running]:
    """FakeMX servers (named like the lab's when ``names`` is given, sharing one store)
    and the API over them, all on one loop in a thread."""
    ready = threading.Event()
    result: dict[str, object] = {}
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None

    async def serve() -> None:
        nonlocal stop, loop
        loop, stop = asyncio.get_running_loop(), asyncio.Event()
        store = Store(state_dir) if names else None
        servers = [
            FakeMX(profile, state_dir=state_dir, store=store, name=names[i] if names else None)
            for i, profile in enumerate(profiles)
        ]
        try:
            for mx in servers:
                await mx.start()
            async with ApiServer(servers, host=api_host, port=0, token=token,
                                 students=students, student_token=student_token) as api:
                host = "127.0.0.1" if api_host in ("0.0.0.0", "localhost") else api_host
                result["running"] = Running(f"http://{host}:{api.address.port}", servers, token)
                ready.set()
                await stop.wait()
        except BaseException as exc:
            result["error"] = exc
            ready.set()
            raise
        finally:
            for mx in servers:
                await mx.stop()
            if store is not None:
                store.close()

    thread = threading.Thread(target=lambda: asyncio.run(serve()), name="fakemx-api-test")
    thread.start()
    if not ready.wait(TIMEOUT_SECONDS * 2):
        raise TimeoutError("fakemx with its API did not start")
    if "error" in result:
        thread.join(TIMEOUT_SECONDS)
        raise AssertionError(f"fakemx did not start: {result['error']!r}")
    running = result["running"]
    assert isinstance(running, Running)
    try:
        yield running
    finally:
        for client in running.clients:
            client.close()
        assert loop is not None
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(TIMEOUT_SECONDS * 2)
        assert not thread.is_alive(), "fakemx with its API did not stop"
        for mx in running.servers:
            mx.check()


def send(mx: FakeMX, to: str = "bob@example.test", subject: str = "hello") -> None:
    """One message through smtplib; raises what smtplib raises when the server fails it."""
    message = f"From: alice@example.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nHi Bob.\r\n"
    with smtplib.SMTP(mx.host, mx.port, timeout=TIMEOUT_SECONDS) as client:
        client.sendmail("alice@example.test", [to], message)
