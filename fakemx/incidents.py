"""Server-side errors: exceptions inside fakemx, kept so that a test can fail on them.

On the wire nothing changes: an exception in a command still gets aiosmtpd's
``500 Error: (...)`` and a failed store write still gets ``452 4.3.1``. But a
test that only looks at its client may pass anyway, or fail somewhere far from
the cause. So each one is also recorded here, with its traceback;
``FakeMX.check()`` raises them as one ``ServerSideError`` and the pytest
fixtures call it at teardown.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

from fakemx.errors import FakeMXError


@dataclass(frozen=True)
class Incident:
    """One exception inside the server. fakemx records these; users only read them."""

    at: float  # Unix time
    where: str  # e.g. "session 3 after RCPT", "event loop"
    error: BaseException
    traceback: str

    def __str__(self) -> str:
        return f"{self.where}: {type(self.error).__name__}: {self.error}"


class Incidents:
    """Thread-safe: written on the server's loop, read by the test's thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Incident] = []

    def add(self, where: str, error: BaseException) -> None:
        text = "".join(traceback.format_exception(error))
        with self._lock:
            self._items.append(Incident(time.time(), where, error, text))

    def clear(self) -> None:
        """Forget recorded errors, e.g. after a test that provokes one on purpose."""
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __iter__(self) -> Iterator[Incident]:
        return iter(self.snapshot())

    def snapshot(self) -> list[Incident]:
        with self._lock:
            return list(self._items)


class ServerSideError(FakeMXError):
    """fakemx itself failed while the test ran (an exception, a store that refused a write).

    ``str()`` is one line naming each incident; ``incidents`` holds them, and
    the exception is chained to the first one so its traceback is shown.
    """

    def __init__(self, server: str, incidents: list[Incident]) -> None:
        self.server = server
        self.incidents = incidents
        listed = "; ".join(str(incident) for incident in incidents)
        count = f"{len(incidents)} server-side error{'s' if len(incidents) != 1 else ''}"
        super().__init__(f"fakemx {server}: {count}: {listed}")
        for incident in incidents:
            self.add_note(f"--- inside fakemx ({incident.where}) ---\n{incident.traceback}")
