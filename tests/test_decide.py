"""Rule decisions as pure functions: no sockets, no loop."""

from __future__ import annotations

import random

import pytest

from fakemx.decide import Context, decide, fires
from fakemx.model import Rule, When
from fakemx.stages import Stage


def ctx(**facts: object) -> Context:
    base: dict[str, object] = {"stage": Stage.RCPT, "client_ip": "127.0.0.1"}
    base.update(facts)
    return Context(**base)  # type: ignore[arg-type]


def rule(stage: str = "rcpt", **when: object) -> Rule:
    return Rule.model_validate({"stage": stage, "when": when, "reply": {"code": 451}})


def test_empty_when_always_fires() -> None:
    assert fires(When(), ctx())


@pytest.mark.parametrize(
    ("when", "facts", "expected"),
    [
        ({"first_attempts": 2}, {"attempt": 2}, True),
        ({"first_attempts": 2}, {"attempt": 3}, False),
        ({"within_seconds": 300}, {"seconds_since_first_attempt": 299.9}, True),
        ({"within_seconds": 300}, {"seconds_since_first_attempt": 300}, False),
        ({"concurrent_above": 2}, {"concurrent": 3}, True),
        ({"concurrent_above": 2}, {"concurrent": 2}, False),
        ({"after_bytes": 1024}, {"body_bytes": 1024}, True),
        ({"after_bytes": 1024}, {"body_bytes": 1023}, False),
        ({"client_ip": ["127.0.0.0/8"]}, {"client_ip": "127.9.9.9"}, True),
        ({"client_ip": ["127.0.0.0/8"]}, {"client_ip": "::ffff:127.0.0.1"}, True),
        ({"client_ip": ["10.0.0.0/8"]}, {"client_ip": "127.0.0.1"}, False),
        ({"client_ip_not": ["192.0.2.0/24"]}, {"client_ip": "127.0.0.1"}, True),
        ({"client_ip_not": ["192.0.2.0/24"]}, {"client_ip": "192.0.2.7"}, False),
        ({"helo": ["localhost*"]}, {"helo": "LOCALHOST.localdomain"}, True),
        ({"helo": ["localhost*"]}, {"helo": None}, False),
        ({"sender_domain": ["*.onmicrosoft.com"]}, {"sender": "a@Contoso.onmicrosoft.com"}, True),
        ({"sender_domain": ["*.onmicrosoft.com"]}, {"sender": "a@example.com"}, False),
        ({"recipient": ["blocked*@*"]}, {"recipient": "blocked-1@d.example"}, True),
        ({"probability": 0.5}, {"draw": lambda: 0.49}, True),
        ({"probability": 0.5}, {"draw": lambda: 0.5}, False),
        ({"first_attempts": 1, "client_ip": ["127.0.0.1"]}, {"attempt": 1}, True),
        ({"first_attempts": 1, "client_ip": ["10.0.0.1"]}, {"attempt": 1}, False),
    ],
)
def test_conditions(when: dict[str, object], facts: dict[str, object], expected: bool) -> None:
    assert fires(When.model_validate(when), ctx(**facts)) is expected


def test_first_matching_rule_wins_and_stage_must_match() -> None:
    rules = [rule("mail"), rule(first_attempts=1), rule()]
    assert decide(rules, ctx(attempt=1)) is rules[1]
    assert decide(rules, ctx(attempt=2)) is rules[2]
    assert decide(rules, ctx(stage=Stage.DATA)) is None


def test_probability_draws_only_when_everything_else_holds() -> None:
    draws: list[float] = []
    rng = random.Random(1)

    def draw() -> float:
        draws.append(rng.random())
        return draws[-1]

    probable = rule(probability=0.5, client_ip=["10.0.0.0/8"])
    decide([probable], ctx(draw=draw))
    assert draws == []  # the address did not match, so no draw was spent
