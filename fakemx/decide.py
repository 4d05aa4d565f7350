"""Which rule fires: pure decisions over a snapshot of the session, no I/O.

The first rule for the stage whose every condition holds wins, like a firewall
rule list. The seeded draw for ``probability`` is taken last, and only when all
other conditions hold, so the sequence of draws (and so a seeded run) does not
depend on rules that could not have fired anyway.

Counts (fakemx.counters) and a rule's earlier matches and firings (``times``,
``after``) are facts in the Context like any other; ``choose`` says which rules
matched so the server can count them, and counting is the server's job.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from fakemx.counters import CountKey, conditions
from fakemx.model import Rule, When
from fakemx.stages import Stage


@dataclass(frozen=True)
class Context:
    """What a condition may look at. Built by the server; users never construct one."""

    stage: Stage
    client_ip: str
    attempt: int = 1  # this client's connection count since the last reset, from 1
    seconds_since_first_attempt: float = 0.0
    concurrent: int = 1  # open sessions including this one
    helo: str | None = None
    sender: str | None = None
    recipient: str | None = None
    body_bytes: int = 0
    authenticated: bool = False  # a successful AUTH in this session
    mechanism: str | None = None  # stage auth: the client's mechanism and login
    login: str | None = None
    draw: Callable[[], float] = field(default=lambda: 0.0, compare=False)
    # (event, scope, window or None) -> the count, this event included (fakemx.counters)
    counts: Mapping[CountKey, int] = field(default_factory=dict)
    # id(rule) -> (times its conditions held, times it fired), for ``times`` and ``after``
    uses: Mapping[int, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Choice:
    """The rule that fires (or None), and every rule with ``times``/``after`` that matched."""

    rule: Rule | None
    matched: tuple[Rule, ...] = ()


def decide(rules: Iterable[Rule], ctx: Context) -> Rule | None:
    return choose(rules, ctx).rule


def choose(rules: Iterable[Rule], ctx: Context) -> Choice:
    """The first rule for the stage that fires, and the counted rules that matched on the way.

    A rule that has fired ``times`` times is skipped before its conditions are
    looked at (no draw spent on it); one with ``after = N`` whose conditions
    hold for the k-th time steps aside while k < N, and that match is counted.
    """
    matched: list[Rule] = []
    for rule in rules:
        if rule.stage is not ctx.stage:
            continue
        matches, fired = ctx.uses.get(id(rule), (0, 0))
        if rule.times is not None and fired >= rule.times:
            continue
        if not fires(rule.when, ctx):
            continue
        if rule.counted:
            matched.append(rule)
        if rule.after is not None and matches + 1 < rule.after:
            continue
        return Choice(rule, tuple(matched))
    return Choice(None, tuple(matched))


def fires(when: When, ctx: Context) -> bool:
    if when.first_attempts is not None and ctx.attempt > when.first_attempts:
        return False
    if (
        when.within_seconds is not None
        and ctx.seconds_since_first_attempt >= when.within_seconds
    ):
        return False
    if when.concurrent_above is not None and ctx.concurrent <= when.concurrent_above:
        return False
    if when.after_bytes is not None and ctx.body_bytes < when.after_bytes:
        return False
    if when.client_ip is not None and not _ip_in(ctx.client_ip, when.client_ip):
        return False
    if when.client_ip_not is not None and _ip_in(ctx.client_ip, when.client_ip_not):
        return False
    if when.authenticated is not None and ctx.authenticated is not when.authenticated:
        return False
    if when.mechanism is not None and ctx.mechanism not in when.mechanism:
        return False
    if when.login is not None and not _glob_any(ctx.login, when.login):
        return False
    if when.helo is not None and not _glob_any(ctx.helo, when.helo):
        return False
    if when.sender_domain is not None and not _glob_any(domain_of(ctx.sender), when.sender_domain):
        return False
    if when.recipient is not None and not _glob_any(ctx.recipient, when.recipient):
        return False
    if not all(count.holds(event, ctx.counts) for event, count in conditions(when)):
        return False
    if when.not_ is not None and fires(when.not_, ctx):
        return False
    return when.probability is None or ctx.draw() < when.probability


def domain_of(address: str | None) -> str | None:
    if address is None:
        return None
    return address.rpartition("@")[2]


def _glob_any(value: str | None, patterns: list[str]) -> bool:
    if value is None:
        return False
    folded = value.casefold()
    return any(fnmatchcase(folded, pattern.casefold()) for pattern in patterns)


def _ip_in(address: str, networks: list[str]) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)
