"""The classroom lab: the catalog as exercises a relay in front of fakemx can show.

``fakemx lab`` serves every catalog profile on its own port; a relay reaches
each through ``<anyone>@<case>.lab.fakemx.test``. This module decides, without
any socket, what the relay needs for that (a transport-map line naming the
relay service the scenario is about; a DNS zone renamed to the case's domain)
and what a student is told: the exercise sheet (address, the non-delivery
report as Exchange Online words it, the question) and the instructor's answer
key. In student mode (``--student``) the cases are named ``case-001`` ... in an
order drawn once per state dir, so neither an address, a port nor a page title
gives the scenario away.

``tests/test_lab_relay.py`` sends every exercise through the lab's own relay
(``lab/relay``) and holds it to the verdict written here.
"""

from __future__ import annotations

import html
import json
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fakemx.dns.model import Dns
from fakemx.errors import FakeMXError
from fakemx.model import Profile
from fakemx.stages import Protocol
from fakemx.verdicts import PostfixVerdict

LAB_DOMAIN = "lab.fakemx.test"
SINK = "sink"  # the positive control: never hidden, always first
CATALOG_DOMAIN = "example.test"  # the domain the catalog's DNS zones are written for
CATALOG_CLIENT = "127.0.0.1"  # the client address in the catalog's verdicts
CASES_FILE = "classroom.json"
STUDENT_DOMAIN = f"students.{LAB_DOMAIN}"
BIG_BODY_BYTES = 4096  # above a small size limit, as swaks's default message is not
# The lab relay's services (lab/relay/configure.sh), by [about.postfix] tls.
RELAY_SERVICES = {"may": "smtp", "verify": "tlsverify", "encrypt": "tlsencrypt",
                  "implicit": "tlswrapped"}
BAD_HELO_SERVICE = "badhelo"
QUESTION = ("Where in the SMTP conversation did delivery stop, and why? Find the attempt in"
            " the relay's queue (postqueue -p) and log, and the session on the lab page;"
            " name the error, a likely cause, and what the destination's administrator"
            " should fix.")
DELIVERED_QUESTION = ("Was the message delivered, and how do you know? Find it in the"
                      " relay's log and on the lab page (TLS or not, and which version).")


@dataclass(frozen=True)
class Case:
    """A profile as the lab serves it: under its own name, or an opaque one for students."""

    name: str
    profile: Profile

    @property
    def domain(self) -> str:
        return f"{self.name}.{LAB_DOMAIN}"

    @property
    def hidden(self) -> bool:
        return self.name != self.profile.name


def cases(profiles: Sequence[Profile], *, student: bool, state_dir: Path) -> list[Case]:
    """The lab's cases, the healthy sink first (on the base port), then the rest.

    In student mode the others are ``case-001`` ... in an order drawn once and
    kept in STATE_DIR/classroom.json, so a restart keeps the sheet valid; the
    ports follow the case order, so they say nothing either.
    """
    if not student:
        return sorted((Case(p.name, p) for p in profiles), key=lambda c: c.name != SINK)
    by_name = {p.name: p for p in profiles}
    others = sorted(name for name in by_name if name != SINK)
    names = _drawn_names(state_dir / CASES_FILE, others)
    ordered = sorted(others, key=lambda name: names[name])
    found = [Case(SINK, by_name[SINK])] if SINK in by_name else []
    return found + [Case(names[name], by_name[name]) for name in ordered]


def _drawn_names(path: Path, profiles: list[str]) -> dict[str, str]:
    try:
        kept = json.loads(path.read_text())
        if isinstance(kept, dict) and sorted(kept) == profiles:
            return {str(k): str(v) for k, v in kept.items()}
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise FakeMXError(f"{path}: cannot read the case names: {exc} (delete it to draw"
                          " new ones; print the sheet again)") from None
    order = list(profiles)
    random.SystemRandom().shuffle(order)
    width = max(2, len(str(len(order))))
    names = {profile: f"case-{n:0{width}d}" for n, profile in enumerate(order, start=1)}
    try:
        path.write_text(json.dumps(names, indent=1, sort_keys=True) + "\n")
    except OSError as exc:
        raise FakeMXError(f"{path}: cannot keep the case names: {exc.strerror}"
                          " (use a --state-dir fakemx can write)") from None
    return names


