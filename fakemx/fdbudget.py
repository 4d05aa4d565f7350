"""File descriptors: what every connection takes, shared by all servers of a process.

At the common soft limit of 1,024, about 1,010 slow connections used to leave no
descriptor for the next accept(): a healthy client timed out with no reply while
asyncio's accept loop logged a traceback per try. Now fakemx raises the soft
limit to the hard one at start, and counts every connection it holds (SMTP
sessions, DNS over TCP) against what is left after a reserve for the store, the
listeners, the API and DNS; a connection over the budget gets its ``421`` and
is closed at once.
"""

from __future__ import annotations

import os
import resource

# Listeners (the lab has about 80), the store and its WAL, the API, DNS sockets,
# and one tick's worth of accepts (ACCEPTS_PER_TICK) before any is closed.
RESERVE = 256
# How many connections asyncio accepts per event-loop turn on one listener: the
# rest wait in the kernel's queue (its length stays SOMAXCONN).
ACCEPTS_PER_TICK = 64
_UNLIMITED_CAP = 1 << 20


def raise_soft_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit; the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _UNLIMITED_CAP if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):  # e.g. a sandbox that forbids it: live with soft
            pass
    return _UNLIMITED_CAP if soft == resource.RLIM_INFINITY else soft


def _open_now() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64


class FdBudget:
    """How many connections this process may hold at once, and how many it holds."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.in_use = 0

    def take(self) -> bool:
        """Count one connection; False (and nothing counted) when the budget is spent."""
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def give_back(self) -> None:
        self.in_use = max(0, self.in_use - 1)


_budget: FdBudget | None = None


def process_budget() -> FdBudget:
    """The one budget of this process, made (and the soft limit raised) on first use."""
    global _budget
    if _budget is None:
        soft = raise_soft_limit()
        _budget = FdBudget(soft - RESERVE - _open_now())
    return _budget
