"""The door in front of the HTTP API: who may ask, from where, and how much.

One ASGI middleware, checked in this order for every HTTP request:

1. **Host** (loopback binds only): the ``Host`` header must name a loopback
   address or ``localhost``, so a web page elsewhere cannot reach fakemx by
   pointing a name of its own at 127.0.0.1 (DNS rebinding).
2. **Origin**: a browser request from another site is refused (403), so a page
   open in the same browser cannot switch profiles behind the user's back.
3. **Token** (when one is set): ``Authorization: Bearer TOKEN`` (the scheme in
   any case, RFC 7235), compared in constant time, or the cookie
   the page gets by opening ``/?token=TOKEN`` once (a browser cannot add a
   header to a page load or to EventSource). A lab in student mode also takes
   the students' token: their requests are marked ``scope["fakemx_role"] =
   "student"`` (the views hide what is not revealed yet) and may only read.
4. **Body size**: more than ``max_body_bytes`` is refused with 413, whether the
   length is announced or not.

Every refusal is the API's JSON error ``{"status": N, "error": "..."}``.
"""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from urllib.parse import parse_qs, quote, unquote, urlsplit

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fakemx.api.server import is_loopback

TOKEN_COOKIE = "fakemx_token"
ROLE = "fakemx_role"  # the scope key: "instructor" (the API token, or none set) or "student"
STUDENT, INSTRUCTOR = "student", "instructor"
_READS = ("GET", "HEAD")
MAX_BODY_BYTES = 256 * 1024


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``; an HTTPException so FastAPI renders it, not a 400 or a 500."""

    def __init__(self, max_body_bytes: int) -> None:
        super().__init__(413, f"request body over {max_body_bytes} bytes")


def _host_name(host_header: str) -> str:
    """``127.0.0.1:8025`` -> ``127.0.0.1``, ``[::1]:8025`` -> ``::1``."""
    if host_header.startswith("["):
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        token: str | None,
        loopback_only: bool,
        max_body_bytes: int = MAX_BODY_BYTES,
        student_token: str | None = None,
    ) -> None:
        self.app = app
        self.token = token
        self.student_token = student_token
        self.loopback_only = loopback_only
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = headers.get("host", "")
        if self.loopback_only and not is_loopback(_host_name(host)):
            await _refuse(send, 403, f"Host {host!r} is not a loopback name; "
                                     "open fakemx as http://127.0.0.1:PORT/")
            return
        origin = headers.get("origin")
        if origin is not None and urlsplit(origin).netloc != host:
            await _refuse(send, 403, f"cross-origin request from {origin} refused")
            return
        scope[ROLE] = INSTRUCTOR
        if self.token is not None and not await self._authorised(scope, headers, send):
            return
        if scope[ROLE] == STUDENT and scope["method"] not in _READS:
            await _refuse(send, 403, "a student's token may only look (the trainer's token"
                                     " changes the lab)")
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await _refuse(send, 413, f"request body over {self.max_body_bytes} bytes")
            return
        await self._call_capped(scope, receive, send)

    async def _authorised(self, scope: Scope, headers: Headers, send: Send) -> bool:
        """Check the token; answers the request itself (and returns False) when it is wrong.

        ``GET /?token=TOKEN`` with the right token sets the cookie and sends the
        browser on to ``/``, so the token does not stay in the address bar.
        """
        assert self.token is not None
        offered = _bearer_credentials(headers.get("authorization", ""))
        cookie = SimpleCookie(headers.get("cookie", ""))
        if not offered and TOKEN_COOKIE in cookie:
            offered = unquote(cookie[TOKEN_COOKIE].value)
        role = self._role(offered)
        if role is not None:
            scope[ROLE] = role
            return True
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        given = query.get("token", [""])[0]
        if scope["path"] == "/" and self._role(given) is not None:
            cookie_value = quote(given, safe="")
            await send({"type": "http.response.start", "status": 303, "headers": [
                (b"location", b"/"),
                (b"set-cookie", f"{TOKEN_COOKIE}={cookie_value}; HttpOnly; SameSite=Strict;"
                                f" Path=/".encode("latin-1")),
                (b"content-length", b"0"),
            ]})
            await send({"type": "http.response.body", "body": b""})
            return False
        await _refuse(send, 401, "missing or wrong API token (send Authorization: Bearer TOKEN,"
                                 " or open /?token=TOKEN in a browser)",
                      [(b"www-authenticate", b'Bearer realm="fakemx"')])
        return False

    def _role(self, offered: str) -> str | None:
        """Whose token ``offered`` is (compared in constant time), or None."""
        assert self.token is not None
        if not offered:
            return None
        if hmac.compare_digest(offered.encode(), self.token.encode()):
            return INSTRUCTOR
        if self.student_token is not None and hmac.compare_digest(
                offered.encode(), self.student_token.encode()):
            return STUDENT
        return None

    async def _call_capped(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, cutting off a body that grows past the cap while it streams in."""
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLarge(self.max_body_bytes)
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        except _BodyTooLarge as exc:
            if not started:  # read outside a route, so no handler rendered it
                await _refuse(send, exc.status_code, exc.detail)


def _bearer_credentials(authorization: str) -> str:
    """The token of ``Bearer TOKEN``; the scheme is case-insensitive (RFC 7235 2.1)."""
    scheme, _, credentials = authorization.strip().partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else ""


async def _refuse(
    send: Send, status: int, error: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    body = json.dumps({"status": status, "error": error}, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *(extra or []),
    ]})
    await send({"type": "http.response.body", "body": body})