def resolved_by_relay(case: Case) -> bool:
    """A DNS case the lab relay looks up itself (through fakemx's DNS for it).

    Not the DNSSEC/DANE and MTA-STS cases: the relay validates no DNSSEC and
    fetches no policy, so it reaches those through the transport map, as any
    other case, and they keep the catalog's zone.
    """
    profile = case.profile
    verdict = profile.about.postfix if profile.about else None
    return (profile.dns is not None and profile.dns.dnssec is None
            and profile.mta_sts is None
            and (verdict is None or verdict.tls in RELAY_SERVICES))


def lab_zone(case: Case) -> Profile:
    """The case's profile; a DNS case the relay resolves answers for its own domain
    instead of example.test."""
    profile, domain = case.profile, case.domain
    if profile.dns is None or not resolved_by_relay(case):
        return profile
    renamed = profile.dns.model_dump_json().replace(CATALOG_DOMAIN, domain)
    return profile.model_copy(update={"dns": Dns.model_validate_json(renamed)})


def service(case: Case) -> str:
    """The lab relay's service for the case: TLS as its scenario needs, or a bad EHLO;
    a DNS case has its own (the relay's entrypoint adds it, from dns-zones)."""
    if resolved_by_relay(case):
        return case.name
    verdict = case.profile.about.postfix if case.profile.about else None
    if verdict is None:
        return RELAY_SERVICES["may"]
    # DANE: the lab relay has no validating resolver; it reaches the case as any other
    return BAD_HELO_SERVICE if verdict.bad_helo else RELAY_SERVICES.get(verdict.tls, "smtp")


def transport_line(case: Case, host: str, port: int) -> str:
    """One line of the relay's transport map.

    A DNS case is the relay's smart host, looked up by name (its MX, or its A
    record, through fakemx's DNS), as an Exchange connector's smart host is:
    where 4.4.312 happens. Its service sets that name as ``relayhost`` too, for
    Postfix treats a smart host that does not resolve as its own configuration
    problem (deferred, 4.3.5), where a recipient domain that does not would
    bounce (smtp_connect.c); the catalog's verdicts are the smart host's.
    """
    if resolved_by_relay(case):
        return f"{case.domain} {service(case)}:{smart_host(case, port)}"
    if case.profile.protocol is Protocol.LMTP:  # Postfix's lmtp(8) client, over TCP
        return f"{case.domain} lmtp:inet:[{host}]:{port}"
    return f"{case.domain} {service(case)}:[{host}]:{port}"


def smart_host(case: Case, port: int) -> str:
    return f"{case.domain}:{port}"


