"""`fakemx list` and `explain` from the start-up cache (fakemx.catalog_cache): the same text
as building it, and never stale: an edited profile, a new one or another search path shows
at once. Real processes, as a CLI user runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fakemx import explain

ROOT = Path(__file__).resolve().parent.parent

PROFILE = """
[about]
code = "5.1.1"
title = "{title}"
relay_sees = "550 5.1.1 User unknown"

[[rules]]
stage = "rcpt"
reply = {{ code = 550, text = "5.1.1 User unknown" }}
"""


def fakemx(*args: str, cache: Path, profiles: Path | None = None) -> str:
    env = {**os.environ, "FAKEMX_CACHE_DIR": str(cache)}
    env.pop("FAKEMX_PROFILES", None)
    if profiles is not None:
        env["FAKEMX_PROFILES"] = str(profiles)
    result = subprocess.run([sys.executable, "-m", "fakemx", *args], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def test_cached_text_is_the_built_text(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = fakemx("explain", "4.4.316", cache=cache)  # builds and writes the cache
    assert len(list(cache.glob("catalog-*.json"))) == 1
    assert fakemx("explain", "4.4.316", cache=cache) == first  # read from it
    assert first == explain.explain("4.4.316") + "\n"
    profile = "4.4.318-rst-after-mail"
    assert fakemx("explain", profile, cache=cache) == explain.explain(profile) + "\n"
    assert fakemx("list", "--markdown", cache=cache) == explain.markdown_table() + "\n"


def test_an_edited_or_new_profile_shows_at_once(tmp_path: Path) -> None:
    cache, profiles = tmp_path / "cache", tmp_path / "profiles"
    profiles.mkdir()
    mine = profiles / "my-unknown-user.toml"
    mine.write_text(PROFILE.format(title="First title"))
    listed = json.loads(fakemx("list", "--json", cache=cache, profiles=profiles))
    assert {"name": "my-unknown-user", "title": "First title"}.items() <= \
        next(e for e in listed if e["name"] == "my-unknown-user").items()

    mine.write_text(PROFILE.format(title="A second, longer title"))
    assert "A second, longer title" in fakemx("explain", "my-unknown-user", cache=cache,
                                              profiles=profiles)
    (profiles / "another.toml").write_text(PROFILE.format(title="Another"))
    assert "another" in fakemx("list", cache=cache, profiles=profiles)
    assert "my-unknown-user" not in fakemx("list", cache=cache)  # the search path is the key


def test_no_usable_cache_directory_only_means_building(tmp_path: Path) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    assert "4.4.316-connection-refused" in fakemx("list", cache=not_a_directory)
