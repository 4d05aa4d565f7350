"""In-band triggers: the recipient address picks the fault for one message.

Enabled per profile (``inband = true``; the default sink has it on), so a test
can ask for a failure without reconfiguring the server. The grammar of the
recipient's local part, case-insensitive::

    local-part = action [ "+" stage ]
    action     = CODE [ "-" ENHANCED ]        ; reply, e.g. 451-4.4.0, 550-5.1.1, 421
               / "drop-fin" / "drop-rst"      ; hang up without a reply
               / "stall-" SECONDS             ; stay silent, then carry on
    stage      = "rcpt" / "data" / "end_of_data"   ; default: rcpt

``451-4.4.0@example.test`` answers ``451 4.4.0 ...`` to that RCPT;
``552-5.3.4+end_of_data@example.test`` accepts the recipient and answers the
final dot with ``552 5.3.4``; ``drop-rst+data@example.test`` resets the
connection when DATA arrives. A 421 reply also closes the connection, as RFC
5321 4.2.2 says a 421 must. Any other recipient is handled normally.
"""

from __future__ import annotations

import re

from fakemx.model import Reply, Rule, Stall, When
from fakemx.stages import Stage

_GRAMMAR = re.compile(
    r"""^(?:
        (?P<code>[245]\d\d)(?:-(?P<enhanced>[245]\.\d{1,3}\.\d{1,3}))?
      | drop-(?P<drop>fin|rst)
      | stall-(?P<stall>\d+(?:\.\d+)?)
    )(?:\+(?P<stage>rcpt|data|end_of_data))?$""",
    re.VERBOSE | re.IGNORECASE,
)

INBAND_STAGES = (Stage.RCPT, Stage.DATA, Stage.END_OF_DATA)


def parse(recipient: str) -> Rule | None:
    """The rule a recipient address asks for, or None for an ordinary address."""
    local = recipient.rpartition("@")[0] if "@" in recipient else recipient
    match = _GRAMMAR.match(local)
    if match is None:
        return None
    stage = Stage(match["stage"].lower()) if match["stage"] else Stage.RCPT
    name = f"inband:{local.lower()}"
    if match["code"]:
        code = int(match["code"])
        enhanced = match["enhanced"] or ""
        text = f"{enhanced} Requested by in-band trigger {local}".strip()
        reply = Reply(code=code, text=text, close="fin" if code == 421 else None)
        return Rule(stage=stage, name=name, reply=reply)
    if match["drop"]:
        return Rule(stage=stage, name=name, drop="rst" if match["drop"].lower() == "rst" else "fin")
    return Rule(stage=stage, name=name, stall=Stall(seconds=float(match["stall"])), when=When())