@dataclass(frozen=True)
class Exercise:
    """One message a student sends through the lab relay, and how it ends."""

    case: Case
    verdict: PostfixVerdict

    @property
    def recipients(self) -> list[str]:
        return [f"{part}@{self.case.domain}" for part in self.verdict.local_parts]

    def sender(self, student: str) -> str:
        """The sender: the profile's own if its scenario is about the sender, else the
        student's address (what keeps each student's attempts their own)."""
        return self.verdict.sender or f"{student}@{STUDENT_DOMAIN}"

    def command(self, student: str) -> str:
        """The student's swaks command line (run in a shell on the relay host)."""
        body = ""
        if self.needs_a_big_body:
            body = f' --body "$(seq 1 {BIG_BODY_BYTES // 4})"'
        return (f"swaks --server 127.0.0.1 --from {self.sender(student)}"
                f" --to {','.join(self.recipients)}{body}")

    @property
    def needs_a_big_body(self) -> bool:
        """A message over the profile's size limit: swaks's own (~300 bytes) is not."""
        return self.case.profile.max_message_size < BIG_BODY_BYTES

    @property
    def by_chance(self) -> bool:
        """Its rules fire at random (a probability): any one attempt may go either way."""
        return any(rule.when.probability is not None for rule in self.case.profile.rules)

    @property
    def later(self) -> str:
        """When a retry gets through, if one does: "" if none is said to."""
        if self.by_chance:
            return "at a later attempt: each attempt may go either way"
        if self.verdict.sent_on_attempt is not None:
            return f"at attempt {self.verdict.sent_on_attempt}"
        return "at a later attempt" if self.verdict.eventually_sent else ""

    @property
    def ndr(self) -> str:
        """The non-delivery report the sender gets, as Exchange Online words it."""
        about = self.case.profile.about
        ndr = about.ndr if about and about.ndr else ""
        if self.verdict.status == "sent" or not ndr:
            return "none: the message is delivered"
        if self.later:
            return (f"none once a retry gets through ({self.later}); only if none does"
                    f" before the relay gives up: {ndr}")
        return ndr

    @property
    def question(self) -> str:
        return DELIVERED_QUESTION if self.ndr.startswith("none") else QUESTION

    def reason_parts(self, reason: str | None = None) -> list[str]:
        """The relay log's reason (``reason``, else the verdict's), in the pieces around
        what only the running lab knows: ``{host}`` (the relay's name and address for
        fakemx) and the client address the catalog's loopback relay had."""
        text = (self.verdict.reason if reason is None else reason).replace(
            CATALOG_DOMAIN, self.case.domain).replace(CATALOG_CLIENT, "{host}")
        return [part for part in text.split("{host}") if part]

    def expected(self) -> str:
        """The first attempt as the relay logs it, for the answer key."""
        reason = self.verdict.reason.replace(CATALOG_DOMAIN, self.case.domain)
        reason = reason.replace("{host}", "fakemx[ADDRESS]").replace(CATALOG_CLIENT,
                                                                     "RELAY-ADDRESS")
        later = f"; sent {self.later}" if self.later else ""
        return f"status={self.verdict.status} dsn={self.verdict.dsn} ({reason}){later}"


def exercise(case: Case) -> Exercise | None:
    """The case as one message from the relay, or None when a student cannot show it so.

    Left to the instructor: scenarios that need earlier traffic (rates), held
    connections, a loopback client (the lab relay is not one), DANE or MTA-STS (the
    lab relay applies neither), a login (the lab relay has no SASL credentials: its
    verdict would be the 530 of an anonymous client, not the AUTH failure), an
    internationalized address (swaks submits it without SMTPUTF8, so the relay does
    not know the message needs it: Postfix's bounce comes from its sendmail's
    autodetection), or that have no Postfix verdict (a stale cache needs a caching
    resolver).
    """
    about = case.profile.about
    verdict = about.postfix if about else None
    if verdict is None or verdict.warm_up_messages or verdict.hold_connections:
        return None
    if verdict.sasl is not None:
        return None
    if verdict.tls not in RELAY_SERVICES or case.profile.mta_sts is not None or (
            case.profile.dns is not None and not resolved_by_relay(case)):
        return None
    if any(rule.when.client_ip for rule in case.profile.rules):
        return None
    if not (verdict.sender + verdict.local_part).isascii():
        return None
    return Exercise(case, verdict)


def exercises(lab: Iterable[Case]) -> list[Exercise]:
    return [found for case in lab if (found := exercise(case)) is not None]


# region the sheets -------------------------------------------------------------------

SHEET_MD = "exercise-sheet.md"
SHEET_HTML = "exercise-sheet.html"
ANSWER_KEY = "answer-key.md"
STUDENT_PLACEHOLDER = "studentNN"


