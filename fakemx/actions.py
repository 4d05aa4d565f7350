"""What a rule does: one type per action, carried out by one executor (FakeSMTP.perform).

A profile names a rule's action by its key (``reply = {...}``, ``drop = "rst"``,
``accept = true``, ...), which is the file format; ``Rule.action`` gives it as one
of the types below, and the executor matches on the type. A new action is a type
here, its key on ``model.Rule``, and one case in the executor.

``Reply``, ``Stall`` and ``Then`` are the profile models themselves; the actions
that are a single value in the file are the small frozen classes here. The
malformed and edge replies are in fakemx.edge_actions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from fakemx.edge_actions import EdgeAction, HeloOnly, InjectPlaintext, OtherServer
from fakemx.stages import Stage

if TYPE_CHECKING:
    from fakemx.model import Reply

DropHow = Literal["fin", "rst"]
# What a STARTTLS rule can do to the handshake after "220 Ready to start TLS":
# answer the ClientHello with a fatal alert, reset, or never answer.
HandshakeFault = Literal["alert", "rst", "stall"]


@dataclass(frozen=True)
class Accept:
    """Carry on as the healthy sink does (store and 250 at end of data); later rules
    for the stage do not fire."""


@dataclass(frozen=True)
class Drop:
    """Hang up without a reply: ``fin`` (orderly close) or ``rst`` (reset)."""

    how: DropHow


@dataclass(frozen=True)
class StripExtensions:
    """Leave these keywords out of the EHLO reply (and blank STARTTLS, as firewalls do)."""

    names: frozenset[str]


@dataclass(frozen=True)
class MaskBanner:
    """Greet with ``220 <text>``, as a banner-masking firewall does."""

    text: str


@dataclass(frozen=True)
class BreakHandshake:
    """Answer STARTTLS with 220, then break the handshake: alert, rst or stall."""

    how: HandshakeFault


# Actions that make sense at one stage only; every other action applies at any stage.
ONLY_AT: dict[type, Stage] = {
    StripExtensions: Stage.EHLO,
    MaskBanner: Stage.GREETING,
    BreakHandshake: Stage.STARTTLS,
    HeloOnly: Stage.EHLO,
    OtherServer: Stage.GREETING,
    InjectPlaintext: Stage.STARTTLS,
}


def final_reply(action: object) -> Reply | None:
    """The reply ``action`` ends with (a reply, or a stall's ``then`` reply), if any."""
    from fakemx.model import Reply, Stall

    if isinstance(action, Reply):
        return action
    if isinstance(action, Stall) and action.then is not None:
        return action.then.reply
    if isinstance(action, EdgeAction):
        return action.as_reply()
    return None


def accepts(action: object) -> bool:
    """Does ``action`` at end of data say the message is accepted (a 2xx, or accept)?"""
    if isinstance(action, Accept):
        return True
    reply = final_reply(action)
    return reply is not None and 200 <= reply.code < 300
