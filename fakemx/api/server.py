"""Run the HTTP API with uvicorn on the event loop the SMTP servers already use.

    async with ApiServer(servers, host="127.0.0.1", port=0) as api:
        api.url   # http://127.0.0.1:PORT, the real port read back

No second thread or loop: ``uvicorn.Server.serve()`` runs as a task beside the
SMTP servers, on a socket fakemx binds itself (so port 0 works and a taken port
is a one-line error before anything starts). uvicorn's own signal handling is
turned off; the CLI's SIGINT/SIGTERM handler stops everything in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Self

from fakemx.addresses import listen_error
from fakemx.errors import FakeMXError

if TYPE_CHECKING:
    import uvicorn

    from fakemx.api.events import EventHub
    from fakemx.api.views import StudentMode
    from fakemx.server import FakeMX

TOKEN_ENV = "FAKEMX_API_TOKEN"
MAX_PORT = 65535
_STARTUP_TIMEOUT_SECONDS = 10.0
_SHUTDOWN_GRACE_SECONDS = 2


@dataclass(frozen=True)
class ApiAddress:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``)."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(text: str) -> ApiAddress:
    """``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT``; the host defaults to 127.0.0.1."""
    host, port = "127.0.0.1", text
    if text.startswith("["):
        host, _, port = text[1:].partition("]")
        port = port.removeprefix(":")
    elif ":" in text:
        host, _, port = text.rpartition(":")
    if not port.isdigit() or not host:
        raise FakeMXError(f"--api {text!r}: expected [HOST:]PORT, e.g. 8025 or 0.0.0.0:8025")
    if int(port) > MAX_PORT:
        raise FakeMXError(f"--api {text!r}: port {int(port)} is out of range (use 0..65535;"
                          " 0 = any free port)")
    return ApiAddress(host, int(port))


def check_exposure(address: ApiAddress, token: str | None) -> None:
    """Refuse to open the API beyond this machine without a token."""
    if token is None and not is_loopback(address.host):
        raise FakeMXError(
            f"--api {address.host}: the API can switch profiles and read mail, so binding a "
            f"non-loopback address needs a token: --api-token-file FILE, {TOKEN_ENV}=TOKEN"
            f" or --api-token TOKEN"
        )


def token_from(option: str | None, file: Path | None = None) -> str | None:
    """The API token: ``--api-token``, else ``--api-token-file``, else ``$FAKEMX_API_TOKEN``."""
    if option is not None:
        token: str | None = option
    elif file is not None:
        token = read_token_file(file)
    else:
        token = os.environ.get(TOKEN_ENV)
    return token or None


def read_token_file(path: Path) -> str:
    """The token in ``path``: its one line, without the trailing newline; one-line errors."""
    where = f"--api-token-file {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise FakeMXError(f"{where}: not UTF-8 text (write the token as text)") from None
    except OSError as exc:
        raise FakeMXError(f"{where}: cannot read it: {exc.strerror} (check the path and"
                          " that fakemx may read it)") from None
    token = text.removesuffix("\n").removesuffix("\r")
    if not token:
        raise FakeMXError(f"{where}: the file is empty (write the token in it, e.g."
                          " `openssl rand -hex 16 > FILE`)")
    if "\n" in token or "\r" in token:
        raise FakeMXError(f"{where}: more than one line (write only the token, on one line)")
    return token


# A reader whose window stays shut this long is gone (see _bind).
STALLED_READER_SECONDS = 60.0


def _bind(address: ApiAddress, stalled_reader_seconds: float) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    host = "127.0.0.1" if address.host == "localhost" else address.host
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        # Inherited by every accepted connection: a client that stops reading (an
        # abandoned event stream, a zero window) is aborted by the kernel after this
        # long, which frees its descriptor; uvicorn has no send timeout of its own.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT,
                        int(stalled_reader_seconds * 1000))
    try:
        sock.bind((host, address.port))
        sock.listen(128)  # listening before uvicorn runs: early clients wait, not refused
    except (OSError, OverflowError) as exc:
        sock.close()
        raise listen_error(exc, "serve the API", address.url.removeprefix("http://"),
                           "--api port") from None
    sock.setblocking(False)
    return sock


class ApiServer:
    """The API over ``servers``, served on the running loop (see the module doc)."""

    def __init__(
        self,
        servers: Sequence[FakeMX],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        stalled_reader_seconds: float = STALLED_READER_SECONDS,
        students: StudentMode | None = None,
        student_token: str | None = None,
    ) -> None:
        self.servers = list(servers)
        self.students = students  # a lab in student mode: what students may not see yet
        self.student_token = student_token
        self.stalled_reader_seconds = stalled_reader_seconds
        self.requested = ApiAddress(host, port)
        self.token = token
        check_exposure(self.requested, token)
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None
        self._events: EventHub | None = None

    @property
    def address(self) -> ApiAddress:
        if self._socket is None:
            return self.requested
        return ApiAddress(self.requested.host, self._socket.getsockname()[1])

    @property
    def url(self) -> str:
        return self.address.url

    @property
    def events(self) -> EventHub | None:
        """The live event streams (subscribers, how far behind they got); None until started."""
        return self._events

    @property
    def connections(self) -> int:
        """HTTP connections open now (event streams included)."""
        return 0 if self._server is None else len(self._server.server_state.connections)

    async def start(self) -> Self:
        import uvicorn  # lazily: see fakemx.api

        from fakemx.api.app import create_app
        from fakemx.api.runner import QuietServer

        app = create_app(self.servers, token=self.token,
                         loopback_only=is_loopback(self.requested.host),
                         students=self.students, student_token=self.student_token)
        self._socket = _bind(self.requested, self.stalled_reader_seconds)
        config = uvicorn.Config(
            app, log_config=None, log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=_SHUTDOWN_GRACE_SECONDS, server_header=False,
        )
        self._server = QuietServer(config)
        self._events = app.state.events
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]),
                                         name="fakemx-api")
        async with asyncio.timeout(_STARTUP_TIMEOUT_SECONDS):
            while not self._server.started:
                if self._task.done():  # failed before it started: report why
                    await self._task
                    raise FakeMXError("the API server stopped while starting")
                await asyncio.sleep(0.005)
        return self

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        if self._events is not None:
            self._events.close()  # end the pages' event streams first, so nothing holds shutdown
        for connection in list(self._server.server_state.connections):
            # A reader that stopped reading never lets its response finish: uvicorn
            # would wait out its grace, then cancel it with a traceback per stream.
            transport = getattr(connection, "transport", None)
            if isinstance(transport, asyncio.Transport) and transport.get_write_buffer_size():
                transport.abort()
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._server = self._task = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