def write_sheets(directory: Path, lab: Sequence[Case]) -> list[Path]:
    """The exercise sheet (Markdown and printable HTML) and the answer key, in ``directory``."""
    found = exercises(lab)
    pages = {SHEET_MD: sheet_markdown(found), SHEET_HTML: sheet_html(found),
             ANSWER_KEY: answer_key(lab, found)}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in pages.items():
            (directory / name).write_text(text)
    except OSError as exc:
        raise FakeMXError(f"--sheets {directory}: cannot write the sheets: {exc.strerror}"
                          " (choose a directory fakemx can write)") from None
    return [directory / name for name in pages]


_INTRO = (
    "Send each message from the lab relay (`docker compose exec relay ...`), with your own"
    f" sender address `{STUDENT_PLACEHOLDER}@{STUDENT_DOMAIN}` (your number from the"
    " trainer): your attempts and sessions are then yours alone on the lab page. First the"
    " positive control, which is delivered:"
)


def sheet_markdown(found: Sequence[Exercise]) -> str:
    lines = ["# fakemx lab: exercise sheet", "", _INTRO, "",
             f"    swaks --server 127.0.0.1 --from {STUDENT_PLACEHOLDER}@{STUDENT_DOMAIN}"
             f" --to bob@{SINK}.{LAB_DOMAIN}", ""]
    for item in found:
        if item.case.name == SINK:  # the control, above
            continue
        lines += [f"## {item.case.name}", "",
                  f"- Send to: `{', '.join(item.recipients)}`",
                  f"- Command: `{item.command(STUDENT_PLACEHOLDER)}`",
                  f"- The sender's non-delivery report (Exchange Online): `{item.ndr}`",
                  f"- Question: {item.question}", ""]
    return "\n".join(lines)


def sheet_html(found: Sequence[Exercise]) -> str:
    def esc(text: str) -> str:
        return html.escape(text, quote=True)

    cards = "".join(
        f'<section class="case" id="{esc(item.case.name)}"><h2>{esc(item.case.name)}</h2>'
        f'<dl><dt>Send to</dt><dd><code>{esc(", ".join(item.recipients))}</code></dd>'
        f'<dt>Command</dt><dd><code>{esc(item.command(STUDENT_PLACEHOLDER))}</code></dd>'
        f'<dt>Non-delivery report</dt><dd><code class="ndr">{esc(item.ndr)}</code></dd>'
        f'<dt>Question</dt><dd>{esc(item.question)}</dd></dl>'
        '<p class="answer">Answer: ______________________________________________</p>'
        "</section>"
        for item in found if item.case.name != SINK)
    intro = esc(_INTRO).replace("`", "")
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>fakemx lab: exercise sheet</title><style>"
        "body{font:11pt/1.4 sans-serif;max-width:48em;margin:2em auto}"
        "code,pre{font:10pt monospace;word-break:break-all;white-space:pre-wrap}"
        "dt{font-weight:bold}"
        ".case{border-top:1px solid #999;padding:.3em 0;break-inside:avoid}"
        "@media print{body{margin:0}}</style></head><body>"
        f"<h1>fakemx lab: exercise sheet</h1><p>{intro}</p>"
        f"<pre>swaks --server 127.0.0.1 --from {STUDENT_PLACEHOLDER}@{STUDENT_DOMAIN}"
        f" --to bob@{SINK}.{LAB_DOMAIN}</pre>{cards}</body></html>\n")


def answer_key(lab: Sequence[Case], found: Sequence[Exercise]) -> str:
    by_case = {item.case.name: item for item in found}
    lines = ["# fakemx lab: answer key (for the instructor)", "",
             "| case | profile | code | what the relay logs (first attempt) | why |",
             "|---|---|---|---|---|"]
    for case in lab:
        about = case.profile.about
        item = by_case.get(case.name)
        logged = item.expected() if item else "(not an exercise: shown by the instructor)"
        why = "; ".join(about.causes[:1]) if about else ""
        lines.append(f"| {case.name} | `{case.profile.name}` | {about.code if about else ''}"
                     f" | {_cell(logged)} | {_cell(why)} |")
    return "\n".join(lines) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# endregion
