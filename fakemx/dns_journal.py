"""What fakemx's DNS server was asked and what it answered.

Written on the server's event loop, read from any thread (tests, the CLI), so
reads and waits go through one condition variable, as in fakemx.journal.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any


@dataclasses.dataclass(frozen=True)
class Query:
    """One DNS question. fakemx builds these; read them through ``DnsServer.queries``."""

    at: float  # Unix time it arrived
    client: str  # "ip:port"
    transport: str  # "udp" or "tcp"
    name: str  # as asked, e.g. "example.test."
    type: str  # e.g. "MX"
    rcode: str  # e.g. "NOERROR", "SERVFAIL"; what was (or would have been) sent
    answer: tuple[str, ...] = ()  # the answer section, one record a line, zone-file form
    fault: str | None = None  # e.g. "SERVFAIL", "no answer", "delay 30s", "truncated"
    answered: bool = True  # False when the fault is "no answer", or a delayed reply never left
    truncated: bool = False  # sent over UDP with TC set and no records (fault, or too big)

    @property
    def outcome(self) -> str:
        """The answer in words: ``NOERROR: example.test. 300 IN MX 10 mx.example.test.``."""
        if not self.answered:
            return "no answer"
        shown = "; ".join(self.answer) if self.answer else "(empty)"
        flag = " (truncated)" if self.truncated else ""
        return f"{self.rcode}{flag}: {shown}"

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "answer": list(self.answer)}


class DnsJournal:
    def __init__(self) -> None:
        self._queries: list[Query] = []
        self._changed = threading.Condition()

    def add(self, query: Query) -> None:
        with self._changed:
            self._queries.append(query)
            self._changed.notify_all()

    def replace(self, old: Query, new: Query) -> None:
        """Update an entry in place (a delayed reply that finally left, or never did)."""
        with self._changed:
            for index, item in enumerate(self._queries):
                if item is old:
                    self._queries[index] = new
            self._changed.notify_all()

    @property
    def queries(self) -> list[Query]:
        """A copy, oldest first."""
        with self._changed:
            return list(self._queries)

    def clear(self) -> None:
        with self._changed:
            self._queries.clear()

    def wait_for(self, count: int, timeout: float, name: str | None = None) -> bool:
        """Until ``count`` queries (for ``name``, if given) have arrived; False on timeout."""

        def enough() -> bool:
            return sum(name is None or q.name.rstrip(".").lower() == name.rstrip(".").lower()
                       for q in self._queries) >= count

        deadline = time.monotonic() + timeout
        with self._changed:
            return self._changed.wait_for(enough, timeout=max(0.0, deadline - time.monotonic()))
