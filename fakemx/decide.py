"""Which rule fires: pure decisions over a snapshot of the session, no I/O.

The first rule for the stage whose every condition holds wins, like a firewall
rule list. The seeded draw for ``probability`` is taken last, and only when all
other conditions hold, so the sequence of draws (and so a seeded run) does not
depend on rules that could not have fired anyway.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

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
    draw: Callable[[], float] = field(default=lambda: 0.0, compare=False)


def decide(rules: Iterable[Rule], ctx: Context) -> Rule | None:
    for rule in rules:
        if rule.stage is ctx.stage and fires(rule.when, ctx):
            return rule
    return None


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
    if when.helo is not None and not _glob_any(ctx.helo, when.helo):
        return False
    if when.sender_domain is not None and not _glob_any(domain_of(ctx.sender), when.sender_domain):
        return False
    if when.recipient is not None and not _glob_any(ctx.recipient, when.recipient):
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
