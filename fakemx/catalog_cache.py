"""What ``fakemx list`` and ``fakemx explain`` print, cached by the files it comes from.

Building it validates every profile with pydantic, and importing pydantic and
building the models is most of a second of CPU on a small machine: a CLI user
notices. The view is built once, written as JSON under the user's cache
directory (fakemx.startcache), and used while nothing it comes from changed: the
key is a hash of the name, size and modification time of every profile file in
the search path and of ``startcache.code_key()`` (fakemx's own modules,
``codes.toml``, Python, pydantic), so a new fakemx, an edited profile or another
``$FAKEMX_PROFILES`` builds it anew. This module imports nothing heavy; a missing
or unwritable cache directory only means building each time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from fakemx import startcache
from fakemx.catalog_files import catalog_paths

View = dict[str, Any]


def key() -> str:
    """The hash of every file the view is built from (names, sizes, modification times)."""
    digest = hashlib.sha256(startcache.code_key().encode())
    digest.update(startcache.stamp(list(catalog_paths())))
    return digest.hexdigest()[:32]


def view(build: Callable[[], View]) -> View:
    """The cached view if its key still holds, else ``build()`` (written for next time)."""
    path = startcache.cache_dir() / f"catalog-{key()}.json"
    try:
        cached = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(cached, dict):
            return cached
    except (OSError, ValueError):
        pass
    built = build()
    startcache.write(path, json.dumps(built).encode(), replaces="catalog-*.json")
    return built
