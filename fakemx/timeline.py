"""Where a session broke, and a server's sessions as text for people (pytest, JUnit XML).

The break point is the one the lab page marks (``breakIndex`` in
``fakemx/web/app.js``): the first 4xx/5xx reply, which is what the relay sees;
else the note of the rule that fired (a drop, a stall); else the last event
when fakemx ended the session. The page and this module must agree, so change
both or neither.

Journal events carry no stage, so the stage of the break is worked out by
walking the events: a rule's note names its stage (``rule mail-drop fires
after MAIL``), a client command moves to its stage, the ``354`` to the body,
fakemx's ``body: N bytes`` note to the end of data.

Nothing here imports the journal or the server at run time: ``Session`` uses
these functions, and the pytest plugin imports this module only on a failure.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from fakemx.clientbytes import shown
from fakemx.stages import Stage

if TYPE_CHECKING:
    from fakemx.journal import Event, Session, StoredMessage
    from fakemx.server import FakeMX

# Outcomes in which fakemx, not the client, ended the session: app.js's BROKEN_BY_FAKEMX.
# Strings rather than Outcome members because journal.py imports this module (Outcome
# is a StrEnum, so its members compare equal to these).
_BROKEN_BY_FAKEMX = frozenset({"dropped_fin", "dropped_rst", "reset_after_reply", "error"})
_DROPPED = frozenset({"dropped_fin", "dropped_rst"})

_COMMAND_STAGES = {
    "EHLO": Stage.EHLO,
    "HELO": Stage.EHLO,
    "LHLO": Stage.EHLO,
    "STARTTLS": Stage.STARTTLS,
    "AUTH": Stage.AUTH,
    "MAIL": Stage.MAIL,
    "RCPT": Stage.RCPT,
    "DATA": Stage.DATA,
    "BDAT": Stage.BDAT,
    "QUIT": Stage.QUIT,
}
_STAGE_BY_LABEL = {stage.label: stage for stage in Stage}
_RULE_NOTE = "rule "  # smtp.py notes "rule <label> fires <stage label>"
_FIRES = " fires "

# The short report (the default): the last sessions and messages, each line cut.
SHORT_SESSIONS = 5
SHORT_MESSAGES = 5
SHORT_WIDTH = 120
SHORT_HEAD_LINES = 10  # a long session: its start, the lines around the break, its end
SHORT_TAIL_LINES = 20
SHORT_BREAK_CONTEXT = 3


class BreakKind(StrEnum):
    """What broke a session."""

    REPLY = "reply"  # a 4xx or 5xx reply
    DROP = "drop"  # fakemx closed (FIN) or reset (RST) the connection without a reply
    STALL = "stall"  # fakemx went silent
    RULE = "rule"  # another rule fired, e.g. a masked banner or a stripped extension
    FAILED = "failed"  # a TLS or protocol failure ended the session


@dataclass(frozen=True)
class Break:
    """Where and how a session broke: ``Session.first_error``. fakemx builds these.

    Attributes:
        stage: the stage it broke at (``Stage.MAIL`` for a reset after MAIL FROM).
        kind: a 4xx/5xx reply, a drop, a stall, another rule, or a failure.
        text: the reply line; for a drop, how fakemx ended it (``fakemx reset
            (RST) after MAIL``); for a stall, the note (``stall 30 s``); else
            fakemx's note. Raw: may hold client bytes, see ``clientbytes.shown``.
        index: the position of the marked event in ``Session.events``.
    """

    stage: Stage
    kind: BreakKind
    text: str
    index: int

    def __str__(self) -> str:
        return f"{self.kind} {self.stage.label}: {shown(self.text)}"


def first_error(session: Session) -> Break | None:
    """The first 4xx/5xx reply, drop or stall of ``session``; None when it went fine."""
    events = list(session.events)  # the server's thread may still be appending
    outcome = str(session.outcome)
    for index, event in enumerate(events):
        if event.kind == "server" and _is_error_reply(event.text):
            return Break(_stage_at(events, index), BreakKind.REPLY, event.text, index)
    for index, event in enumerate(events):
        if event.kind == "fakemx" and event.text.startswith(_RULE_NOTE):
            return _rule_break(events, index, outcome, session.ended_by)
    if outcome in _BROKEN_BY_FAKEMX and events:
        kind = BreakKind.DROP if outcome in _DROPPED else BreakKind.FAILED
        return Break(session.stage, kind, events[-1].text, len(events) - 1)
    return None


def broke_at(session: Session) -> Stage | None:
    """The stage ``session`` broke at; None when it went fine."""
    found = first_error(session)
    return None if found is None else found.stage


def _is_error_reply(text: str) -> bool:
    return len(text) >= 3 and text[0] in "45" and text[1:3].isdigit()


def _rule_break(events: Sequence[Event], index: int, outcome: str, ended_by: str) -> Break:
    """The break marked by a rule's note: a stall, a drop, or whatever else the rule did."""
    stage = _stage_at(events, index)
    after = events[index + 1 :]
    client_spoke = any(e.kind == "client" for e in after)
    own_notes = [e.text for e in after if e.kind == "fakemx"]
    stall = next((text for text in own_notes if text.startswith("stall ")), None)
    if stall is not None:
        return Break(stage, BreakKind.STALL, stall, index)
    if outcome in _DROPPED and not client_spoke:  # the session ended with this rule
        return Break(stage, BreakKind.DROP, ended_by, index)
    return Break(stage, BreakKind.RULE, events[index].text, index)


