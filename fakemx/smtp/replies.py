"""Reply text: what a rule's reply looks like on the wire."""

from __future__ import annotations

import re

from fakemx.clientbytes import shown
from fakemx.model import Reply

_PLACEHOLDER = re.compile(r"\{(client_ip|helo|sender|recipient|hostname)\}")


def render(reply: Reply, values: dict[str, str]) -> str:
    """``451 text`` or a multi-line reply (RFC 5321 4.2.1), placeholders filled in.

    Placeholders are a fixed set filled by regex, not ``str.format``: profile
    text is data and must not reach attributes of the values. Values come from
    the client (HELO, addresses) and are filled in escaped: no undecodable byte
    can make the reply unsendable, no CR or LF can add a reply line.
    """
    text = _PLACEHOLDER.sub(lambda m: shown(values.get(m[1], "")), reply.text)
    lines = text.split("\n") if text else [""]
    head = [f"{reply.code}-{line}" for line in lines[:-1]]
    last = f"{reply.code} {lines[-1]}".rstrip()
    return "\r\n".join([*head, last])


async def no_reply() -> None:
    """An action's answer when it changes nothing: carry on with the normal reply."""
    return None
