"""The profile ``fakemx serve`` starts with, validated once per file content.

Validating a profile builds the format's pydantic models (about 0.1 s of CPU,
fakemx.strict), which ``fakemx serve`` paid before its ready line at every
start. A validated profile is kept, pickled, under the key of
``startcache.code_key()`` and a hash of its file's path and bytes, exactly as
read: the next start with the same file unpickles it, and builds no model (a
pickled model is restored as it was, without validation). Any edit of the file,
a new fakemx, Python or pydantic means validating for real. A file that cannot
be read, an unknown name and a profile that does not validate are never cached:
their errors are as without the cache.

Unpickling runs code, so only a file this user owns and no one else can write
is loaded (startcache.read_own), as Python trusts its own ``.pyc`` files.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

from fakemx import startcache
from fakemx.model import Profile
from fakemx.profiles import profile_file, profile_from_bytes, read_file

# Profiles kept at most; the least recently written go first.
MAX_FILES = 200


def load_profile(spec: str | os.PathLike[str] | None) -> Profile:
    """``fakemx.profiles.load_profile(spec)``, from the cache when its file is unchanged."""
    path = profile_file(spec)
    data = read_file(path)
    cached = cache_file(path, data)
    profile = _unpickled(cached)
    if profile is None:
        profile = profile_from_bytes(path, data)
        _keep(cached, profile)
    return profile


def cache_file(path: Path, data: bytes) -> Path:
    """Where the profile validated from ``data`` (read from ``path``) is kept."""
    entry = hashlib.sha256(str(path.resolve()).encode() + b"\0" + data).hexdigest()[:32]
    return startcache.cache_dir() / f"profile-{startcache.code_key()}-{entry}.pickle"


def _unpickled(cached: Path) -> Profile | None:
    raw = startcache.read_own(cached)
    if raw is None:
        return None
    try:
        profile = pickle.loads(raw)
    except Exception:  # a truncated or foreign file: validate instead
        return None
    return profile if isinstance(profile, Profile) else None


def _keep(cached: Path, profile: Profile) -> None:
    try:
        data = pickle.dumps(profile, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # nothing a profile holds should refuse, but a cache never fails
        return
    startcache.write(cached, data, replaces="profile-*.pickle",
                     keep=f"profile-{startcache.code_key()}-", most=MAX_FILES)
