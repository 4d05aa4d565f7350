"""What the HTTP API shows: servers, sessions, messages and the catalog as response models.

Pure reads of ``FakeMX`` and the catalog; nothing here changes a server. Sessions
and messages come from each server's in-memory journal (so ``reset`` clears
them, as it does for the Python API), not from the SQLite store, which keeps
history across resets and restarts for ``fakemx journal`` and ``fakemx export``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence, Set
from dataclasses import dataclass, field
from email.message import Message, MIMEPart
from pathlib import Path
from typing import Literal

from fakemx import explain as reference
from fakemx.api.models import (
    CatalogEntry,
    CatalogExplanation,
    CodeExplanation,
    CodeInfo,
    Header,
    MessageOut,
    MessagePage,
    MessageSummary,
    RuleOut,
    ServerInfo,
    SessionOut,
    SessionPage,
)
from fakemx.clientbytes import shown
from fakemx.errors import UnknownProfileError
from fakemx.journal import Outcome, Session, StoredMessage
from fakemx.mailbox import HEAD_BYTES, MessageQuery, contains, subject_of
from fakemx.model import Profile, Rule
from fakemx.profiles import catalog, catalog_paths, load_profile
from fakemx.server import FakeMX


class NotFound(LookupError):
    """A server, session, message, profile or code the API does not know (HTTP 404)."""


class Hidden(PermissionError):
    """What a student may not see yet: the scenario of a case not revealed (HTTP 403)."""


@dataclass
class StudentMode:
    """A lab in student mode: the servers whose scenario students may not see until the
    trainer reveals it (``fakemx lab --student``: every case but the healthy sink)."""

    hidden: frozenset[str]
    revealed: set[str] = field(default_factory=set)

    def hides(self, name: str) -> bool:
        return name in self.hidden and name not in self.revealed

    def mark(self, name: str) -> Literal["", "hidden", "revealed"]:
        if name not in self.hidden:
            return ""
        return "revealed" if name in self.revealed else "hidden"


def server_info(mx: FakeMX, students: StudentMode | None = None,
                student: bool = False) -> ServerInfo:
    """The server as the reader may see it: a student sees a hidden case by its name only."""
    mark = students.mark(mx.name) if students is not None else ""
    if student and mark == "hidden":
        return ServerInfo(name=mx.name, address=mx.address, host=mx.host, port=mx.port,
                          profile=mx.name, code="", title="", listener=mx.listener_state,
                          tls=mx.profile.tls.mode, inband=False, rules=0,
                          sessions=len(mx.sessions), messages=len(mx.messages), about=None,
                          students=mark)
    profile = mx.profile
    about = profile.about
    return ServerInfo(
        students=mark,
        name=mx.name,
        address=mx.address,
        host=mx.host,
        port=mx.port,
        profile=profile.name,
        code=about.code if about else "",
        title=about.title if about else "",
        listener=mx.listener_state,
        tls=profile.tls.mode,
        inband=profile.inband,
        rules=len(profile.rules),
        sessions=len(mx.sessions),
        messages=len(mx.messages),
        about=about,
    )


def rule_out(rule: Rule) -> RuleOut:
    return RuleOut(label=rule.label, rule=rule)


_MAIL_FROM = re.compile(r"MAIL FROM:\s*<([^>]*)>", re.IGNORECASE)


def session_sender(session: Session) -> str | None:
    """The session's first MAIL FROM address, as the client sent it (escaped)."""
    for event in session.events:
        if event.kind == "client":
            found = _MAIL_FROM.match(event.text)
            if found:
                return shown(found[1])
    return None


def session_out(session: Session, hide_profile: bool = False) -> SessionOut:
    # Session.as_dict() is the journal's one serialisation (the store writes it too);
    # shown() escapes what the client sent, which JSON could not encode otherwise.
    record = session.shown()
    if hide_profile:  # a student's view of a case not revealed: its name, not its profile
        record["profile"] = session.server
    return SessionOut.model_validate({**record, "sender": session_sender(session)})


def sessions_page(
    servers: Sequence[FakeMX],
    *,
    client: str | None,
    outcome: Outcome | None,
    limit: int,
    offset: int,
    sender: str | None = None,
    hiding: StudentMode | None = None,
) -> SessionPage:
    """Sessions newest first; ``sender``: only those whose MAIL FROM contains it (any
    case: a student's own); ``hiding``: a student reads, the hidden cases' profiles go."""
    found = [
        session
        for mx in servers
        for session in mx.sessions
        if (client is None or session.client_ip == client)
        and (outcome is None or session.outcome is outcome)
        and (sender is None or contains(session_sender(session) or "", sender))
    ]
    found.sort(key=lambda session: session.id, reverse=True)
    return SessionPage(
        items=[session_out(s, hiding is not None and hiding.hides(s.server))
               for s in found[offset : offset + limit]],
        total=len(found),
        limit=limit,
        offset=offset,
    )


def find_session(servers: Iterable[FakeMX], session_id: int,
                 hiding: StudentMode | None = None) -> SessionOut:
    for mx in servers:
        for session in mx.sessions:
            if session.id == session_id:
                return session_out(session, hiding is not None and hiding.hides(mx.name))
    raise NotFound(f"no session {session_id} (since the last reset)")


def _received(servers: Iterable[FakeMX]) -> list[tuple[str, StoredMessage]]:
    return [(mx.name, message) for mx in servers for message in mx.messages]


