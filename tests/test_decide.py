"""Rule decisions as pure functions: no sockets, no loop."""

from __future__ import annotations

import random

import pytest

from fakemx.counters import CountKey, Event, Scope
from fakemx.decide import Choice, Context, choose, decide, fires
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


# region counts, negation, times and after (issue #14) -------------------------

MESSAGES_PER_CLIENT = (Event.MESSAGES, Scope.CLIENT, None)


@pytest.mark.parametrize(
    ("when", "counts", "expected"),
    [
        ({"messages": {"above": 3, "per": "client"}}, {MESSAGES_PER_CLIENT: 3}, False),
        ({"messages": {"above": 3, "per": "client"}}, {MESSAGES_PER_CLIENT: 4}, True),
        ({"messages": {"above": 3, "per": "client"}}, {}, False),  # nothing counted yet
        ({"recipients": {"rate": "5/60s", "per": "sender"}},
         {(Event.RECIPIENTS, Scope.SENDER, 60.0): 6}, True),
        ({"recipients": {"rate": "5/1m", "per": "sender"}},
         {(Event.RECIPIENTS, Scope.SENDER, 60.0): 5}, False),
        # above and rate together: both must hold
        ({"sessions": {"above": 1, "rate": "2/1h", "per": "server"}},
         {(Event.SESSIONS, Scope.SERVER, None): 9, (Event.SESSIONS, Scope.SERVER, 3600.0): 2},
         False),
        ({"not": {"messages": {"above": 1, "per": "sender"}}},
         {(Event.MESSAGES, Scope.SENDER, None): 1}, True),
        ({"not": {"messages": {"above": 1, "per": "sender"}}},
         {(Event.MESSAGES, Scope.SENDER, None): 2}, False),
    ],
)
def test_count_conditions(when: dict[str, object], counts: dict[CountKey, int],
                          expected: bool) -> None:
    assert fires(When.model_validate(when), ctx(counts=counts)) is expected


@pytest.mark.parametrize(
    ("when", "facts", "expected"),
    [
        ({"not": {"client_ip": ["10.0.0.0/8"]}}, {"client_ip": "127.0.0.1"}, True),
        ({"not": {"client_ip": ["10.0.0.0/8"]}}, {"client_ip": "10.1.2.3"}, False),
        # not (A and B): fires when either fails
        ({"not": {"helo": ["a*"], "recipient": ["x@*"]}}, {"helo": "a.example"}, True),
        ({"not": {"helo": ["a*"], "recipient": ["x@*"]}},
         {"helo": "a.example", "recipient": "x@d"}, False),
        ({"not": {"not": {"helo": ["a*"]}}}, {"helo": "a.example"}, True),
        ({"not": {}}, {}, False),  # an empty when always holds, so its negation never does
    ],
)
def test_negation(when: dict[str, object], facts: dict[str, object], expected: bool) -> None:
    assert fires(When.model_validate(when), ctx(**facts)) is expected


def counted(**fields: object) -> Rule:
    return Rule.model_validate({"stage": "rcpt", "reply": {"code": 451}, **fields})


def test_times_steps_aside_after_n_firings_without_a_draw() -> None:
    limited, fallback = counted(times=2, when={"probability": 1.0}), rule()
    draws: list[int] = []

    def draw() -> float:
        draws.append(1)
        return 0.0

    pick = ctx(uses={id(limited): (2, 2)}, draw=draw)
    assert choose([limited, fallback], pick) == Choice(fallback, ())
    assert draws == []  # an exhausted rule spends no draw
    fresh = choose([limited, fallback], ctx(uses={id(limited): (1, 1)}))
    assert fresh == Choice(limited, (limited,))


@pytest.mark.parametrize(("matched_before", "fires_now"), [(0, False), (1, False), (2, True),
                                                           (7, True)])
def test_after_fires_from_the_nth_match(matched_before: int, fires_now: bool) -> None:
    late = counted(after=3)
    choice = choose([late], ctx(uses={id(late): (matched_before, 0)}))
    assert choice.rule is (late if fires_now else None)
    assert choice.matched == (late,)  # a match that stepped aside still counts


def test_a_rule_without_times_or_after_is_not_counted() -> None:
    plain = rule()
    assert choose([plain], ctx()) == Choice(plain, ())
