"""The API's error table: each failure becomes ``{"status": N, "error": "one line"}``.

| failure                                   | status |
|-------------------------------------------|--------|
| invalid body, query or path; bad profile  | 422    |
| unknown server, rule, session, message    | 404    |
| listener cannot rebind; other FakeMX error| 409    |
| token missing or wrong                    | 401    |
| body over the cap                         | 413    |
| a bug in fakemx                           | 500    |
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from fakemx.api.views import Hidden, NotFound
from fakemx.control import UnknownRuleError
from fakemx.errors import FakeMXError, ProfileError, UnknownProfileError

log = logging.getLogger(__name__)


def error_response(status: int, error: str) -> JSONResponse:
    return JSONResponse({"status": status, "error": error}, status_code=status)


def _field(loc: Sequence[int | str]) -> str:
    """``("body", "rules", 0, "reply", "code")`` -> ``body: rules[0].reply.code``."""
    if not loc:
        return "request"
    where, path = str(loc[0]), ""
    for item in loc[1:]:
        if isinstance(item, int):
            path += f"[{item}]"
        elif "[" in item or item.startswith("function-"):
            continue  # pydantic's union branch labels, not a field the user wrote
        else:
            path += ("." if path else "") + item
    return f"{where}: {path}" if path else where


def one_line(errors: Sequence[Any]) -> str:
    """The first validation error as one line, e.g.
    ``body: rule.reply.code: Input should be less than or equal to 599 (and 1 more)``."""
    if not errors:
        return "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        reason = first.get("ctx", {}).get("error", "")
        return f"body: not valid JSON ({reason})" if reason else "body: not valid JSON"
    problem = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{_field(tuple(first.get('loc', ())))}: {problem}{more}"


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return error_response(422, one_line(exc.errors()))


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no such endpoint: {request.method} {request.url.path} (see /openapi.json)"
    headers = dict(exc.headers or {})
    if exc.status_code == 400:  # FastAPI's answer to a body it cannot decode: bad input too
        return error_response(422, "body: cannot be read (send UTF-8 JSON)")
    if exc.status_code == 405:
        detail = f"{request.method} is not allowed on {request.url.path} (see /openapi.json)"
        headers["allow"] = ", ".join(_allowed_methods(request))
    response = error_response(exc.status_code, detail)
    response.headers.update(headers)
    return response


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at this path. Starlette names only the first
    route's, but FastAPI makes one route per method (GET and PUT of a profile)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, APIRoute) and route.path_regex.match(request.url.path):
            methods |= route.methods or set()
    return sorted(methods)


async def _fakemx(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, NotFound | UnknownRuleError):
        return error_response(404, str(exc))
    if isinstance(exc, Hidden):
        return error_response(403, str(exc))
    if isinstance(exc, ProfileError | UnknownProfileError):
        return error_response(422, str(exc))
    return error_response(409, str(exc))  # e.g. ListenError: the port was taken meanwhile


async def _tls(request: Request, exc: Exception) -> JSONResponse:
    # OpenSSL refuses some settings the schema cannot know of (a cipher list
    # it has no suite for); the profile was not applied, so it is bad input.
    return error_response(422, f"profile.tls: OpenSSL refused the TLS settings: {exc}")


async def _bug(request: Request, exc: Exception) -> JSONResponse:
    log.error("fakemx API: %s %s failed", request.method, request.url.path, exc_info=exc)
    return error_response(500, f"internal error: {type(exc).__name__}: {exc} (please report it)")


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(NotFound, _fakemx)
    app.add_exception_handler(Hidden, _fakemx)
    app.add_exception_handler(FakeMXError, _fakemx)
    app.add_exception_handler(ssl.SSLError, _tls)
    app.add_exception_handler(Exception, _bug)
