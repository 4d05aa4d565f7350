"""The catalog as a reader sees it: codes explained, profiles listed, the README table."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from fakemx.errors import FakeMXError
from fakemx.model import Profile
from fakemx.profiles import catalog, load_profile
from fakemx.verdicts import NEED_LABELS, NEEDS, PostfixVerdict, SmtplibVerdict

_CODES_FILE = Path(__file__).resolve().parent / "codes.toml"


@cache
def codes() -> dict[str, dict[str, Any]]:
    """code -> {reply, meaning, causes, fixes}, from codes.toml."""
    with _CODES_FILE.open("rb") as handle:
        return tomllib.load(handle)


def normalise_code(query: str) -> str | None:
    """``450 4.4.316``, ``4.4.316`` or ``4.4.316.`` -> ``4.4.316`` if it is a known code."""
    for word in reversed(query.replace(",", " ").split()):
        word = word.strip(".")
        if word in codes():
            return word
    return None


def entry(profile: Profile) -> dict[str, Any]:
    """The listing of one profile (``fakemx list --json``)."""
    about = profile.about
    return {
        "name": profile.name,
        "code": about.code if about else "",
        "title": about.title if about else "",
        "relay_sees": about.relay_sees if about else "",
        "ndr": about.ndr if about else "",
        "listener": str(profile.listener),
        "tls": str(profile.tls.mode),
        "reports": reports(profile),
        "needs": list(about.needs) if about else [],
    }


# region what each sender reports --------------------------------------------------

_POSTFIX_TLS = {"may": "smtp_tls_security_level = may",
                "encrypt": "smtp_tls_security_level = encrypt",
                "verify": "smtp_tls_security_level = verify",
                "implicit": "smtp_tls_wrappermode, verify"}
_EXIM_TLS = {"may": "default smtp transport", "encrypt": "hosts_require_tls",
             "verify": "hosts_require_tls, tls_verify_hosts",
             "implicit": "protocol = smtps, tls_verify_hosts",
             "dane": "hosts_try_dane, a validating resolver",
             "dane-only": "hosts_require_dane, a validating resolver"}
_SMTPLIB_TLS = {"may": "starttls() when offered", "required": "starttls()",
                "implicit": "SMTP_SSL"}


def reports(profile: Profile) -> list[dict[str, str]]:
    """What Postfix, Exim and smtplib report for the profile, each with the sender
    setting the tests used (the verdicts in [about.postfix], [about.exim] and
    [about.smtplib], each held to by a test)."""
    about = profile.about
    if about is None:
        return []
    dns = profile.dns is not None
    found: list[dict[str, str]] = []
    if about.postfix is not None:
        tls = about.postfix.tls
        if tls in ("dane", "dane-only"):
            setting = f"smtp_tls_security_level = {tls}, a validating resolver"
        elif tls == "mta-sts":
            setting = "smtp_tls_policy_maps = postfix-mta-sts-resolver"
        else:
            setting = "relayhost looked up through DNS" if dns else _POSTFIX_TLS[tls]
        found.append(_report("Postfix", setting, _postfix_says(about.postfix)))
    if about.exim is not None:
        exim = about.exim
        dane = exim.tls in ("dane", "dane-only")
        setting = "dnslookup router (MX lookup)" if dns and not dane else _EXIM_TLS[exim.tls]
        found.append(_report("Exim", setting, _exim_says(exim.status, exim.reason)))
        if exim.by_default is not None:
            found.append(_report("Exim", _EXIM_TLS["may"],
                                 _exim_says(exim.by_default.status, exim.by_default.reason)))
    if about.smtplib is not None:
        found.append(_report("smtplib", _SMTPLIB_TLS[about.smtplib.tls],
                             _smtplib_says(about.smtplib)))
    return found


def _report(sender: str, setting: str, says: str) -> dict[str, str]:
    return {"sender": sender, "setting": setting, "says": says}


def _postfix_says(verdict: PostfixVerdict) -> str:
    return f"{verdict.status} {verdict.dsn}: {verdict.reason.replace('{host}', 'fakemx')}"


def _exim_says(status: str, reason: str) -> str:
    shown = reason.replace("{host}", "fakemx").replace("*", "...")
    return f"{status}: {shown}" if shown else status


def _smtplib_says(verdict: SmtplibVerdict) -> str:
    code = f" {verdict.code}" if verdict.code is not None else ""
    return f"{verdict.result}{code}: {verdict.message}" if verdict.message else verdict.result


def needs_text(profile: Profile) -> list[str]:
    """Each setting the profile needs to fail, with what the senders do without it."""
    about = profile.about
    return [f"{NEED_LABELS[need]}: {NEEDS[need]}" for need in (about.needs if about else [])]


# endregion


def profiles_for(code: str) -> list[Profile]:
    return [p for p in catalog() if p.about is not None and p.about.code == code]


def explain(query: str) -> str:
    """Text for ``fakemx explain CODE|PROFILE``."""
    code = normalise_code(query)
    if code is not None:
        return _explain_code(code)
    try:
        profile = load_profile(query)
    except FakeMXError:
        known = ", ".join(codes())
        raise FakeMXError(
            f"{query!r} is neither a known code nor a profile (codes: {known}; profiles: "
            "see `fakemx list`)"
        ) from None
    return _explain_profile(profile)


def _bullets(items: list[str]) -> list[str]:
    return [f"  - {item}" for item in items] or ["  (none)"]


def _explain_code(code: str) -> str:
    info = codes()[code]
    lines = [f"{info['reply']}", "", info["meaning"], "", "Causes:"]
    lines += _bullets(info["causes"])
    lines += ["", "Fixes:", *_bullets(info["fixes"])]
    lines += ["", "Profiles that reproduce it:"]
    matching = profiles_for(code)
    width = max((len(p.name) for p in matching), default=0)
    lines += [
        f"  {p.name:<{width}}  {p.about.relay_sees if p.about else ''}" for p in matching
    ] or ["  (none yet)"]
    return "\n".join(lines)


def _explain_profile(profile: Profile) -> str:
    about = profile.about
    if about is None:
        return f"{profile.name}: no [about] section"
    lines = [f"{profile.name}: {about.title}", f"code: {about.code}"]
    if about.ndr:
        lines.append(f"the sending service reports: {about.ndr}")
    lines += [f"what the relay sees: {about.relay_sees}"]
    found = reports(profile)
    if found:
        lines += ["", "What each sender reports (proven by the tests; see docs/real-relay.md):"]
        lines += [f"  {r['sender']} ({r['setting']}): {r['says']}" for r in found]
    if about.needs:
        lines += ["", "It fails only for a sender with:", *_bullets(needs_text(profile))]
    lines += ["", "Causes:"]
    lines += _bullets(about.causes)
    lines += ["", "Fixes:", *_bullets(about.fixes)]
    if about.code in codes():
        lines += ["", f"About the code ({about.code}): {codes()[about.code]['meaning']}"]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _by_code() -> list[Profile]:
    return sorted(catalog(), key=lambda p: (p.about.code if p.about else "", p.name))


def markdown_table() -> str:
    """The README's catalog table, generated from profiles/ (a test keeps them in sync)."""
    rows = ["| code | profile | what the relay sees | fails only with |", "|---|---|---|---|"]
    for profile in _by_code():
        item = entry(profile)
        needs = ", ".join(NEED_LABELS[need] for need in item["needs"])
        rows.append(f"| {item['code']} | `{item['name']}` | {_cell(item['relay_sees'])} |"
                    f" {needs} |")
    return "\n".join(rows)


def relays_table() -> str:
    """docs/real-relay.md's table: what Postfix, Exim and smtplib report for each profile
    (``fakemx list --relays``; a test keeps them in sync)."""
    rows = ["| profile | Postfix | Exim | smtplib |", "|---|---|---|---|"]
    for profile in _by_code():
        cells: dict[str, list[str]] = {"Postfix": [], "Exim": [], "smtplib": []}
        for report in reports(profile):
            cells[report["sender"]].append(f"{report['says']} ({report['setting']})")
        rows.append(f"| `{profile.name}` | " + " | ".join(
            _cell("; ".join(cells[sender])) or "-" for sender in cells) + " |")
    return "\n".join(rows)