def _stage_at(events: Sequence[Event], index: int) -> Stage:
    """The stage ``events[index]`` happened at, from the events before it."""
    stage = Stage.CONNECT
    for event in events[: index + 1]:
        if event.kind == "client":
            verb = event.text.split(" ", 1)[0].upper()
            stage = _COMMAND_STAGES.get(verb, stage)  # RSET, NOOP...: the stage stays
        elif event.kind == "fakemx":
            if event.text.startswith(_RULE_NOTE) and _FIRES in event.text:
                label = event.text.rsplit(_FIRES, 1)[1]
                stage = _STAGE_BY_LABEL.get(label, stage)
            elif event.text.startswith("body: "):
                stage = Stage.END_OF_DATA
        elif event.text.startswith("354"):
            stage = Stage.BODY
        elif stage is Stage.CONNECT:  # fakemx's first line is the greeting
            stage = Stage.GREETING
    return stage


# region text for people ------------------------------------------------------

_WHO = {"client": ">", "server": "<", "fakemx": "·"}
_CONTINUED = re.compile(r"\d{3}-")  # a reply line with more to come (RFC 5321 4.2.1)


def session_text(
    session: Session, *, width: int | None = SHORT_WIDTH, server_profile: str | None = None
) -> str:
    """``session`` as the lab page shows it: a header, then one line per event.

    Client lines start with ``>``, server lines with ``<``, fakemx's notes with
    ``·``; the break point is marked ``<-- broke here``. Every text is shown
    escaped (``clientbytes.shown``). With a ``width`` (the short form) lines are
    cut there, a multi-line reply is joined into one line (``250-mx | SIZE |
    ...``) and a long session keeps its start, the lines around the break and
    its end; None shows every line as it was. The profile is named only when it
    is not ``server_profile`` (the server switched profiles between sessions).
    """
    events = list(session.events)  # the server's thread may still be appending
    found = first_error(session)
    header = f"session {session.id}, attempt {session.attempt}, "
    header += f"{session.client_ip}:{session.client_port}"
    if session.profile != server_profile:
        header += f", profile {session.profile}"
    lines = [_cut(f"{header}: {session.ended_by}", width)]
    ranges = _lines(events, joined=width is not None)
    broke_line = next((n for n, (a, b) in enumerate(ranges)
                       if found is not None and a <= found.index <= b), None)
    kept = _kept_lines(len(ranges), broke_line) if width is not None else None
    hidden = 0
    for number, (first, last) in enumerate(ranges):
        if kept is not None and number not in kept:
            hidden += 1
            continue
        if hidden:
            lines.append(f"  {'...':>9} {hidden} lines not shown (-vv shows all)")
            hidden = 0
        event = events[first]
        text = shown(event.text)
        if last > first:
            text += "".join(f" | {shown(e.text[4:])}" for e in events[first + 1 : last + 1])
        millis = (event.at - session.started) * 1000
        line = f"  {f'+{millis:.0f} ms':>9} {_WHO.get(event.kind, '?')} {text}"
        if found is not None and first <= found.index <= last:
            # The line that broke is the one to read: cut it only far out.
            mark = f"  <-- broke here ({found.kind} {found.stage.label})"
            lines.append(_cut(line, None if width is None else 2 * width) + mark)
        else:
            lines.append(_cut(line, width))
    if hidden:
        lines.append(f"  {'...':>9} {hidden} lines not shown (-vv shows all)")
    return "\n".join(lines)


