"""The catalog as a reader sees it: codes explained, profiles listed, the README table."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

from fakemx.errors import FakeMXError
from fakemx.model import Profile
from fakemx.profiles import catalog, load_profile

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
    }


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
    lines += [f"what the relay sees: {about.relay_sees}", "", "Causes:"]
    lines += _bullets(about.causes)
    lines += ["", "Fixes:", *_bullets(about.fixes)]
    if about.code in codes():
        lines += ["", f"About the code ({about.code}): {codes()[about.code]['meaning']}"]
    return "\n".join(lines)


def markdown_table() -> str:
    """The README's catalog table, generated from profiles/ (a test keeps them in sync)."""
    rows = ["| code | profile | what the relay sees |", "|---|---|---|"]
    for profile in sorted(catalog(), key=lambda p: (p.about.code if p.about else "", p.name)):
        item = entry(profile)
        sees = item["relay_sees"].replace("|", "\\|")
        rows.append(f"| {item['code']} | `{item['name']}` | {sees} |")
    return "\n".join(rows)
