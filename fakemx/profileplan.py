"""What a profile asks of every session, worked out once per profile.

A session decides at every stage: which rules the stage has, which counts they
read, and what is counted at all. All of that depends on the profile alone, so
``ServerState.plan`` keeps one plan per profile and each session holds the plan
of its snapshot, instead of asking the profile again at every stage (a pydantic
model: reading one of its private attributes costs microseconds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fakemx.counters import CountKey, CountPlan, count_keys, plan
from fakemx.model import Profile, Rule
from fakemx.stages import Stage


@dataclass(frozen=True)
class ProfilePlan:
    rules: Mapping[Stage, tuple[Rule, ...]]  # the profile's rules at each stage, in order
    count_keys: Mapping[Stage, tuple[CountKey, ...]]  # the counts each stage's rules read
    counting: CountPlan  # what the whole profile counts, and for how long

    @classmethod
    def of(cls, profile: Profile) -> ProfilePlan:
        rules = {stage: profile.rules_at(stage) for stage in Stage}
        keys = {stage: tuple(key for rule in at for key in count_keys(rule.when))
                for stage, at in rules.items()}
        return cls(rules, keys, plan(key for at in keys.values() for key in at))
