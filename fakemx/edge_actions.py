"""The malformed and edge replies (issue #15): their actions, as profile data.

Each class is one action type (see fakemx.actions), named in a rule by its key:
``unterminated``, ``segmented``, ``mixed_codes``, ``helo_only``,
``other_server`` and ``inject_plaintext``. fakemx/smtp/edges.py carries them out;
``EdgeAction`` marks them so the executor hands them over in one case.

They are faults of the server's *form*, not of its verdict: a client must read
a reply that arrives in pieces, ends without CRLF or disagrees with itself,
fall back to HELO, give up on a port where another protocol answers, and throw
away plaintext that came with ``220 Ready to start TLS``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from fakemx.strict import Strict

if TYPE_CHECKING:
    from fakemx.model import Reply

# What another server on the port does with a client that waits for it (seconds
# before it closes): nginx's client_header_timeout, OpenSSH's LoginGraceTime.
OTHER_SERVER_SECONDS = {"http": 60.0, "ssh": 120.0}
_REPLY_LINE = re.compile(r"^([2-5][0-9][0-9])([- ])(.*)$")


class EdgeAction:
    """An action carried out by fakemx/smtp/edges.py."""

    def as_reply(self) -> Reply | None:
        """The reply a client acts on (RFC 5321 4.2.1: the last line's code), if any."""
        return None


def _no_cr(value: str) -> str:
    if "\r" in value:
        raise ValueError("must not contain a carriage return; use \\n between lines")
    return value


def _lines_one_each(lines: list[str]) -> list[str]:
    if not lines:
        raise ValueError("give at least one line")
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ValueError(f"{line!r} must be one line: give each line as its own item")
    return lines


class Unterminated(Strict, EdgeAction):
    """Reply ``code text``, the last line without its CRLF, then close (FIN)."""

    code: Annotated[int, Field(ge=200, le=599)]
    text: str = ""
    _text_has_no_cr = field_validator("text")(_no_cr)

    def as_reply(self) -> Reply:
        from fakemx.model import Reply

        return Reply(code=self.code, text=self.text, close="fin")


class Segmented(Strict, EdgeAction):
    """The reply in ``segments`` TCP segments, ``pause_seconds`` apart.

    With ``code`` (and ``text``) that reply goes instead of the normal one;
    without, the stage's own reply (the greeting, the whole EHLO reply, the
    250 after the final dot ...) is the one cut into pieces.
    """

    code: Annotated[int, Field(ge=200, le=599)] | None = None
    text: str = ""
    segments: Annotated[int, Field(ge=2, le=64)] = 3
    pause_seconds: Annotated[float, Field(gt=0, le=3600)] = 0.2
    _text_has_no_cr = field_validator("text")(_no_cr)

    @model_validator(mode="after")
    def _text_needs_code(self) -> Segmented:
        if self.code is None and self.text:
            raise ValueError("text without code: give code too, or leave both out to split"
                             " the stage's own reply")
        return self

    def as_reply(self) -> Reply | None:
        from fakemx.model import Reply

        return None if self.code is None else Reply(code=self.code, text=self.text)


class MixedCodes(Strict, EdgeAction):
    """A multi-line reply whose lines carry different codes, sent as written.

    RFC 5321 4.2.1 says every line of a multi-line reply has the same code;
    clients that follow it act on the last line (Postfix, smtplib), so the
    session goes on as after that reply. A 2xx last line after the final dot
    means accepted: the message is stored first.
    """

    lines: list[str]

    @field_validator("lines")
    @classmethod
    def _reply_lines_with_two_codes(cls, lines: list[str]) -> list[str]:
        _lines_one_each(lines)
        parsed = [_REPLY_LINE.match(line) for line in lines]
        bad = next((line for line, m in zip(lines, parsed, strict=True) if m is None), None)
        if bad is not None:
            raise ValueError(f"{bad!r} is not a reply line: start it with a code from 200 to"
                             " 599 and '-' (more lines follow) or ' ' (the last line)")
        marks = [m[2] for m in parsed if m is not None]
        if len(lines) < 2 or marks[-1] != " " or " " in marks[:-1]:
            raise ValueError("write a multi-line reply: every line but the last as 'CODE-text',"
                             " the last as 'CODE text'")
        if len({m[1] for m in parsed if m is not None}) < 2:
            raise ValueError("every line has the same code: give one line another code, or use"
                             " reply for a well-formed reply")
        return lines

    def as_reply(self) -> Reply:
        from fakemx.model import Reply

        last = _REPLY_LINE.match(self.lines[-1])
        assert last is not None
        return Reply(code=int(last[1]), text=last[3])

    @property
    def wire(self) -> str:
        return "\r\n".join(self.lines)


@dataclass(frozen=True)
class HeloOnly(EdgeAction):
    """An old server: ``502 5.5.1`` to EHLO (RFC 5321 4.2.4), ``250`` to HELO."""

    reply: str = "502 5.5.1 Error: command not implemented"


class OtherServer(Strict, EdgeAction):
    """Another protocol's server on the port: ``http`` (nginx) or ``ssh`` (OpenSSH).

    ``ssh`` sends its identification at once; both answer the client's first
    line as that server does (``HTTP/1.1 400 Bad Request``, ``Invalid SSH
    identification string.``) and close; a client that waits for a greeting
    gets the close after ``seconds`` (nginx's 60, OpenSSH's 120 by default).
    """

    protocol: Literal["http", "ssh"]
    seconds: Annotated[float, Field(gt=0)] = OTHER_SERVER_SECONDS["http"]

    @model_validator(mode="before")
    @classmethod
    def _that_servers_timeout(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("seconds") is None:
            seconds = OTHER_SERVER_SECONDS.get(data.get("protocol", ""))
            data = {**data, "seconds": seconds} if seconds else data
        return data


class InjectPlaintext(Strict, EdgeAction):
    """Plaintext ``lines`` in the same TCP segment as ``220 Ready to start TLS``.

    The STARTTLS command-injection class (CVE-2011-0411) seen from the server
    side: a client that keeps buffered plaintext across the handshake reads
    these lines as replies to its first commands over TLS.
    """

    lines: list[str]
    _one_line_each = field_validator("lines")(_lines_one_each)

    @property
    def wire(self) -> bytes:
        return "".join(f"{line}\r\n" for line in self.lines).encode()


EDGE_ACTION_KEYS = ("unterminated", "segmented", "mixed_codes", "helo_only", "other_server",
                    "inject_plaintext")
