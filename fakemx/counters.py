"""Counting conditions: what is counted, per what, and the tally that keeps the counts.

Three events are counted: a *session* when a connection arrives, a *message*
when its MAIL FROM arrives, a *recipient* when its RCPT TO arrives. Each is
counted before the rules for its stage are decided, so a rule at ``mail``
sees the count with this message in it: ``above = 3`` fires for the 4th
message and every one after it.

A count is kept per scope:

- ``client``: per client address (every connection from it, since start or reset)
- ``sender``: per MAIL FROM address, case-folded (``<>`` is one sender too)
- ``server``: everything this server has seen
- ``session``: this connection only
- ``message``: this transaction only (recipients only: a new MAIL starts it again)

A profile says ``messages = { above = 3, per = "client" }`` (a total since
start or reset) or ``messages = { rate = "5/60s", per = "client" }`` (more
than 5 in the last 60 seconds, this one included). The tally lives in
``ServerState`` (and, for ``session`` and ``message``, in the session), so
``reset()`` clears it; ``decide`` only ever sees the numbers (fakemx.decide).
"""

from __future__ import annotations

import bisect
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, Protocol, TypeVar

from pydantic import Field, PrivateAttr, field_validator, model_validator

from fakemx.strict import Strict


class Event(StrEnum):
    """What is counted; the name is the key in ``when``."""

    SESSIONS = "sessions"
    MESSAGES = "messages"
    RECIPIENTS = "recipients"


class Scope(StrEnum):
    """Whose events a count adds up (``per``)."""

    CLIENT = "client"
    SENDER = "sender"
    SERVER = "server"
    SESSION = "session"
    MESSAGE = "message"


# A session is counted when it connects, before anyone has said MAIL FROM, and
# is one session: only a client's or the server's sessions make a count.
SCOPES_OF: dict[Event, frozenset[Scope]] = {
    Event.SESSIONS: frozenset({Scope.CLIENT, Scope.SERVER}),
    Event.MESSAGES: frozenset({Scope.CLIENT, Scope.SENDER, Scope.SERVER, Scope.SESSION}),
    Event.RECIPIENTS: frozenset(Scope),
}

# The tally of one server holds these; a session holds SESSION and MESSAGE itself.
SERVER_SCOPES = frozenset({Scope.CLIENT, Scope.SENDER, Scope.SERVER})

_RATE = re.compile(r"^\s*(\d+)\s*/\s*([0-9.]+(?:[eE][-+]?\d+)?)\s*([smh])\s*$")
_UNIT_SECONDS = {"s": 1.0, "m": 60.0, "h": 3600.0}

# (event, scope, window in seconds or None for the total since start or reset)
CountKey = tuple[Event, Scope, float | None]


def parse_rate(text: str) -> tuple[int, float]:
    """``"5/60s"`` -> (5, 60.0); ``m`` and ``h`` are minutes and hours. ValueError if not."""
    match = _RATE.match(text)
    seconds = float(match[2]) * _UNIT_SECONDS[match[3]] if match else 0.0
    if match is None or not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not a rate: write EVENTS/WINDOW, e.g. \"5/60s\","
                         " \"100/1h\" (more than 5 in any 60 seconds fires)")
    return int(match[1]), seconds


def scaled_rate(text: str, time_scale: float) -> str:
    """The rate with its window multiplied by ``time_scale`` (the count stays)."""
    limit, seconds = parse_rate(text)
    return f"{limit}/{seconds * time_scale!r}s"


