"""The seam to aiosmtpd (and asyncio): every use of their private members is here.

fakemx builds on aiosmtpd's ``SMTP`` protocol. Where aiosmtpd offers a
documented hook (``smtp_<COMMAND>`` methods, the handler's ``handle_EHLO``,
``handle_MAIL``, ``handle_RCPT``) fakemx uses it; where it offers none (the
greeting, the idle timer, the reader, the TLS layer, the end of a transaction)
this module reaches into it, and nowhere else does. The names it touches are
listed in ``PRIVATE_METHODS``, ``PRIVATE_ATTRIBUTES`` and ``ASYNCIO_PRIVATE``;
tests/test_aiosmtpd_canary.py is generated from those lists, so an aiosmtpd or
Python upgrade that moves one fails one named test.

A session that fakemx ends itself (a drop, a reply with ``close``) raises
``SessionOver``. It is a CancelledError because that is the one exception
aiosmtpd's command loop unwinds on without answering ``500`` (it closes the
writer and stops, as after its own QUIT); every other exception becomes a
``500 Error`` reply.
"""

from __future__ import annotations

import _ssl
import asyncio
import contextlib
import re
import ssl
import types
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP, Envelope, Session

from fakemx.smtp.handler import HOOK_TABLE, HOOKS, NO_HOOKS, AuthMethods

# Overridden or called: aiosmtpd.smtp.SMTP methods that are not public API.
PRIVATE_METHODS = ("_handle_client", "_timeout_cb", "_reset_timeout", "_create_envelope",
                   "_set_post_data_state", "_create_session", "_getaddr")
# Read or written: attributes aiosmtpd's SMTP sets on itself.
PRIVATE_ATTRIBUTES = ("_smtp_methods", "_original_transport", "_timeout_handle", "_reader",
                      "_writer", "_tls_protocol", "_handle_hooks", "_auth_methods",
                      "_ehlo_hook_ver")
# asyncio.sslproto.SSLProtocol: the SSL object of a handshake that failed (asyncio
# publishes "ssl_object" only after a handshake succeeds).
ASYNCIO_PRIVATE = ("_sslobj",)
# asyncio.streams.FlowControlMixin: the writers waiting in drain(). asyncio makes it a
# deque, whose first block is 760 bytes per connection; it only appends to it, removes
# from it and iterates it, which a list (56 bytes while empty) does as well.
ASYNCIO_STREAMS_PRIVATE = ("_drain_waiters",)
# asyncio.StreamReader: how far readuntil() looks for its separator (else
# LimitOverrunError) and, doubled, the buffer at which it stops reading the socket.
ASYNCIO_READER_PRIVATE = ("_limit",)
# ssl.SSLSocket's inner object: the chain the peer sent (public only from Python 3.13),
# which diagnose's DANE check matches TLSA records against.
SSL_PRIVATE = ("get_unverified_chain",)
# Set on every connection's protocol object by aiosmtpd's SMTP and asyncio's
# StreamReaderProtocol (its __init__ and connection_made). AiosmtpdSession makes them
# slots: about 70 attributes in the instance's dict cost 1.6 kB per connection (a
# dict past 30 keys no longer shares its keys), as slots 8 bytes each. Not kept
# here: ``_source_traceback``, which asyncio also defines on the class (a slot would
# hide that default). tests/test_hostile_clients.py checks that a held connection's
# protocol keeps no per-connection attribute in a dict.
PROTOCOL_ATTRIBUTES = (
    "__ident__", "loop", "_loop", "_paused", "_drain_waiters", "_connection_lost",
    "_stream_reader_wr", "_strong_reader", "_reject_connection", "_stream_writer", "_task",
    "_transport", "_client_connected_cb", "_over_ssl", "_closed", "event_handler",
    "data_size_limit", "enable_SMTPUTF8", "_decode_data", "hostname", "tls_context",
    "require_starttls", "_timeout_duration", "_timeout_handle", "_tls_handshake_okay",
    "_tls_protocol", "_original_transport", "session", "envelope", "transport",
    "_handler_coroutine", "_auth_require_tls", "_proxy_timeout", "_authenticator",
    "_auth_callback", "_auth_required", "_auth_methods", "_handle_hooks", "_ehlo_hook_ver",
    "_smtp_methods", "_enforce_call_limit", "_reader", "_writer",
)
# aiosmtpd's own greeting, which fakemx replaces with its own (see _handle_client).
AIOSMTPD_GREETING = "await self.push('220 {} {}'.format(self.hostname, self.__ident__))"


