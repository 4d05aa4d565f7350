"""Per-server state that outlives a connection: counters the conditions read.

Attempt numbers, first-seen times, the open-session count, the tally of
sessions, messages and recipients (fakemx.counters) and each rule's matches
and firings (``times``, ``after``) live here, not in the rules, so ``reset()``
clears every stateful trigger at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from fakemx.counters import CountKey, CountPlan, Event, Scope, Tally, sender_key
from fakemx.fdbudget import FdBudget, process_budget
from fakemx.incidents import Incidents
from fakemx.journal import Journal
from fakemx.model import Profile, Rule
from fakemx.profileplan import ProfilePlan
from fakemx.sharedstate import SharedState
from fakemx.store import Store


class LiveSession(Protocol):
    def shut_down(self) -> None: ...

    def abort(self) -> None: ...


@dataclass
class ClientHistory:
    attempts: int = 0
    first_seen: float = 0.0


@dataclass
class RuleUse:
    """How often a rule with ``times``/``after`` matched and fired. Holding the rule keeps
    its id from being reused by another rule while the count is kept."""

    rule: Rule
    matched: int = 0
    fired: int = 0


def _use_key(rule: Rule, client_ip: str) -> tuple[int, str]:
    return id(rule), client_ip if rule.times_per == "client" else ""


@dataclass
class ServerState:
    """Shared by every connection of one server; touched only on its event loop."""

    name: str
    hostname: str
    profile: Profile
    store: Store
    journal: Journal
    clock: Callable[[], float]
    seed: int | None = None
    # Attempts counted per client address (a relay's retries), or per client and
    # sender: a classroom's students behind one relay each get their own (the lab).
    attempts_per_sender: bool = False
    tls_context: ssl.SSLContext | None = None
    incidents: Incidents = field(default_factory=Incidents)  # errors inside the server
    open_sessions: int = 0
    open_by_client: dict[str, int] = field(default_factory=dict)
    clients: dict[str, ClientHistory] = field(default_factory=dict)
    live: set[LiveSession] = field(default_factory=set)
    all_closed: asyncio.Event = field(default_factory=asyncio.Event)
    fds: FdBudget = field(default_factory=process_budget)  # shared by the whole process
    tally: Tally = field(default_factory=Tally)  # sessions, messages, recipients (per client...)
    # (id(rule), client or "") -> its matches and firings
    uses: dict[tuple[int, str], RuleUse] = field(default_factory=dict)
    # Set for a worker of `--workers N` (N > 1): attempts, first-seen times, the tally of
    # the server scopes and rule uses then live in the store, shared by every worker.
    shared: SharedState | None = None
    rng: random.Random = field(init=False)
    # The plan of the last profile asked about, kept with it (so its id stays its own).
    _plan: tuple[Profile, ProfilePlan] | None = field(default=None, init=False, repr=False)
    # id(rule) -> its index in the profile: a rule's name in the shared state
    _indexes: tuple[Profile, dict[int, int]] | None = field(default=None, init=False,
                                                            repr=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        if self.shared is None:
            self.shared = self.store.shared  # a worker's store shares them

    def arrive(self, client_ip: str) -> tuple[int, float]:
        """Count a new connection from ``client_ip``: (attempt number, seconds since first)."""
        now = self.clock()
        keys = ((Scope.CLIENT, client_ip), (Scope.SERVER, ""))
        if self.shared is not None:
            attempts, first_seen = self.shared.arrive(self.name, client_ip, now)
            self.shared.add(self.name, Event.SESSIONS, keys, now, self.counting(self.profile))
            return attempts, now - first_seen
        history = self.clients.get(client_ip)
        if history is None:
            history = self.clients[client_ip] = ClientHistory(first_seen=now)
        history.attempts += 1
        self.tally.add(Event.SESSIONS, keys, now, self.counting(self.profile))
        return history.attempts, now - history.first_seen

    def arrive_as(self, client_ip: str, sender: str) -> tuple[int, str]:
        """Count the session again as an attempt of ``sender`` through ``client_ip``, once
        its MAIL FROM is known: (attempt number, the key greylisting windows are kept by)."""
        key = f"{client_ip} {sender.casefold()}"
        if self.shared is not None:
            return self.shared.arrive(self.name, key, self.clock())[0], key
        history = self.clients.get(key)
        if history is None:
            history = self.clients[key] = ClientHistory(first_seen=self.clock())
        history.attempts += 1
        return history.attempts, key

    def count(self, event: Event, client_ip: str, sender: str | None,
              counting: CountPlan) -> None:
        """Count a message (at MAIL) or a recipient (at RCPT) for the client, sender, server."""
        keys = [(Scope.CLIENT, client_ip), (Scope.SERVER, "")]
        by_sender = sender_key(sender)
        if by_sender is not None:
            keys.append((Scope.SENDER, by_sender))
        if self.shared is not None:
            self.shared.add(self.name, event, keys, self.clock(), counting)
            return
        self.tally.add(event, keys, self.clock(), counting)

    def facts(self, keys: tuple[CountKey, ...], client_ip: str,
              sender: str | None) -> dict[CountKey, int]:
        """The server-wide counts ``keys`` name, for this client and sender."""
        owners = {Scope.CLIENT: client_ip, Scope.SERVER: "", Scope.SENDER: sender_key(sender)}
        if self.shared is not None:
            return self.shared.facts(self.name, keys, owners, self.clock())
        return self.tally.facts(keys, owners, self.clock())

    def plan(self, profile: Profile) -> ProfilePlan:
        """What ``profile`` asks of every session (worked out once per profile)."""
        if self._plan is None or self._plan[0] is not profile:
            self._plan = (profile, ProfilePlan.of(profile))
        return self._plan[1]

    def counting(self, profile: Profile) -> CountPlan:
        """What ``profile``'s rules count, and for how long."""
        return self.plan(profile).counting

    def rule_uses(self, rules: tuple[Rule, ...], client_ip: str) -> dict[int, tuple[int, int]]:
        """id(rule) -> (matched, fired) so far, for the counted rules among ``rules``
        (each client's own, for a rule with ``times_per = "client"``)."""
        if self.shared is not None:
            return self._shared_rule_uses(self.shared, rules, client_ip)
        found: dict[int, tuple[int, int]] = {}
        for rule in rules:
            use = self.uses.get(_use_key(rule, client_ip)) if rule.counted else None
            if use is not None:
                found[id(rule)] = (use.matched, use.fired)
        return found

    def used(self, matched: tuple[Rule, ...], fired: Rule | None, client_ip: str) -> None:
        """Count the matches of rules with times/after, and the firing of the one that won."""
        if self.shared is not None:
            indexes = self._rule_indexes()
            self.shared.used(self.name, (
                (indexes[id(rule)], _use_key(rule, client_ip)[1], rule is fired)
                for rule in matched if id(rule) in indexes))
            return
        for rule in matched:
            use = self.uses.setdefault(_use_key(rule, client_ip), RuleUse(rule))
            use.matched += 1
            use.fired += rule is fired

    def _shared_rule_uses(self, shared: SharedState, rules: tuple[Rule, ...],
                          client_ip: str) -> dict[int, tuple[int, int]]:
        """``rule_uses`` from the store: each rule asked by its index in the profile."""
        indexes = self._rule_indexes()
        by_index = {indexes[id(rule)]: rule for rule in rules
                    if rule.counted and id(rule) in indexes}
        found = shared.uses(self.name, by_index, client_ip)
        return {id(by_index[index]): use for index, use in found.items()}

    def _rule_indexes(self) -> dict[int, int]:
        """id(rule) -> its index in the running profile (found once per profile)."""
        if self._indexes is None or self._indexes[0] is not self.profile:
            self._indexes = (self.profile,
                             {id(rule): i for i, rule in enumerate(self.profile.rules)})
        return self._indexes[1]

    def seconds_since_first(self, client_ip: str) -> float:
        """Since the first attempt of ``client_ip`` (or of the key ``arrive_as`` gave)."""
        if self.shared is not None:
            first_seen = self.shared.first_seen(self.name, client_ip)
            return 0.0 if first_seen is None else self.clock() - first_seen
        history = self.clients.get(client_ip)
        return 0.0 if history is None else self.clock() - history.first_seen

    def reseed(self, seed: int | None) -> None:
        """Restart the draws of probability conditions from ``seed``."""
        self.seed = seed
        self.rng = random.Random(seed)

    def reset(self) -> None:
        """Forget attempt counts, first-seen times, every count and every rule's matches
        and firings, and restart the seeded draws."""
        self.clients.clear()
        self.tally.clear()
        self.uses.clear()
        if self.shared is not None:
            self.shared.reset(self.name)
        self.rng = random.Random(self.seed)

    async def close_sessions(self, grace_seconds: float) -> None:
        """Say 421 to every session (after its current command), reset what is left
        after ``grace_seconds``, and wait until each has been journaled."""
        if not self.live:
            return
        self.all_closed.clear()
        for session in list(self.live):
            session.shut_down()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_closed.wait(), grace_seconds)
        for session in list(self.live):
            session.abort()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.all_closed.wait(), 1.0)

    def session_opened(self, session: LiveSession, client_ip: str) -> int:
        """Count an open session; returns how many are open from ``client_ip``."""
        self.live.add(session)
        self.open_sessions += 1
        self.open_by_client[client_ip] = self.open_by_client.get(client_ip, 0) + 1
        return self.open_by_client[client_ip]

    def session_ended(self, session: LiveSession, client_ip: str) -> None:
        self.live.discard(session)
        self.open_sessions -= 1
        remaining = self.open_by_client.get(client_ip, 1) - 1
        if remaining:
            self.open_by_client[client_ip] = remaining
        else:
            self.open_by_client.pop(client_ip, None)
        if not self.live:
            self.all_closed.set()
