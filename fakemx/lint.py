"""Profile lint: rules that validate but cannot do what their author meant.

``fakemx check`` prints each finding as ``FILE: rules[N]: problem (fix)`` and
exits non-zero. Pure: a Profile in, findings out; nothing is started.

What is found:

- a rule that can never fire: the listener never lets a connection in
  (``refuse``, ``blackhole``); an earlier rule at the same stage always fires
  first; an earlier stage always ends the session or refuses what the stage
  needs (a greeting that is not 2xx, a refused EHLO, MAIL, RCPT or DATA); a
  ``starttls`` rule when STARTTLS is not offered; an ``auth`` rule, or one
  for logged-in clients only, in a profile without ``[auth]``;
- a reply the stage cannot give: a 2xx or 3xx to DATA (the client would send
  the message, and after a rule's reply fakemx does not read it), a 3xx
  anywhere else (RFC 5321 4.2: only DATA's 354 is intermediate), a greeting or
  STARTTLS 2xx other than 220 (RFC 5321 4.3.2, RFC 3207 4), a 2xx to STARTTLS
  (the client would start TLS and fakemx would not: use ``handshake``), a reply
  at ``connect`` that does not close (it is never sent: the greeting is next);
- ``after`` at stage ``body``, where every block read is a match;
- a count whose scope cannot see its event at the stage: per ``session`` before
  the session can have a message, per ``message`` before a RCPT, per ``sender``
  before MAIL FROM. Such a count is always 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from fakemx.actions import BreakHandshake, Drop, final_reply
from fakemx.counters import Count, Event, Scope, conditions
from fakemx.edge_actions import OtherServer
from fakemx.model import Profile, Rule, Stall, When
from fakemx.stages import ListenerState, Stage, TlsMode

# The stages every message passes, in order. STARTTLS is optional (a client may
# skip it) and QUIT comes after, so neither is on the path.
PATH = (Stage.CONNECT, Stage.GREETING, Stage.EHLO, Stage.MAIL, Stage.RCPT, Stage.DATA,
        Stage.BODY, Stage.END_OF_DATA)
# Stages where a refusal (4xx/5xx without closing) stops the client going further:
# aiosmtpd answers MAIL before EHLO, RCPT before MAIL and DATA before RCPT with 503.
_GATES = frozenset({Stage.GREETING, Stage.EHLO, Stage.MAIL, Stage.RCPT, Stage.DATA})
# Where each scope has nothing to count yet: before the first MAIL (session), before
# a RCPT of this transaction (message), before MAIL FROM names the sender.
_BLIND: dict[Scope, frozenset[Stage]] = {
    Scope.SESSION: frozenset({Stage.CONNECT, Stage.GREETING}),
    Scope.MESSAGE: frozenset({Stage.CONNECT, Stage.GREETING, Stage.EHLO, Stage.STARTTLS,
                              Stage.MAIL}),
    Scope.SENDER: frozenset({Stage.CONNECT, Stage.GREETING, Stage.EHLO, Stage.STARTTLS}),
}


@dataclass(frozen=True)
class Finding:
    """One problem with ``rules[index]``, and how to fix it."""

    index: int
    problem: str
    fix: str

    def line(self, source: str) -> str:
        return f"{source}: rules[{self.index}]: {self.problem} ({self.fix})"


def lint(profile: Profile) -> list[Finding]:
    """Every finding for ``profile``, in rule order."""
    findings: list[Finding] = []
    for index, rule in enumerate(profile.rules):
        found = _never_fires(profile, index, rule) or _wrong_reply(rule)
        if found is not None:
            findings.append(Finding(index, *found))
        findings.extend(Finding(index, *blind) for blind in _blind_counts(rule))
        if rule.after is not None and rule.stage is Stage.BODY:
            # The body's rules are asked once per block read, and each block is a match.
            findings.append(Finding(index, "after at stage body counts every block of every"
                                    " message read, not messages", "use when.after_bytes, or"
                                    " put the rule at stage end_of_data"))
    return findings


def always_fires(rule: Rule) -> bool:
    """No condition, no ``times`` or ``after``: the rule fires every time its stage comes."""
    return rule.when == When() and not rule.counted


def ends_session(rule: Rule) -> bool:
    """Does the action always end the session (drop, close, endless stall, broken TLS,
    another protocol's server)?"""
    action = rule.action
    if isinstance(action, Drop | BreakHandshake | OtherServer):
        return True
    if isinstance(action, Stall):
        if action.seconds is None:
            return True
        then = action.then.action if action.then is not None else None
        if isinstance(then, Drop):
            return True
    reply = final_reply(action)
    return reply is not None and reply.close is not None


def refuses(rule: Rule) -> bool:
    """Does the action answer with a 4xx/5xx (so a client cannot go on past the stage)?"""
    reply = final_reply(rule.action)
    return reply is not None and reply.code >= 400


def _never_fires(profile: Profile, index: int, rule: Rule) -> tuple[str, str] | None:
    if profile.listener is not ListenerState.OPEN:
        return (f"never fires: with listener = \"{profile.listener}\" no connection reaches"
                " any stage", "remove the rule, or set listener = \"open\"")
    if profile.auth is None and (rule.stage is Stage.AUTH or rule.when.authenticated is True):
        return ("never fires: the profile has no [auth], so no client logs in",
                "add an [auth] table with the users, or remove the rule")
    if rule.stage is Stage.STARTTLS and profile.tls.mode is not TlsMode.STARTTLS:
        return (f"never fires: with tls.mode = \"{profile.tls.mode}\" STARTTLS is not"
                " offered", "remove the rule, or set tls = { mode = \"starttls\" }")
    if rule.stage is Stage.BDAT and not profile.extensions.chunking:
        return ("never fires: CHUNKING is not advertised, so no client sends BDAT",
                "set chunking = true in [extensions]")
    # At its own stage only the rules above count; an earlier stage stops it wherever
    # its rule is written.
    for number, earlier in enumerate(profile.rules):
        if number == index or not always_fires(earlier):
            continue
        if earlier.stage is rule.stage:
            if number > index:
                continue
            return (f"never fires: rules[{number}] at stage {rule.stage} has no condition"
                    " and always fires first",
                    "move this rule above it, or give that rule a condition")
        if _before(earlier.stage, rule.stage) and ends_session(earlier):
            return (f"never fires: rules[{number}] always ends the session at stage"
                    f" {earlier.stage}, before {rule.stage}",
                    "give that rule a condition, or remove this one")
        if (_before(earlier.stage, rule.stage) and earlier.stage in _GATES
                and refuses(earlier) and rule.stage is not Stage.QUIT):
            return (f"never fires: rules[{number}] always refuses stage {earlier.stage},"
                    f" so no client gets to {rule.stage}",
                    "give that rule a condition, or remove this one")
    return None


def _before(first: Stage, then: Stage) -> bool:
    """Does every session that reaches ``then`` pass ``first`` before it?"""
    if then is Stage.QUIT:  # a client may say QUIT as soon as it is greeted
        return first in (Stage.CONNECT, Stage.GREETING)
    if first not in PATH:
        return False
    if then is Stage.STARTTLS or then is Stage.AUTH:  # optional, after EHLO
        return PATH.index(first) <= PATH.index(Stage.EHLO)
    return then in PATH and PATH.index(first) < PATH.index(then)


def _wrong_reply(rule: Rule) -> tuple[str, str] | None:
    reply = final_reply(rule.action)
    if reply is None:
        return None
    code, stage = reply.code, rule.stage
    if stage is Stage.DATA and code < 400:
        return (f"{code} to DATA: the client would send the message, and after a rule's"
                " reply fakemx does not read it",
                "answer 4xx/5xx to refuse DATA, use accept = true, or move the reply to"
                " stage end_of_data")
    if 300 <= code < 400:
        return (f"{code} at stage {stage}: only DATA's 354 is an intermediate reply"
                " (RFC 5321 4.2)", "use a 2xx, 4xx or 5xx code")
    if stage is Stage.STARTTLS and code < 300:
        return (f"{code} to STARTTLS: the client would start TLS and fakemx would not",
                "use handshake = \"alert\", \"rst\" or \"stall\", or accept = true")
    if stage is Stage.GREETING and code < 300 and code != 220:
        return (f"{code} greeting: a server greets with 220 (RFC 5321 4.3.2)",
                "use code 220, or mask_banner to change the greeting's text")
    if stage is Stage.CONNECT and reply.close is None:
        return ("a reply at stage connect is never sent unless it closes: the greeting"
                " comes next", "add close = true, or move the rule to stage greeting")
    return None


def _blind_counts(rule: Rule) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for event, count in _counts(rule.when):
        if rule.stage in _BLIND.get(count.per, frozenset()):
            found.append((
                f"{event} per {count.per} at stage {rule.stage}: {_why(count.per)}, so the"
                " count is always 0",
                f"move the rule to a later stage, or count per {_instead(count.per)}"))
    return found


def _counts(when: When) -> list[tuple[Event, Count]]:
    nested = _counts(when.not_) if when.not_ is not None else []
    return conditions(when) + nested


def _why(scope: Scope) -> str:
    return {
        Scope.SESSION: "the session has had no MAIL FROM yet",
        Scope.MESSAGE: "this message has had no RCPT TO yet",
        Scope.SENDER: "no MAIL FROM has named the sender yet",
    }[scope]


def _instead(scope: Scope) -> str:
    return "client" if scope is not Scope.MESSAGE else "session"
