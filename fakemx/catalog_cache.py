"""What ``fakemx list`` and ``fakemx explain`` print, cached by the files it comes from.

Building it validates every profile with pydantic, and importing pydantic and
building the models is most of a second of CPU on a small machine: a CLI user
notices. The view is built once, written as JSON under the user's cache
directory, and used while nothing it comes from changed: the key is a hash of
the name, size and modification time of every profile file in the search path,
of ``codes.toml`` and of fakemx's own modules (so a new fakemx, an edited
profile or another ``$FAKEMX_PROFILES`` builds it anew), as Python's ``.pyc``
files are keyed. This module imports nothing heavy; a missing or unwritable
cache directory only means building each time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fakemx.catalog_files import catalog_paths

_PACKAGE_DIR = Path(__file__).resolve().parent
View = dict[str, Any]


def cache_dir() -> Path:
    """``$FAKEMX_CACHE_DIR``, else ``$XDG_CACHE_HOME/fakemx``, else ``~/.cache/fakemx``."""
    explicit = os.environ.get("FAKEMX_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fakemx"


def key() -> str:
    """The hash of every file the view is built from (names, sizes, modification times)."""
    digest = hashlib.sha256()
    sources = [*catalog_paths(), *sorted(_PACKAGE_DIR.rglob("*.py")), _PACKAGE_DIR / "codes.toml"]
    for path in sources:
        try:
            stat = path.stat()
        except OSError:
            continue
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:32]


def view(build: Callable[[], View]) -> View:
    """The cached view if its key still holds, else ``build()`` (written for next time)."""
    path = cache_dir() / f"catalog-{key()}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(cached, dict):
            return cached
    except (OSError, ValueError):
        pass
    built = build()
    _write(path, built)
    return built


def _write(path: Path, built: View) -> None:
    """Write atomically (two CLIs at once never read half a file); failure is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob("catalog-*.json"):  # one view is enough
            old.unlink(missing_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".catalog-", suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            json.dump(built, out)
        os.replace(temporary, path)
    except OSError:
        pass