class SessionOver(asyncio.CancelledError):
    """fakemx ended the session itself; unwinds aiosmtpd's loop as its QUIT does."""


class Commands:
    """aiosmtpd's command table (``_smtp_methods``), with every command run through
    ``run_command`` (journaled, limited, fair).

    aiosmtpd builds a dict of about 20 bound methods per connection; wrapping
    each in a closure doubled that. This one small object binds on lookup
    instead, which matters with 15,000 stalled connections held open; what it
    binds is made once per class (``runner``), so a command costs one bound method.
    """

    __slots__ = ("_smtp",)

    def __init__(self, smtp: AiosmtpdSession) -> None:
        self._smtp = smtp

    def get(self, name: str, default: Any = None) -> Any:
        run = runner(type(self._smtp), name) if name.isalpha() else None
        if run is None or not self._smtp.offers(name):
            return default  # aiosmtpd: 500 Error: command "NAME" not recognized
        return types.MethodType(run, self._smtp)

    def items(self) -> Iterator[tuple[str, Any]]:
        for attribute in command_names(type(self._smtp)):
            if attribute.startswith("smtp_") and self._smtp.offers(attribute[5:]):
                yield attribute[5:], getattr(self._smtp, attribute)


_RUNNERS: dict[tuple[type, str], Callable[..., Awaitable[None]]] = {}


def runner(cls: type, name: str) -> Callable[..., Awaitable[None]] | None:
    """``smtp_NAME`` of ``cls`` run through ``run_command``, as a plain function made once
    per class and command (it carries HELP's ``__smtp_syntax__``); None if ``cls`` has
    no such command (not kept: the names a client makes up are not bounded)."""
    found = _RUNNERS.get((cls, name))
    if found is None:
        method = getattr(cls, f"smtp_{name}", None)
        if method is None:
            return None

        async def run(smtp: Any, arg: str | None) -> None:
            await smtp.run_command(name, getattr(smtp, f"smtp_{name}"), arg)

        run.__dict__.update(method.__dict__)  # __smtp_syntax__ and its kin, for HELP
        run.__doc__, run.__name__ = method.__doc__, method.__name__
        found = _RUNNERS[(cls, name)] = run
    return found


class QuietSession(Session):
    """aiosmtpd's Session, minus a warning per login.

    aiosmtpd's own ``smtp_AUTH`` sets the deprecated ``login_data`` after every
    successful AUTH, and that property logs "Session.login_data is deprecated"
    each time: a log line any client with a password could cause.
    """

    legacy_login_data: Any = None

    @property
    def login_data(self) -> Any:
        return self.legacy_login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self.legacy_login_data = value


_COMMAND_NAMES: dict[type, tuple[str, ...]] = {}


def command_names(cls: type) -> tuple[str, ...]:
    if cls not in _COMMAND_NAMES:
        _COMMAND_NAMES[cls] = tuple(n for n in dir(cls) if n.startswith(("auth_", "smtp_")))
    return _COMMAND_NAMES[cls]


# RFC 5321's Path in its everyday form: <local@domain>, both dot-atoms of ASCII atext
# (RFC 5322 3.2.3), which the email package reads back unchanged.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_PATH = re.compile(rf"<({_ATEXT}(?:\.{_ATEXT})*@{_ATEXT}(?:\.{_ATEXT})*)>")


def plain_path(arg: str) -> tuple[str, str] | None:
    """(address, the rest) as aiosmtpd's ``_getaddr`` reads an everyday ``<local@domain>``
    path; None for any other form (quoted, a literal, a route, a comment...), which is the
    email package's to parse."""
    found = _PLAIN_PATH.match(arg)
    if found is None:
        return None
    rest = arg[found.end():]
    if rest[:1] in (" ", "\t"):  # the email package skips folding white space (str.lstrip)
        rest = rest.lstrip()
    return None if rest[:1] == "(" else (found[1], rest)


def ssl_object_of(protocol: object) -> ssl.SSLObject | None:
    """The SSL object of an asyncio TLS protocol, also when its handshake failed."""
    found = getattr(protocol, "_sslobj", None)
    return found if isinstance(found, ssl.SSLObject) else None


