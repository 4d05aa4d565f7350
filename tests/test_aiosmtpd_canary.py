"""Canary for the aiosmtpd seams fakemx depends on beyond its documented API.

If aiosmtpd changes one of these, this file fails loudly and names the seam,
instead of a profile silently misbehaving. See fakemx/smtp.py.
"""

from __future__ import annotations

import inspect
from importlib.metadata import version

import aiosmtpd.smtp
from wire import connect, read_reply, wait_closed

from fakemx import FakeMX


def test_pinned_minor_version() -> None:
    assert version("aiosmtpd").startswith("1.4.")


def test_handle_client_sends_the_greeting_first() -> None:
    # fakemx sends its own greeting and swallows the first push of _handle_client.
    source = inspect.getsource(aiosmtpd.smtp.SMTP._handle_client)
    pushes = [line.strip() for line in source.splitlines() if "self.push(" in line]
    assert pushes[0] == "await self.push('220 {} {}'.format(self.hostname, self.__ident__))"


def test_private_members_fakemx_uses_still_exist() -> None:
    smtp = aiosmtpd.smtp.SMTP
    for name in ("_handle_client", "_timeout_cb", "_reset_timeout", "_create_envelope",
                 "_set_post_data_state", "check_helo_needed", "check_auth_needed"):
        assert callable(getattr(smtp, name)), name
    init = inspect.getsource(smtp.__init__)
    for attribute in ("self._smtp_methods", "self._original_transport", "self._timeout_handle"):
        assert attribute in init, attribute
    assert "self._reader = reader" in inspect.getsource(smtp._cb_client_connected)


def test_exactly_one_greeting_on_the_wire() -> None:
    with FakeMX() as mx, connect(mx.host, mx.port) as sock:
        assert read_reply(sock) == b"220 mx.fakemx.test ESMTP fakemx\r\n"
        sock.sendall(b"QUIT\r\n")
        assert wait_closed(sock).data == b"221 Bye\r\n"  # no second 220 in between
