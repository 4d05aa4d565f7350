"""The base of the profile format's pydantic models, and the one-line text check.

Every model is strict (an unknown key is an error, not ignored), frozen (a
profile is shared by every session) and finite: TOML's (and JSON's) inf and nan
are no time a timer can wait, no probability a draw can meet.

``defer_build``: the models' validators and serializers are built when first
needed, not when their modules are imported. Building the format's ~35 models
costs about 0.1 s of CPU, which ``fakemx serve`` from a cached profile
(fakemx.profile_cache) and ``fakemx check`` of an unchanged file
(fakemx.check_cache) need not pay. The first validation of a profile and the
first JSON Schema build all of them (``build_all``), as importing them did
before: pydantic-core serializes a value of a model class never built (a
field's default in a JSON Schema, a value typed ``Any``) only once it is built.
A default value that is a model is made with ``model_construct()`` (the fields'
defaults, as ``Model()`` gives: tests/test_startup_caches.py holds them equal),
since ``Model()`` in a class body would build it at import.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

_all_built = False


def build_all() -> None:
    """Build every fakemx model not built yet (the first validation calls it)."""
    global _all_built
    if _all_built:
        return
    pending: list[type[BaseModel]] = [BaseModel]
    while pending:
        for model in pending.pop().__subclasses__():
            pending.append(model)
            if model.__module__.startswith("fakemx.") and not model.__pydantic_complete__:
                model.model_rebuild()
                # A TypeAdapter of a model that defers defers too: FastAPI's would be built
                # at the first request, outside its own handling of pydantic's warnings.
                model.model_config["defer_build"] = False
    _all_built = True


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              defer_build=True)

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        build_all()  # the defaults it shows are models, serialized by their own classes
        return super().model_json_schema(*args, **kwargs)


def one_line(value: str | None) -> str | None:
    """Text that ends up on one line (a greeting, a label, a log line): no CR, LF or control."""
    if value is not None and any(ord(char) < 0x20 or char == "\x7f" for char in value):
        raise ValueError("must be one line: remove the line break, tab or other control"
                         " character")
    return value