# Lone surrogates: bytes that were not UTF-8 (clientbytes), which JSON cannot carry.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _body_text(text: str) -> str:
    """A message body for display: its lines kept, undecodable bytes as ``\\xNN``."""
    return _SURROGATE.sub(lambda match: shown(match.group()), text)


def _subject(message: Message) -> str:
    return shown(str(message.get("Subject", "")))


def message_summary(server: str, stored: StoredMessage) -> MessageSummary:
    # Everything here is what a client sent: escaped (clientbytes.shown), so a
    # byte that is not UTF-8 is shown as \xNN instead of failing the response.
    return MessageSummary(
        id=stored.id,
        server=server,
        session_id=stored.session_id,
        received=stored.received,
        mail_from=shown(stored.mail_from),
        rcpt_tos=[shown(rcpt) for rcpt in stored.rcpt_tos],
        size=stored.size,
        subject=_subject(stored.message),
    )


def matches(message: StoredMessage, query: MessageQuery) -> bool:
    """``query`` (as ``Store.find_messages`` reads it) against a message in the journal."""
    q = query
    if (q.since is not None and message.received < q.since) or (
            q.until is not None and message.received >= q.until):
        return False
    if not (contains(message.mail_from, q.sender)
            and any(contains(rcpt, q.recipient) for rcpt in message.rcpt_tos)):
        return False
    if q.subject is None:
        return True
    try:
        return contains(subject_of(message.content[:HEAD_BYTES]), q.subject)
    except LookupError:  # deleted from the state dir since
        return False


def messages_page(servers: Sequence[FakeMX], *, limit: int, offset: int,
                  query: MessageQuery | None = None,
                  hidden: Set[int] = frozenset()) -> MessagePage:
    found = sorted(
        ((name, m) for name, m in _received(servers)
         if m.id not in hidden and (query is None or matches(m, query))),
        key=lambda item: item[1].id, reverse=True)
    items = []
    for name, message in found[offset : offset + limit]:
        try:
            items.append(message_summary(name, message))
        except LookupError:  # its body was deleted from the state dir (retention)
            continue
    return MessagePage(items=items, total=len(found), limit=limit, offset=offset)


def find_message(servers: Iterable[FakeMX], message_id: int,
                 hidden: Set[int] = frozenset()) -> tuple[str, StoredMessage]:
    for name, message in _received(servers):
        if message.id == message_id and message_id not in hidden:
            return name, message
    raise NotFound(f"no message {message_id} (since the last reset, and not deleted)")


def _content(part: MIMEPart | None) -> str | None:
    if part is None:
        return None
    try:
        return str(part.get_content())
    except (LookupError, ValueError, AssertionError):
        # An unknown charset or a broken transfer encoding: show what arrived
        # rather than fail, since a relay under test may well send such mail.
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else None


def _body(part: MIMEPart | None) -> str | None:
    content = _content(part)
    return None if content is None else _body_text(content)


def message_out(server: str, stored: StoredMessage) -> MessageOut:
    parsed = stored.message
    summary = message_summary(server, stored)
    return MessageOut(
        **summary.model_dump(),
        headers=[Header(name=shown(k), value=shown(str(v))) for k, v in parsed.items()],
        text=_body(parsed.get_body(preferencelist=("plain",))),
        html=_body(parsed.get_body(preferencelist=("html",))),
        attachments=[shown(part.get_filename() or "(no name)")
                     for part in parsed.iter_attachments()],
    )


# region catalog ------------------------------------------------------------------


def catalog_entry(profile: Profile) -> CatalogEntry:
    about = profile.about
    return CatalogEntry(
        **reference.entry(profile),
        causes=list(about.causes) if about else [],
        fixes=list(about.fixes) if about else [],
        postfix_reason=about.postfix.reason if about and about.postfix else None,
    )


def catalog_entries() -> list[CatalogEntry]:
    return [catalog_entry(profile) for profile in catalog()]


def catalog_profile(name: str) -> Profile:
    """A profile of the shipped catalog by name, and nothing else.

    ``load_profile`` also takes paths and files in the working directory; the
    API must not read outside the catalog, so names are looked up here first.
    """
    paths = {path.stem: path for path in catalog_paths()}
    path: Path | None = paths.get(name)
    if path is None:
        nearest = difflib.get_close_matches(name, list(paths), n=3, cutoff=0.4)
        raise UnknownProfileError(name, nearest)
    return load_profile(path)


def catalog_explanation(name: str) -> CatalogExplanation:
    try:
        profile = catalog_profile(name)
    except UnknownProfileError as exc:
        raise NotFound(str(exc)) from None
    return CatalogExplanation(
        **catalog_entry(profile).model_dump(), explanation=reference.explain(profile.name)
    )


def code_info(code: str) -> CodeInfo:
    info = reference.codes()[code]
    return CodeInfo(
        code=code,
        reply=info["reply"],
        meaning=info["meaning"],
        causes=list(info["causes"]),
        fixes=list(info["fixes"]),
        profiles=[p.name for p in reference.profiles_for(code)],
    )


def code_infos() -> list[CodeInfo]:
    return [code_info(code) for code in reference.codes()]


def code_explanation(query: str) -> CodeExplanation:
    code = reference.normalise_code(query)
    if code is None:
        raise NotFound(f"unknown code {query!r} (codes: {', '.join(reference.codes())})")
    return CodeExplanation(**code_info(code).model_dump(), explanation=reference.explain(code))


# endregion
