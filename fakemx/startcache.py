"""Where the start-up caches live, what makes them stale, and how they are written.

Three caches spare a CLI user work whose result only depends on files: the
catalog view of ``fakemx list``/``explain`` (fakemx.catalog_cache), the outcome
of ``fakemx check`` per file (fakemx.check_cache) and the validated profile
``fakemx serve`` starts with (fakemx.profile_cache). Each is keyed by
``code_key()`` (the code that computes the result) and by what it reads, so an
edit anywhere means computing it anew, as Python's ``.pyc`` files are keyed.
A missing or unwritable cache directory only means computing each time.

This module imports nothing heavy: the point of a cache hit is not to import
pydantic.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
import tempfile
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def cache_dir() -> Path:
    """``$FAKEMX_CACHE_DIR``, else ``$XDG_CACHE_HOME/fakemx``, else ``~/.cache/fakemx``."""
    explicit = os.environ.get("FAKEMX_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "fakemx"


def stamp(paths: list[Path]) -> bytes:
    """The name, size and modification time of each file (a missing one is left out)."""
    lines = []
    for path in paths:
        try:
            stat = path.stat()
        except OSError:
            continue
        lines.append(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n")
    return "".join(lines).encode()


@functools.cache
def code_key() -> str:
    """What every cached result depends on besides its input: fakemx's own modules and
    ``codes.toml``, the Python that runs them, and pydantic and pydantic-core (whose
    validation and messages a profile's outcome is)."""
    sources = [*sorted(_PACKAGE_DIR.rglob("*.py")), _PACKAGE_DIR / "codes.toml"]
    for name in ("pydantic", "pydantic_core"):
        spec = importlib.util.find_spec(name)  # finds the package without importing it
        if spec is not None and spec.origin is not None:
            package = Path(spec.origin).parent
            sources += [package / "__init__.py", package / "version.py"]
    digest = hashlib.sha256(sys.version.encode() + b"\0" + stamp(sources))
    return digest.hexdigest()[:32]


def write(path: Path, data: bytes, replaces: str, keep: str | None = None,
          most: int = 1) -> None:
    """Write ``data`` atomically (two CLIs at once never read half a file), owner-only.

    Files matching the glob ``replaces`` are earlier results: those whose names do not
    start with ``keep`` (another key) are removed, and of the others, the oldest beyond
    ``most``. Failure is not an error: the result is computed again next time.
    """
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        others = [old for old in path.parent.glob(replaces) if old != path]
        kept = [old for old in others if keep is not None and old.name.startswith(keep)]
        kept.sort(key=_age)
        for old in [*(set(others) - set(kept)), *kept[:max(0, len(kept) - most + 1)]]:
            old.unlink(missing_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=".tmp")  # mode 0600
        with os.fdopen(handle, "wb") as out:
            out.write(data)
        os.replace(temporary, path)
    except OSError:
        pass


def _age(path: Path) -> int:
    """When ``path`` was written (0: gone meanwhile, another fakemx removed it)."""
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def read_own(path: Path) -> bytes | None:
    """The file's bytes if it is this user's and no one else can write it, else None.

    For the pickled profiles: unpickling runs code, so only a file that this user
    wrote (or could have) is trusted, as with the ``.pyc`` files Python runs.
    """
    try:
        with path.open("rb") as handle:
            stat = os.fstat(handle.fileno())
            if stat.st_uid != os.geteuid() or stat.st_mode & 0o022:
                return None
            return handle.read()
    except OSError:
        return None
