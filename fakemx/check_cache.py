"""``fakemx check``'s outcome for a file, cached by the file's content.

Checking a profile validates it with pydantic and lints it; importing pydantic
and building the models costs several times what the rest of the command does.
An editor or a pre-commit hook runs ``fakemx check`` on the same files again and
again, so each outcome (the lines printed, and whether they are errors) is kept
under the key of ``startcache.code_key()`` and a hash of the path as given (the
lines name it) and the file's bytes, exactly as read: any edit, even one that
keeps the size and the modification time, is checked for real at once. An
unreadable file is not cached (its error names the problem as it is now).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from fakemx import startcache

# Enough for a project's profiles; the oldest outcomes go first.
MAX_ENTRIES = 500


class Outcome(NamedTuple):
    ok: bool  # True: the lines go to stdout; False: they are errors, on stderr
    lines: list[str]


def outcome(path: Path, data: bytes, check: Callable[[], Outcome]) -> Outcome:
    """The cached outcome of checking ``data`` (read from ``path``), else ``check()``."""
    cache = startcache.cache_dir() / f"check-{startcache.code_key()}.json"
    entry = hashlib.sha256(str(path).encode() + b"\0" + data).hexdigest()
    entries = _read(cache)
    found = entries.get(entry)
    if isinstance(found, list) and len(found) == 2:
        ok, lines = found
        if isinstance(ok, bool) and isinstance(lines, list):
            return Outcome(ok, [str(line) for line in lines])
    result = check()
    entries.pop(entry, None)
    entries[entry] = [result.ok, result.lines]
    kept = dict(list(entries.items())[-MAX_ENTRIES:])
    startcache.write(cache, json.dumps(kept).encode(), replaces="check-*.json")
    return result


def _read(cache: Path) -> dict[str, object]:
    try:
        entries = json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}