class Count(Strict):
    """A condition on a count: ``above`` (a total) and/or ``rate`` (within a window)."""

    above: Annotated[int, Field(ge=0)] | None = Field(default=None, description=(
        "fires when more than this many have been counted in the scope since start or"
        " reset, this one included: above = 3 fires for the 4th and every later one"))
    rate: str | None = Field(default=None, description=(
        "\"N/WINDOW\" (window in s, m or h, e.g. \"5/60s\"): fires when more than N were"
        " counted in the scope in the last WINDOW, this one included; the window is"
        " scaled by time_scale"), examples=["5/60s", "100/1h"])
    per: Scope = Field(description=(
        "whose events are counted: client (address), sender (MAIL FROM), server (all),"
        " session (this connection), message (this transaction; recipients only)"))

    @field_validator("rate")
    @classmethod
    def _a_rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value

    # (events, seconds) of ``rate``, parsed once: every decision reads it.
    _window: tuple[int, float] | None = PrivateAttr()

    @model_validator(mode="after")
    def _something_to_compare(self) -> Count:
        if self.above is None and self.rate is None:
            raise ValueError("give above = N (a total) or rate = \"N/60s\" (a window), or both")
        self._window = None if self.rate is None else parse_rate(self.rate)
        return self

    @property
    def window(self) -> tuple[int, float] | None:
        """(events, seconds) of ``rate``, or None."""
        return self._window

    def keys(self, event: Event) -> list[CountKey]:
        """The numbers this condition reads from a Context."""
        keys: list[CountKey] = []
        if self.above is not None:
            keys.append((event, self.per, None))
        window = self.window
        if window is not None:
            keys.append((event, self.per, window[1]))
        return keys

    def holds(self, event: Event, counts: Mapping[CountKey, int]) -> bool:
        """Pure: does the count (as given in ``counts``) meet this condition?"""
        if self.above is not None and counts.get((event, self.per, None), 0) <= self.above:
            return False
        window = self.window
        return window is None or counts.get((event, self.per, window[1]), 0) > window[0]


# The JSON Schema's word on each counting key of ``when`` and of a rule (fakemx schema).
HELP: dict[str, str] = {
    Event.SESSIONS: "connections, counted when they arrive; per client or server",
    Event.MESSAGES: "messages, counted when their MAIL FROM arrives (accepted or not); per"
                    " client, sender, server or session",
    Event.RECIPIENTS: "recipients, counted when their RCPT TO arrives (accepted or not); per"
                      " client, sender, server, session or message",
    "not": "fires when these conditions do not all hold, e.g."
           " not = { sender_domain = [\"partner.example\"] }",
    "times": "fire at most this many times (for the whole server, or each client with"
             " times_per = \"client\"; since the rule was loaded or the last reset), then step"
             " aside so later rules decide",
    "after": "step aside for the first N-1 times the conditions hold, fire from the Nth on"
             " (for the whole server, or each client with times_per = \"client\"; since the"
             " rule was loaded or the last reset)",
    "times_per": "whose matches times and after count: the whole server (\"server\", the"
                 " default) or each client address (\"client\")",
}


class Conditions(Protocol):
    """The counting part of ``model.When`` (which cannot be imported here: it imports us)."""

    @property
    def sessions(self) -> Count | None: ...

    @property
    def messages(self) -> Count | None: ...

    @property
    def recipients(self) -> Count | None: ...

    @property
    def not_(self) -> Conditions | None: ...


_When = TypeVar("_When", bound=Conditions)


def conditions(when: Conditions) -> list[tuple[Event, Count]]:
    """The count conditions ``when`` gives itself (not those inside its ``not``)."""
    given = ((Event.SESSIONS, when.sessions), (Event.MESSAGES, when.messages),
             (Event.RECIPIENTS, when.recipients))
    return [(event, count) for event, count in given if count is not None]


def count_keys(when: Conditions) -> list[CountKey]:
    """Every number the conditions read from a Context, ``not`` included."""
    keys = [key for event, count in conditions(when) for key in count.keys(event)]
    return keys if when.not_ is None else keys + count_keys(when.not_)


def check_scopes(when: _When) -> _When:
    """``When``'s validator: ValueError when ``per`` cannot count the event."""
    for event, count in conditions(when):
        if count.per not in SCOPES_OF[event]:
            allowed = ", ".join(sorted(SCOPES_OF[event]))
            raise ValueError(f"{event} cannot be counted per {count.per} (use per = one of"
                             f" {allowed})")
    return when


def scale_when(when: dict[str, Any], time_scale: float) -> None:
    """Scale a dumped ``when`` in place: its durations and rate windows, ``not`` included."""
    if "within_seconds" in when:
        when["within_seconds"] *= time_scale
    for event in Event:
        count = when.get(str(event))
        if count is not None and "rate" in count:
            count["rate"] = scaled_rate(count["rate"], time_scale)
    if "not" in when:
        scale_when(when["not"], time_scale)