def peer_chain(tls: ssl.SSLSocket) -> list[bytes]:
    """The certificates the peer sent, leaf first, as DER (empty when it sent none)."""
    public = getattr(tls, "get_unverified_chain", None)  # Python 3.13
    inner: Any = getattr(tls, "_sslobj", None)
    chain = public() if public is not None else inner.get_unverified_chain()
    return [cert if isinstance(cert, bytes) else cert.public_bytes(_ssl.ENCODING_DER)
            for cert in chain or ()]


class AiosmtpdSession(SMTP):
    """aiosmtpd's SMTP protocol, with what fakemx needs of its insides as plain members.

    Subclasses implement ``greet`` (sent instead of aiosmtpd's greeting),
    ``run_command`` (every command goes through it), ``outgoing`` (may
    rewrite or hold a reply), ``on_reply`` (every reply line sent),
    ``on_crash`` (an exception escaping the session), ``idle_timed_out``,
    ``new_envelope`` and ``auth_options``.
    """

    def __dir__(self) -> list[str]:
        """Only the ``auth_*`` names.

        aiosmtpd's ``__init__`` scans ``inspect.getmembers(self)`` for these and
        ``dir(self)`` for the ``smtp_*`` ones on every connection; with every
        attribute of the class that scan was about a third of the cost of accepting
        a connection. Its table of ``smtp_*`` methods is replaced by ``Commands``
        anyway, so it need not find them.
        """
        return [name for name in command_names(type(self)) if name.startswith("auth_")]

    __slots__ = (*PROTOCOL_ATTRIBUTES, "_swallow_next_push", "shape_next_reply")

    def __init__(self, **options: Any) -> None:
        options |= self.auth_options()
        super().__init__(NO_HOOKS, loop=asyncio.get_running_loop(), **options)
        self.event_handler = HOOKS
        self._ehlo_hook_ver = "new"  # HOOKS.handle_EHLO's form: five arguments
        self._drain_waiters: list[asyncio.Future[None]] = []  # see ASYNCIO_STREAMS_PRIVATE
        self._swallow_next_push = False
        # Writes the next reply instead of aiosmtpd's push (fakemx/smtp/edges.py).
        self.shape_next_reply: Callable[[bytes], Awaitable[None]] | None = None
        # aiosmtpd only calls .get() and .items() on it; see Commands.
        self._smtp_methods = Commands(self)  # type: ignore[assignment]
        self._handle_hooks = HOOK_TABLE  # see HOOK_TABLE and AuthMethods
        self._auth_methods = AuthMethods(self, self._auth_methods)  # type: ignore[assignment]

    # region hooks for the subclass ------------------------------------------------

    async def greet(self) -> None:
        raise NotImplementedError

    async def run_command(self, name: str, method: Any, arg: str | None) -> None:
        raise NotImplementedError

    def on_reply(self, text: str) -> None:
        """A reply is about to go out (``text`` may hold several CRLF-separated lines)."""

    def offers(self, command: str) -> bool:
        """Does this session know ``command`` (BDAT only with CHUNKING, say)? One it does
        not is aiosmtpd's unknown command, and HELP leaves it out."""
        return True

    def outgoing(self, text: str) -> str | None:
        """A reply on its way out: the text to send, or None to hold it (sent later
        with ``send_reply``)."""
        return text

    def on_push_after_close(self) -> None:
        """aiosmtpd answers after it hung up (see ``push``)."""

    def on_crash(self, error: Exception) -> None:
        """An exception escaped the session: a bug in fakemx."""

    def idle_timed_out(self) -> None:
        """aiosmtpd's idle timer fired; it closes the connection next."""

    def new_envelope(self) -> Envelope:
        return Envelope()

    def auth_options(self) -> dict[str, Any]:
        """aiosmtpd's AUTH settings (``auth_require_tls``, ``authenticator``, ...)."""
        return {}

    # endregion
    # region what aiosmtpd calls ----------------------------------------------------

    async def _handle_client(self) -> None:
        try:
            await self.greet()
            if self.envelope is None:  # see _create_envelope
                self.envelope = self.new_envelope()
            self._swallow_next_push = True  # aiosmtpd's own greeting comes next
            await super()._handle_client()
        except SessionOver:
            return
        except asyncio.CancelledError:
            self._writer.close()
            raise
        except Exception as exc:
            self.on_crash(exc)
            raise

    async def push(self, status: AnyStr) -> None:
        if self._swallow_next_push:
            self._swallow_next_push = False
            return
        if self.transport is None or self.transport.is_closing():
            # aiosmtpd hung up (e.g. after too many unknown commands) yet answers what
            # is still buffered; over TLS that write raised AttributeError in asyncio.
            self.on_push_after_close()
            raise SessionOver()
        text = status.decode("utf-8", "replace") if isinstance(status, bytes) else status
        outgoing = self.outgoing(text)
        if outgoing is not None:
            await self.send_reply(outgoing)

    async def send_reply(self, text: str) -> None:
        """Write ``text`` now (``push`` goes through ``outgoing`` first)."""
        if self.transport is None or self.transport.is_closing():
            self.on_push_after_close()
            raise SessionOver()
        self.on_reply(text)
        shape, self.shape_next_reply = self.shape_next_reply, None
        if shape is not None:  # the same bytes as aiosmtpd's (UTF-8: SMTPUTF8 is on)
            await shape(text.encode())
            return
        await super().push(text)

    def _timeout_cb(self) -> None:
        self.idle_timed_out()
        super()._timeout_cb()  # type: ignore[no-untyped-call]

    def _create_envelope(self) -> Envelope | None:  # type: ignore[override]  # None: see below
        if self.session is None:
            # aiosmtpd's connection_made, before the greeting: a session held there (a
            # greeting that never comes, by the thousand) needs no envelope yet, and
            # an envelope and its lists are about 450 bytes. _handle_client makes it.
            return None
        return self.new_envelope()

    def _create_session(self) -> Session:
        return QuietSession(self.loop)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's MAIL/RCPT address parser, with a fast path for ``<local@domain>``.

        aiosmtpd's own builds a class and runs the email package's parser for every
        address: about 70 us, twice per message. The everyday form is read by a
        pattern instead, to the same result (tests/test_seam_getaddr.py).
        """
        found = plain_path(arg)
        if found is None:
            address: str | None
            address, rest = super()._getaddr(arg)
            return address, rest
        if self.local_part_limit and len(found[0].rpartition("@")[0]) > self.local_part_limit:
            return None, None  # aiosmtpd's own check
        return found

    # endregion
    # region aiosmtpd's insides, as plain members -------------------------------------

    @property
    def reader(self) -> asyncio.StreamReader:
        reader: asyncio.StreamReader = self._reader
        return reader

    @contextlib.contextmanager
    def reading_ahead(self, size: int) -> Iterator[None]:
        """Let the reader look ``size`` bytes ahead for a separator, and buffer twice
        that, while the block runs. aiosmtpd gives it the longest command line (1001
        bytes): a body of 10 kB then stopped and restarted reading the socket (an
        epoll_ctl each) for every kilobyte taken from the buffer."""
        reader: Any = self._reader
        reader._limit = size
        try:
            yield
        finally:
            reader._limit = self.line_length_limit

    @property
    def writer(self) -> asyncio.StreamWriter:
        writer: asyncio.StreamWriter = self._writer
        return writer

    @property
    def raw_transport(self) -> asyncio.BaseTransport | None:
        """The TCP transport, also under STARTTLS's TLS layer."""
        transport: asyncio.BaseTransport | None = self._original_transport or self.transport
        return transport

    @property
    def upgrading(self) -> bool:
        """STARTTLS has begun: a connection_made now is the TLS layer's."""
        return self._original_transport is not None

    @property
    def authenticated(self) -> bool:
        """Has the client logged in with AUTH in this session (since its STARTTLS)?"""
        return bool(self.session is not None and self.session.authenticated)

    @property
    def tls_active(self) -> bool:
        return self._tls_protocol is not None or bool(self.session and self.session.ssl)

    def failed_handshake_ssl_object(self) -> ssl.SSLObject | None:
        return ssl_object_of(self._tls_protocol)

    def pause_idle_timer(self) -> None:
        """fakemx's own silence (a stall) is not the client's idleness."""
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()

    def restart_idle_timer(self) -> None:
        self._reset_timeout()

    def end_transaction(self) -> None:
        """After the final dot: a new MAIL may follow (aiosmtpd's own reset)."""
        self._set_post_data_state()  # type: ignore[no-untyped-call]

    # endregion
