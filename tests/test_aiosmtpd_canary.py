"""Canary for the seams fakemx depends on beyond aiosmtpd's and asyncio's documented API.

Generated from the lists in fakemx/smtp/seam.py, the one module that touches
their private members: an upgrade that moves one fails the test named after it,
instead of a profile silently misbehaving.
"""

from __future__ import annotations

import _ssl
import asyncio.sslproto
import asyncio.streams
import gc
import inspect
import re
import ssl
from importlib.metadata import version
from pathlib import Path

import aiosmtpd.smtp
import pytest
from wire import connect, read_reply, until, wait_closed

import fakemx
from fakemx.smtp import seam
from fakemx.smtp.session import FakeSMTP

SMTP_SOURCE = inspect.getsource(aiosmtpd.smtp.SMTP)


def test_pinned_minor_version() -> None:
    assert version("aiosmtpd").startswith("1.4.")


@pytest.mark.parametrize("name", seam.PRIVATE_METHODS)
def test_aiosmtpd_still_has_method(name: str) -> None:
    assert callable(getattr(aiosmtpd.smtp.SMTP, name, None)), name


@pytest.mark.parametrize("name", seam.PRIVATE_ATTRIBUTES)
def test_aiosmtpd_still_sets_attribute(name: str) -> None:
    assert re.search(rf"self\.{name}\b", SMTP_SOURCE), name


@pytest.mark.parametrize("name", seam.ASYNCIO_PRIVATE)
def test_asyncio_ssl_protocol_still_has(name: str) -> None:
    assert re.search(rf"self\.{name}\b", inspect.getsource(asyncio.sslproto.SSLProtocol)), name


@pytest.mark.parametrize("name", seam.ASYNCIO_STREAMS_PRIVATE)
def test_asyncio_streams_use_it_only_as_a_list_can_be(name: str) -> None:
    # fakemx swaps the deque for a list: append, remove and iteration only.
    source = inspect.getsource(asyncio.streams.FlowControlMixin)
    assert re.search(rf"self\.{name}\b", source), name
    used = set(re.findall(rf"self\.{name}\.(\w+)", source))
    assert used <= {"append", "remove"}, used


@pytest.mark.parametrize("name", seam.ASYNCIO_READER_PRIVATE)
def test_asyncio_stream_reader_still_reads_its_limit(name: str) -> None:
    # fakemx.smtp.seam.reading_ahead sets it for a body: readuntil's reach, and the
    # buffer at which the reader pauses the socket.
    for method in (asyncio.StreamReader.readuntil, asyncio.StreamReader.feed_data,
                   asyncio.StreamReader._maybe_resume_transport):
        assert re.search(rf"self\.{name}\b", inspect.getsource(method)), (method, name)


def test_a_held_connection_keeps_its_state_in_slots() -> None:
    # 15,000 stalled connections held at <= 8 kB each (bench/held_connections.py): what
    # aiosmtpd and asyncio set on each connection is a slot (seam.PROTOCOL_ATTRIBUTES).
    # A new attribute of an upgrade lands in a per-connection dict again: named here.
    with fakemx.FakeMX("4.4.315-no-greeting") as mx, connect(mx.host, mx.port):
        until(lambda: any(e.text == "stall for ever" for s in mx.sessions for e in s.events))
        record = mx.sessions[0]
        held = [o for o in gc.get_objects() if isinstance(o, FakeSMTP) and o.record is record]
        assert len(held) == 1
        assert set(vars(held[0])) <= {"_source_traceback"}  # asyncio's, also on its class


@pytest.mark.parametrize("name", seam.SSL_PRIVATE)
def test_ssl_socket_still_has(name: str) -> None:
    assert callable(getattr(ssl.SSLSocket, name, None) or getattr(_ssl._SSLSocket, name, None))


def test_handle_client_sends_its_greeting_first() -> None:
    # fakemx sends its own greeting and swallows the first push of _handle_client.
    source = inspect.getsource(aiosmtpd.smtp.SMTP._handle_client)
    pushes = [line.strip() for line in source.splitlines() if "self.push(" in line]
    assert pushes[0] == seam.AIOSMTPD_GREETING


def test_no_other_module_touches_these_members() -> None:
    names = (*seam.PRIVATE_METHODS, *seam.PRIVATE_ATTRIBUTES, *seam.ASYNCIO_PRIVATE)
    package = Path(fakemx.__file__).parent
    for path in package.rglob("*.py"):
        if path.name == "seam.py":
            continue
        text = path.read_text(encoding="utf-8")
        for name in names:
            assert not re.search(rf"\.{name}\b", text), f"{path.relative_to(package)}: {name}"


def test_exactly_one_greeting_on_the_wire() -> None:
    with fakemx.FakeMX() as mx, connect(mx.host, mx.port) as sock:
        assert read_reply(sock) == b"220 mx.fakemx.test ESMTP fakemx\r\n"
        sock.sendall(b"QUIT\r\n")
        assert wait_closed(sock).data == b"221 Bye\r\n"  # no second 220 in between