@dataclass(frozen=True)
class CountPlan:
    """What a profile's rules read: which (event, scope) pairs to count at all, and
    for which to keep event times, for how long (the longest rate window on it)."""

    wanted: frozenset[tuple[Event, Scope]]
    windows: Mapping[tuple[Event, Scope], float]


def plan(keys: Iterable[CountKey]) -> CountPlan:
    keys = list(keys)
    return CountPlan(frozenset((event, scope) for event, scope, _ in keys),
                     longest_windows(keys))


# Distinct (event, scope, key) slots one tally keeps: a per-sender count sees a
# new key per sender, and a client may send a million senders. Past the bound
# the oldest slot is forgotten (counted from 0 again if it comes back).
MAX_SLOTS = 100_000


class Tally:
    """Counts of events per (event, scope, key), and their recent times for rate windows.

    Touched only on the server's event loop. Only the (event, scope) pairs some
    rule reads are counted (a sink counts nothing), times are kept only where a
    rule has a window and only as long as the longest one, and at most
    ``max_slots`` keys are kept.
    """

    def __init__(self, max_slots: int = MAX_SLOTS) -> None:
        self._totals: dict[tuple[Event, Scope, str], int] = {}
        self._times: dict[tuple[Event, Scope, str], deque[float]] = {}
        self._max_slots = max_slots

    def add(self, event: Event, keys: Iterable[tuple[Scope, str]], now: float,
            counting: CountPlan) -> None:
        """Count one ``event`` for each (scope, key) a rule reads; keep its time where a
        window wants it."""
        for scope, key in keys:
            if (event, scope) not in counting.wanted:
                continue
            slot = (event, scope, key)
            self._totals[slot] = self._totals.get(slot, 0) + 1
            if len(self._totals) > self._max_slots:
                oldest = next(iter(self._totals))
                del self._totals[oldest]
                self._times.pop(oldest, None)
            keep = counting.windows.get((event, scope))
            if keep is None:
                continue
            times = self._times.setdefault(slot, deque())
            times.append(now)
            while times and times[0] <= now - keep:
                times.popleft()

    @property
    def slots(self) -> int:
        """How many (event, scope, key) counts are kept."""
        return len(self._totals)

    def total(self, event: Event, scope: Scope, key: str) -> int:
        return self._totals.get((event, scope, key), 0)

    def recent(self, event: Event, scope: Scope, key: str, seconds: float, now: float) -> int:
        """How many of these events happened in the last ``seconds`` (now included)."""
        times = self._times.get((event, scope, key))
        if not times:
            return 0
        return len(times) - bisect.bisect_right(times, now - seconds)

    def forget(self, scope: Scope) -> None:
        """Start ``scope``'s counts again (a session's message count at a new MAIL)."""
        for table in (self._totals, self._times):
            for slot in [s for s in table if s[1] is scope]:
                del table[slot]

    def clear(self) -> None:
        self._totals.clear()
        self._times.clear()

    def facts(self, keys: Iterable[CountKey], scope_keys: Mapping[Scope, str | None],
              now: float) -> dict[CountKey, int]:
        """The numbers for ``keys``: 0 where the scope has no key yet (no sender before MAIL)."""
        found: dict[CountKey, int] = {}
        for key in keys:
            event, scope, seconds = key
            owner = scope_keys.get(scope)
            if owner is None:
                continue
            found[key] = (self.total(event, scope, owner) if seconds is None
                          else self.recent(event, scope, owner, seconds, now))
        return found


def longest_windows(keys: Iterable[CountKey]) -> dict[tuple[Event, Scope], float]:
    """For each (event, scope) with a rate on it, the longest window to keep times for."""
    windows: dict[tuple[Event, Scope], float] = {}
    for event, scope, seconds in keys:
        if seconds is not None:
            windows[(event, scope)] = max(seconds, windows.get((event, scope), 0.0))
    return windows


def sender_key(sender: str | None) -> str | None:
    """The sender scope's key: the MAIL FROM address, case-folded; None before MAIL."""
    return None if sender is None else sender.casefold()
