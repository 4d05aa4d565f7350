"""How aiosmtpd reaches a FakeSMTP: its command table and its handler hooks.

Both exist once per connection, tens of thousands at a time in the timeout
scenarios, so both are made small and cheap to create.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fakemx.smtp import FakeSMTP


class Commands:
    """aiosmtpd's command table (``_smtp_methods``), with every command journaled.

    aiosmtpd builds a dict of about 20 bound methods per connection; wrapping
    each in a closure doubled that. This one small object binds on lookup
    instead, which matters with 15,000 stalled connections held open.
    """

    __slots__ = ("_smtp",)

    def __init__(self, smtp: FakeSMTP) -> None:
        self._smtp = smtp

    def get(self, name: str, default: Any = None) -> Any:
        method = getattr(self._smtp, f"smtp_{name}", None) if name.isalpha() else None
        if method is None:
            return default
        bound = functools.partial(self._smtp.run_command, name, method)
        return functools.update_wrapper(bound, method)  # keeps HELP's __smtp_syntax__

    def items(self) -> Iterator[tuple[str, Any]]:
        for attribute in dir(self._smtp):
            if attribute.startswith("smtp_"):
                yield attribute[5:], getattr(self._smtp, attribute)


COMMAND_NAMES_CACHE: dict[str, tuple[str, ...]] = {}


def command_names(cls: type) -> tuple[str, ...]:
    key = f"{cls.__module__}.{cls.__qualname__}"
    if key not in COMMAND_NAMES_CACHE:
        COMMAND_NAMES_CACHE[key] = tuple(n for n in dir(cls) if n.startswith(("auth_", "smtp_")))
    return COMMAND_NAMES_CACHE[key]


class Hooks:
    """The aiosmtpd handler: hands parsed commands to the FakeSMTP that received them."""

    def __dir__(self) -> list[str]:
        # aiosmtpd scans dir(handler) and inspect.getmembers(handler) per connection.
        return ["handle_EHLO", "handle_MAIL", "handle_RCPT"]

    async def handle_EHLO(
        self, server: FakeSMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return server.ehlo_lines(responses)

    async def handle_MAIL(
        self, server: FakeSMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> Any:
        return await server.on_mail(address, options)

    async def handle_RCPT(
        self, server: FakeSMTP, session: Any, envelope: Any, address: str, options: list[str]
    ) -> Any:
        return await server.on_rcpt(address)


# aiosmtpd's SMTP.__init__ runs inspect.signature() on handle_EHLO for every
# connection (to tell its two hook forms apart); a precomputed __signature__
# (PEP 362) answers that at once.
Hooks.handle_EHLO.__signature__ = inspect.signature(Hooks.handle_EHLO)  # type: ignore[attr-defined]
HOOKS = Hooks()
