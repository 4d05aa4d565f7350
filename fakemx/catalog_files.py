"""Where profile files are: the search path and the catalog's files, without reading them.

Kept apart from ``fakemx.profiles`` (which validates with pydantic) so that the
start-up cache (``fakemx.catalog_cache``) can tell whether the catalog changed
without importing the models.

Search order for a name: each directory in ``$FAKEMX_PROFILES``
(``os.pathsep``-separated), then the catalog shipped with fakemx
(``fakemx/profiles`` in a wheel, ``profiles/`` in a source checkout).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def catalog_dir() -> Path:
    """The shipped catalog: inside the package when installed, top level in a checkout."""
    packaged = _PACKAGE_DIR / "profiles"
    return packaged if packaged.is_dir() else _PACKAGE_DIR.parent / "profiles"


def search_dirs() -> list[Path]:
    extra = [Path(p) for p in os.environ.get("FAKEMX_PROFILES", "").split(os.pathsep) if p]
    return [*extra, catalog_dir()]


def catalog_paths() -> Iterator[Path]:
    """Each profile file in the search path, the first of each name."""
    seen: set[str] = set()
    for directory in search_dirs():
        for path in sorted(directory.glob("*.toml")):
            if path.stem not in seen:
                seen.add(path.stem)
                yield path
