"""What fakemx's DNS server was asked and what it answered.

Written on the server's event loop, read from any thread (tests, the CLI), so
reads and waits go through one condition variable, as in fakemx.journal.

The journal keeps the newest ``max_queries`` questions in a ring: a client
that sends millions of queries costs a fixed amount of memory, and every
per-query step (adding one, updating one whose delayed reply left, a waiter
counting them) costs the same with ten kept or ten thousand.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from typing import Any

DEFAULT_MAX_QUERIES = 10_000  # about 3.5 MB of queries at ~350 bytes each


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


def _same_name(a: str, b: str) -> bool:
    return a.rstrip(".").lower() == b.rstrip(".").lower()


class DnsJournal:
    """The newest ``max_queries`` queries since the last ``clear()``.

    Each query gets a ticket (a sequence number that never repeats, not even
    across ``clear()``); it sits at ``ticket % max_queries`` in the ring while
    it is among the newest, so ``replace(ticket, ...)`` is one index.
    """

    def __init__(self, max_queries: int = DEFAULT_MAX_QUERIES) -> None:
        if max_queries < 1:
            raise ValueError(f"max_queries must be at least 1 (got {max_queries})")
        self.max_queries = max_queries
        self._ring: list[Query | None] = [None] * max_queries
        self._next = 0  # the ticket the next query gets
        self._first = 0  # the oldest ticket still kept
        self._cleared = 0  # the first ticket after the last clear(): arrivals count from it
        self._changed = threading.Condition()

    def add(self, query: Query) -> int:
        """Keep ``query`` (dropping the oldest when full); its ticket for ``replace``."""
        with self._changed:
            ticket = self._next
            self._ring[ticket % self.max_queries] = query
            self._next += 1
            self._first = max(self._first, self._next - self.max_queries)
            self._changed.notify_all()
        return ticket

    def replace(self, ticket: int, new: Query) -> None:
        """Update an entry (a delayed reply that finally left); a no-op once it was dropped."""
        with self._changed:
            if self._first <= ticket < self._next:
                self._ring[ticket % self.max_queries] = new
                self._changed.notify_all()

    @property
    def queries(self) -> list[Query]:
        """A copy, oldest first."""
        with self._changed:
            return [self._at(ticket) for ticket in range(self._first, self._next)]

    @property
    def arrived(self) -> int:
        """Queries since the last ``clear()``, those no longer kept included."""
        with self._changed:
            return self._next - self._cleared

    def clear(self) -> None:
        with self._changed:
            self._first = self._cleared = self._next
            self._ring = [None] * self.max_queries

    def wait_for(self, count: int, timeout: float, name: str | None = None) -> bool:
        """Until ``count`` queries (for ``name``, if given) have arrived; False on timeout.

        Without a name this compares one counter. With one, each wake-up looks
        only at the queries added since the last, so a waiter costs O(1) per
        query however long the journal is (queries dropped before it looked
        are not counted: keep ``max_queries`` above what you wait for).
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            enough = self._arrivals(count) if name is None else self._named(count, name)
            return self._changed.wait_for(enough, timeout=max(0.0, deadline - time.monotonic()))

    def _at(self, ticket: int) -> Query:
        query = self._ring[ticket % self.max_queries]
        assert query is not None, "a kept ticket always has its query"
        return query

    def _arrivals(self, count: int) -> Callable[[], bool]:
        return lambda: self._next - self._cleared >= count

    def _named(self, count: int, name: str) -> Callable[[], bool]:
        """A predicate (called with the lock held) that counts only what is new each time."""
        seen = 0
        cursor = self._first
        cleared = self._cleared

        def enough() -> bool:
            nonlocal seen, cursor, cleared
            if cleared != self._cleared:  # cleared while waiting: count afresh
                seen, cleared = 0, self._cleared
            for ticket in range(max(cursor, self._first), self._next):
                seen += _same_name(self._at(ticket).name, name)
            cursor = self._next
            return seen >= count

        return enough

