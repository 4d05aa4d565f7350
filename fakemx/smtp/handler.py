"""What every connection shares with aiosmtpd: its handler, and tables it would build
per connection.

aiosmtpd's ``SMTP`` builds a table of the handler's hooks and one of its AUTH
mechanisms (bound methods) for each connection; with 15,000 connections held
open (bench/held_connections.py) that was about 1 kB each. fakemx/smtp/seam.py
sets these in their place.
"""

from __future__ import annotations

import types
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, NamedTuple


class Hooks:
    """The aiosmtpd handler: hands parsed commands to the session that received them."""

    def __dir__(self) -> list[str]:
        # Its hooks, for HOOK_TABLE below.
        return ["handle_EHLO", "handle_MAIL", "handle_RCPT"]

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        lines: list[str] = server.ehlo_lines(responses)
        return lines

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> Any:
        return await server.on_mail(address, options)

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> Any:
        return await server.on_rcpt(address)


class NoHooks:
    """What fakemx hands aiosmtpd's ``SMTP.__init__`` as the handler: nothing to find.

    For every connection that ``__init__`` lists the handler's members (for AUTH
    mechanisms) and runs ``inspect.signature`` on its ``handle_EHLO`` (to tell its two
    hook forms apart): some 3% of the CPU of a connection. fakemx sets the outcome
    itself afterwards: HOOK_TABLE, the new EHLO hook form, HOOKS as the handler."""

    def __dir__(self) -> list[str]:
        return []


HOOKS = Hooks()
NO_HOOKS = NoHooks()
# aiosmtpd's table of the handler's hooks (``_handle_hooks``), which it builds per
# connection; the handler is one for all, so is the table (aiosmtpd only reads it).
HOOK_TABLE = {name[len("handle_"):]: getattr(HOOKS, name) for name in dir(HOOKS)}


class AuthMechanism(NamedTuple):
    """What aiosmtpd reads of an entry of its AUTH table (its own private ``_AuthMechAttr``)."""

    method: Any  # the bound auth_<MECHANISM> method
    is_builtin: bool


class AuthMethods(Mapping[str, AuthMechanism]):
    """aiosmtpd's table of AUTH mechanisms (``_auth_methods``), bound on lookup.

    aiosmtpd builds a dict of bound methods and named tuples per connection (about
    400 bytes), though only EHLO (its names) and AUTH (one entry) read it. The table
    of functions is made once per class and set of mechanisms; this keeps only the
    session and that table.
    """

    __slots__ = ("_smtp", "_table")
    _TABLES: ClassVar[dict[tuple[type, frozenset[str]], dict[str, tuple[Any, bool]]]] = {}

    def __init__(self, smtp: object, built: dict[str, Any]) -> None:
        self._smtp = smtp
        key = (type(smtp), frozenset(built))
        table = self._TABLES.get(key)
        if table is None:  # (the function, is it aiosmtpd's own) per mechanism
            table = self._TABLES[key] = {
                name: (entry.method.__func__, entry.is_builtin) for name, entry in built.items()}
        self._table = table

    def __getitem__(self, name: str) -> AuthMechanism:
        function, is_builtin = self._table[name]
        return AuthMechanism(types.MethodType(function, self._smtp), is_builtin)

    def __iter__(self) -> Iterator[str]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)
