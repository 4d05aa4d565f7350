"""Finding, reading and validating profiles; the catalog is the set shipped in ``profiles/``.

Search order for a name: an explicit path, then the search path of
``fakemx.catalog_files`` (``$FAKEMX_PROFILES``, then the shipped catalog).
"""

from __future__ import annotations

import difflib
import io
import os
import tomllib
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fakemx.catalog_files import catalog_paths as catalog_paths  # re-exported (the page)
from fakemx.catalog_files import search_dirs
from fakemx.errors import ProfileError, UnknownProfileError
from fakemx.model import Profile
from fakemx.strict import build_all


def profile_from_data(data: Mapping[str, Any], source: str, name: str | None = None) -> Profile:
    """Validate a mapping (TOML table, JSON body, marker kwargs) into a Profile."""
    build_all()  # once: see fakemx.strict
    payload = dict(data)
    if name is not None:
        payload.setdefault("name", name)
    try:
        return Profile.model_validate(payload)
    except ValidationError as exc:
        raise _profile_error(source, exc) from None


def load_file(path: Path) -> Profile:
    return profile_from_bytes(path, read_file(path))


def read_file(path: Path) -> bytes:
    """A profile file's bytes; ProfileError naming the file if it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(str(path), "", "no such file", "check the path") from None
    except OSError as exc:
        raise ProfileError(str(path), "", f"cannot read: {exc}", "check the file") from None


def profile_from_bytes(path: Path, data: bytes) -> Profile:
    """Validate the bytes read from ``path`` (as text: UTF-8, universal newlines)."""
    source = str(path)
    try:
        text = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8").read()
        table = tomllib.loads(text)
    except UnicodeDecodeError as exc:
        raise ProfileError(source, "", f"cannot read: {exc}", "check the file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(source, "", f"not valid TOML: {exc}", "fix the TOML syntax") from None
    return profile_from_data(table, source, name=path.stem)


def catalog() -> list[Profile]:
    """Every profile in the search path, by name."""
    return [_load_cached(path) for path in catalog_paths()]


@cache
def _load_cached(path: Path) -> Profile:
    return load_file(path)


def load_profile(spec: str | os.PathLike[str] | Profile | None) -> Profile:
    """Resolve a catalog name, a path or a Profile; None is the default sink."""
    if isinstance(spec, Profile):
        return spec
    path, named = _find(spec)
    return _load_cached(path) if named else load_file(path)


def profile_file(spec: str | os.PathLike[str] | None) -> Path:
    """The file ``load_profile(spec)`` reads (UnknownProfileError for an unknown name)."""
    return _find(spec)[0]


def _find(spec: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """The file of a catalog name or a path, and whether it was found by name."""
    text = os.fspath("sink" if spec is None else spec)
    path = Path(text)
    if text.endswith(".toml") or os.sep in text or path.is_file():
        return path, False
    for directory in search_dirs():
        candidate = directory / f"{text}.toml"
        if candidate.is_file():
            return candidate, True
    names = [p.stem for p in catalog_paths()]
    nearest = difflib.get_close_matches(text, names, n=3, cutoff=0.4)
    nearest += [n for n in names if text in n and n not in nearest][: 3 - len(nearest)]
    raise UnknownProfileError(text, nearest)


_FIXES = {
    "missing": "add this field",
    "extra_forbidden": "remove it or fix its spelling; `fakemx schema` lists the fields",
    "literal_error": "use one of the values named",
    "enum": "use one of the values named",
    "int_parsing": "use a whole number",
    "int_type": "use a whole number",
    "float_parsing": "use a number",
    "float_type": "use a number",
    "finite_number": "use a finite number, e.g. 30",
    "bool_type": "use true or false",
    "bool_parsing": "use true or false",
    "string_type": "use a quoted string",
    "list_type": "use a list, e.g. [\"a\", \"b\"]",
    "greater_than_equal": "raise the value",
    "greater_than": "raise the value",
    "less_than_equal": "lower the value",
    "string_pattern_mismatch": "use the form shown, e.g. 4.4.316",
    "model_type": "use a table, e.g. { key = value }",
}


def _field_path(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif "[" in item or item.startswith("function-"):
            continue  # pydantic's union branch labels, not a field the user wrote
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts)


def _profile_error(source: str, exc: ValidationError) -> ProfileError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    problem = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "int_from_float":
        problem = "must be a whole number"
    if first["type"] in ("greater_than_equal", "less_than_equal") and "code" in first["loc"]:
        problem = f"{first.get('input')!r} is not an SMTP reply code"
        fix = "use 200-599"
    else:
        fix = _FIXES.get(first["type"], "see `fakemx schema` for the format")
    if len(errors) > 1:
        problem += f" (and {len(errors) - 1} more)"
    return ProfileError(source, _field_path(tuple(first["loc"])), problem, fix)
