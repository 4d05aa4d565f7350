"""uvicorn as fakemx runs it: on the caller's loop, without signal handlers of its own.

Imported only by ``ApiServer.start`` (uvicorn is not needed without ``--api``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import uvicorn


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT and SIGTERM to fakemx's CLI.

    uvicorn's ``serve()`` installs its own handlers and re-raises the signal
    when it stops; fakemx stops the SMTP servers and the API in order itself.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
