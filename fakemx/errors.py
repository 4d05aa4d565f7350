"""Errors a user sees: each renders as one line that names the place and the fix."""

from __future__ import annotations


class FakeMXError(Exception):
    """Base of every error fakemx reports to a user; ``str()`` is the one-line message."""


class ProfileError(FakeMXError):
    """A profile (file, API body or marker) that does not validate.

    Renders as ``SOURCE: field.path: problem (fix)``.
    """

    def __init__(self, source: str, field: str, problem: str, fix: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        self.fix = fix
        where = f"{source}: {field}" if field else source
        super().__init__(f"{where}: {problem} ({fix})")


class UnknownProfileError(FakeMXError):
    def __init__(self, name: str, nearest: list[str]) -> None:
        self.name = name
        self.nearest = nearest
        hint = f"nearest: {', '.join(nearest)}; " if nearest else ""
        super().__init__(f"unknown profile {name!r} ({hint}see `fakemx list`)")


class ListenError(FakeMXError):
    """The listener could not bind (port in use, not permitted, bad address)."""