def _kept_lines(count: int, broke_line: int | None) -> set[int] | None:
    """The lines a short report keeps of a long session; None: all of them."""
    if count <= SHORT_HEAD_LINES + SHORT_TAIL_LINES + 2 * SHORT_BREAK_CONTEXT + 1:
        return None
    kept = set(range(SHORT_HEAD_LINES)) | set(range(count - SHORT_TAIL_LINES, count))
    if broke_line is not None:
        kept |= set(range(max(broke_line - SHORT_BREAK_CONTEXT, 0),
                          min(broke_line + SHORT_BREAK_CONTEXT + 1, count)))
    return kept


def _lines(events: Sequence[Event], *, joined: bool) -> list[tuple[int, int]]:
    """Index ranges of the lines to print: one per event, or a multi-line reply as one."""
    ranges: list[tuple[int, int]] = []
    index = 0
    while index < len(events):
        last = index
        if joined:
            while (
                last + 1 < len(events)
                and events[last].kind == events[last + 1].kind == "server"
                and _CONTINUED.match(events[last].text)
            ):
                last += 1
        ranges.append((index, last))
        index = last + 1
    return ranges


def message_text(message: StoredMessage, *, width: int | None = SHORT_WIDTH) -> str:
    """One line: the stored message's envelope, size and subject, escaped."""
    recipients = ", ".join(f"<{shown(r)}>" for r in message.rcpt_tos)
    line = (
        f"message {message.id} (session {message.session_id}): "
        f"MAIL FROM:<{shown(message.mail_from)}> RCPT TO:{recipients}, "
        f"{len(message.content)} bytes"
    )
    subject = message.message["Subject"]
    if subject is not None:
        line += f", Subject: {shown(str(subject))}"
    return _cut(line, width)


def server_text(mx: FakeMX, *, full: bool = False) -> str:
    """What ``mx`` saw: its sessions, stored messages and server-side errors.

    Short by default: the last ``SHORT_SESSIONS`` sessions and ``SHORT_MESSAGES``
    messages, lines cut at ``SHORT_WIDTH``; ``full`` shows everything uncut.
    """
    width = None if full else SHORT_WIDTH
    sessions, messages, incidents = mx.sessions, mx.messages, mx.incidents.snapshot()
    parts = [repr(mx)]
    shown_sessions = sessions if full else sessions[-SHORT_SESSIONS:]
    if len(shown_sessions) < len(sessions):
        hidden = len(sessions) - len(shown_sessions)
        parts.append(f"({hidden} earlier session{_s(hidden)} not shown; -vv shows all)")
    if not sessions:
        parts.append("no session: nothing connected (or the listener refused it)")
    parts.extend(
        session_text(session, width=width, server_profile=mx.profile.name)
        for session in shown_sessions
    )
    if messages:
        listed = messages if full else messages[-SHORT_MESSAGES:]
        lines = [f"stored message{_s(len(messages))} ({len(messages)}):"]
        if len(listed) < len(messages):
            lines.append(f"  ({len(messages) - len(listed)} earlier not shown; -vv shows all)")
        lines.extend("  " + message_text(m, width=width) for m in listed)
        parts.append("\n".join(lines))
    if incidents:
        lines = [f"server-side error{_s(len(incidents))} ({len(incidents)}):"]
        lines.extend("  " + _cut(shown(str(incident)), width) for incident in incidents)
        parts.append("\n".join(lines))
    return "\n".join(parts)


def _cut(line: str, width: int | None) -> str:
    if width is None or len(line) <= width:
        return line
    return line[: width - 3] + "..."


def _s(count: int) -> str:
    return "" if count == 1 else "s"


# endregion
