"""Run-time changes to a profile, validated before anything changes.

A rule given at run time (``mx.add_rule``, ``mx.rule``, the pytest marker) goes
through the same pydantic validator as a profile file, so a dict works and a
mistake is the same one-line ``ProfileError``. Profiles are frozen: every
change builds a new Profile and the server swaps it in whole, so a connection
keeps the snapshot it started with and changes apply from the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fakemx.errors import FakeMXError, ProfileError
from fakemx.model import Profile, Rule
from fakemx.profiles import profile_from_data

RuleSpec = Rule | Mapping[str, Any]


class UnknownRuleError(FakeMXError, KeyError):
    """``remove_rule`` was given a name no rule of the running profile has."""

    def __init__(self, name: str, names: list[str]) -> None:
        self.name = name
        have = ", ".join(names) if names else "none"
        super().__init__(f"no rule named {name!r} in the running profile (rules: {have})")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def rule_from_spec(spec: RuleSpec, source: str) -> Rule:
    """A Rule from a Rule or a mapping, validated like a rule in a profile file."""
    if isinstance(spec, Rule):
        return spec
    try:
        return profile_from_data({"rules": [dict(spec)]}, source).rules[0]
    except ProfileError as exc:
        # Report the field as the caller wrote it: "reply.code", not "rules[0].reply.code".
        field = exc.field.removeprefix("rules[0]").lstrip(".")
        raise ProfileError(source, field, exc.problem, exc.fix) from None


def scaled_rule(rule: Rule, time_scale: float) -> Rule:
    """``rule`` with its durations scaled like the profile it joins."""
    return Profile(rules=[rule]).scaled(time_scale).rules[0]


def with_rule(profile: Profile, rule: Rule) -> Profile:
    """``profile`` with ``rule`` checked first at its stage, so it overrides the profile's own."""
    return profile.model_copy(update={"rules": [rule, *profile.rules]})


def without_rule(profile: Profile, name: str) -> tuple[Profile, list[Rule]]:
    """``profile`` without the rules labelled ``name``; (new profile, removed rules)."""
    removed = [rule for rule in profile.rules if rule.label == name]
    if not removed:
        raise UnknownRuleError(name, [rule.label for rule in profile.rules])
    kept = [rule for rule in profile.rules if rule.label != name]
    return profile.model_copy(update={"rules": kept}), removed


def without_exact(profile: Profile, rule: Rule) -> Profile | None:
    """``profile`` without this very rule object (a scoped rule undoing itself), or None.

    None when the rule is no longer there, e.g. another profile was loaded meanwhile.
    """
    kept = [r for r in profile.rules if r is not rule]
    if len(kept) == len(profile.rules):
        return None
    return profile.model_copy(update={"rules": kept})


def profile_with_overrides(
    base: Profile, fields: Mapping[str, Any], rules: list[RuleSpec], source: str
) -> Profile:
    """``base`` with profile fields replaced and ``rules`` put first, validated as one profile.

    This is how the pytest marker's keyword arguments become a profile.
    """
    data = base.model_dump(exclude_none=True)
    data.update(fields)
    given = [
        rule.model_dump(exclude_none=True) if isinstance(rule, Rule) else dict(rule)
        for rule in rules
    ]
    data["rules"] = [*given, *data.get("rules", [])]
    return profile_from_data(data, source)
