"""The HTTP control API and the lab's web page, over one or several running FakeMX.

A thin layer: every handler is one FakeMX, catalog or view call. It runs on
the SMTP servers' own event loop (``fakemx.api.server`` starts uvicorn there),
so no call crosses a thread. The OpenAPI document is at ``/openapi.json``;
the page at ``/``; live events at ``/api/events``.

Imported only when ``--api`` is used: FastAPI and uvicorn cost ~150 ms to
import, which ``import fakemx`` and the pytest plugin must not pay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from fakemx import __version__
from fakemx.api import errors as api_errors
from fakemx.api.diagnosing import DiagnoseRequest, Diagnosis, diagnosis
from fakemx.api.events import EventHub
from fakemx.api.guard import Guard
from fakemx.api.models import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    ApiError,
    CatalogEntry,
    CatalogExplanation,
    CodeExplanation,
    CodeInfo,
    ListenerChoice,
    MessageOut,
    MessagePage,
    MessagesDeleted,
    ProfileChoice,
    RuleOut,
    ServerInfo,
    SessionOut,
    SessionPage,
    Version,
)
from fakemx.api.readers import Hiding, Server, shown_to, student_routes
from fakemx.api.views import (
    NotFound,
    StudentMode,
    catalog_entries,
    catalog_explanation,
    catalog_profile,
    code_explanation,
    code_infos,
    find_message,
    find_session,
    message_out,
    messages_page,
    rule_out,
    server_info,
    sessions_page,
)
from fakemx.journal import Outcome
from fakemx.mailbox import MessageQuery
from fakemx.model import Profile, Rule
from fakemx.server import FakeMX
from fakemx.store import Store
from fakemx.strict import build_all

WEB_DIR = Path(__file__).resolve().parent / "web"
# The page's files, by URL; a fixed table, so no request names a file itself.
_WEB_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/web/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/web/diagnose.js": ("diagnose.js", "text/javascript; charset=utf-8"),
    "/web/style.css": ("style.css", "text/css; charset=utf-8"),
    "/web/favicon.svg": ("favicon.svg", "image/svg+xml"),
}
_PAGE_HEADERS = {
    # Only fakemx's own files run on the page, and it cannot be framed elsewhere.
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "cache-control": "no-cache",
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ApiError, "description": description}
    for status, description in [
        (401, "token missing or wrong"),
        (403, "cross-origin request, or not a loopback Host"),
        (404, "unknown server, rule, session, message, profile or code"),
        (409, "the change cannot be made now (e.g. the port was taken)"),
        (413, "request body too large"),
        (422, "invalid input; nothing was changed"),
    ]
}

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="page size")]
Offset = Annotated[int, Query(ge=0, le=1_000_000, description="items to skip")]
MAX_UNIX_SECONDS = 1e11  # the year 5138


def _text(description: str) -> Any:
    return Query(max_length=1000, description=description)


def _when(description: str) -> Any:
    # Unix seconds only: a number is what any client language has, and what the
    # OpenAPI document can describe exactly (`fakemx messages` also takes ISO times).
    return Query(ge=0, le=MAX_UNIX_SECONDS, allow_inf_nan=False,
                 description=f"{description}, in Unix seconds")


def _message_query(
    server: str | None = None,
    sender: Annotated[str | None, _text("the envelope sender contains this")] = None,
    recipient: Annotated[str | None, _text("an envelope recipient contains this")] = None,
    subject: Annotated[str | None, _text("the Subject contains this (any case)")] = None,
    since: Annotated[float | None, _when("received at or after")] = None,
    until: Annotated[float | None, _when("received before")] = None,
) -> MessageQuery:
    return MessageQuery(sender=sender, recipient=recipient, subject=subject, server=server,
                        since=since, until=until)


# The search of GET and DELETE /api/messages, as `fakemx messages` takes it.
Search = Annotated[MessageQuery, Depends(_message_query)]





class Servers:
    """The running servers by name (``FakeMX.name``: the profile name in a lab)."""

    def __init__(self, servers: Sequence[FakeMX]) -> None:
        if not servers:
            raise ValueError("the API needs at least one server")
        self.all = list(servers)
        self._by_name = {mx.name: mx for mx in servers}

    def named(self, name: str) -> FakeMX:
        mx = self._by_name.get(name)
        if mx is None:
            raise NotFound(f"no server named {name!r} (see GET /api/servers)")
        return mx

    def selected(self, name: str | None) -> list[FakeMX]:
        return self.all if name is None else [self.named(name)]


def create_app(
    servers: Sequence[FakeMX], *, token: str | None = None, loopback_only: bool = True,
    students: StudentMode | None = None, student_token: str | None = None,
) -> FastAPI:
    """The API and page over ``servers``; call on the loop the servers run on.

    ``students``: a lab in student mode (what students may not see yet), who read
    with ``student_token``.
    """
    # The API validates bodies and documents the models (/openapi.json shows defaults that
    # are models): build every one now, as a validation would (fakemx.strict). A server
    # started from a cached profile (fakemx.profile_cache) has built none.
    build_all()
    registry = Servers(servers)
    hub = EventHub(asyncio.get_running_loop())
    hub.watch(registry.all)
    app = FastAPI(
        title="fakemx",
        summary="Control a running fake MX: profiles, rules, listener, sessions, messages.",
        version=__version__,
        openapi_url="/openapi.json",
        docs_url=None,  # Swagger UI loads from a CDN; a lab may be offline
        redoc_url=None,
        responses=_ERRORS,
        separate_input_output_schemas=False,
    )
    app.state.events = hub
    app.state.servers = registry
    app.state.students = students
    api_errors.install(app)
    app.include_router(_control_routes(registry, hub, students))
    app.include_router(_journal_routes(registry, hub))
    app.include_router(_catalog_routes())
    _web_routes(app)
    app.add_middleware(Guard, token=token, loopback_only=loopback_only,
                       student_token=student_token if students is not None else None)
    return app


def _control_routes(registry: Servers, hub: EventHub,
                    students: StudentMode | None) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["servers"])

    def changed(mx: FakeMX) -> ServerInfo:
        info = server_info(mx, students)
        hub.server_changed(info.model_dump(mode="json"),
                           server_info(mx, students, student=True).model_dump(mode="json"))
        return info

    @router.get("/servers", summary="The running servers")
    def list_servers(hiding: Hiding) -> list[ServerInfo]:
        return [server_info(mx, students, hiding is not None) for mx in registry.all]

    @router.get("/servers/{name}", summary="One server")
    def get_server(mx: Server, hiding: Hiding) -> ServerInfo:
        return server_info(mx, students, hiding is not None)

    router.include_router(student_routes(students, changed))

    @router.get("/servers/{name}/profile", summary="The running profile, run-time rules first",
                response_model_exclude_none=True)
    def get_profile(mx: Server, hiding: Hiding) -> Profile:
        return shown_to(mx, hiding).profile

    @router.put("/servers/{name}/profile", summary="Switch to a catalog or an inline profile")
    async def switch_profile(mx: Server, choice: ProfileChoice) -> ServerInfo:
        profile = choice.profile or catalog_profile(choice.catalog or "")
        await mx.aload(profile)
        return changed(mx)

    @router.get("/servers/{name}/rules", summary="The running rules, in the order they apply",
                response_model_exclude_none=True)
    def list_rules(mx: Server, hiding: Hiding) -> list[RuleOut]:
        return [rule_out(rule) for rule in shown_to(mx, hiding).profile.rules]

    @router.post("/servers/{name}/rules", status_code=201, response_model_exclude_none=True,
                 summary="Add a rule, checked before the profile's own")
    def add_rule(mx: Server, rule: Rule) -> RuleOut:
        added = rule_out(mx.add_rule(rule))
        changed(mx)
        return added

    @router.delete("/servers/{name}/rules/{label}", response_model_exclude_none=True,
                   summary="Remove the rules with this label; returns them")
    def delete_rule(mx: Server, label: str) -> list[RuleOut]:
        removed = [rule_out(rule) for rule in mx.remove_rule(label)]
        changed(mx)
        return removed

    @router.put("/servers/{name}/listener", summary="open, refuse (RST) or blackhole (no SYN-ACK)")
    async def set_listener(mx: Server, choice: ListenerChoice) -> ServerInfo:
        await mx.aset_listener(choice.state)
        return changed(mx)

    @router.post("/servers/{name}/reset",
                 summary="Forget sessions, messages and counters (greylist memory, draws)")
    def reset(mx: Server) -> ServerInfo:
        mx.reset()
        return changed(mx)

    @router.get("/servers/{name}/ca.pem", response_class=Response,
                responses={200: {"content": {"application/x-pem-file": {}}}},
                summary="The root certificate this server's TLS certificates chain to")
    def server_ca(mx: Server) -> Response:
        return Response(mx.ca_pem, media_type="application/x-pem-file")

    @router.get("/ca.pem", response_class=Response,
                responses={200: {"content": {"application/x-pem-file": {}}}},
                summary="The root certificate relays must trust (the first server's state dir)")
    def ca() -> Response:
        return Response(registry.all[0].ca_pem, media_type="application/x-pem-file")

    @router.post("/servers/{name}/diagnose",
                 summary="`fakemx diagnose` against this server: the steps and the verdict")
    async def diagnose_server(mx: Server, request: DiagnoseRequest | None = None) -> Diagnosis:
        return await diagnosis(mx, request or DiagnoseRequest())

    @router.get("/version", summary="fakemx's version and how many servers run")
    def version() -> Version:
        return Version(fakemx=__version__, servers=len(registry.all))

    return router


def _journal_routes(registry: Servers, hub: EventHub) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["journal"])

    @router.get("/sessions", summary="Sessions since the last reset, newest first")
    def list_sessions(
        server: str | None = None,
        client: Annotated[str | None, Query(description="client IP address")] = None,
        outcome: Outcome | None = None,
        sender: Annotated[str | None, _text("the MAIL FROM contains this (a student's"
                                            " own address)")] = None,
        limit: Limit = DEFAULT_PAGE_SIZE,
        offset: Offset = 0,
        hiding: Hiding = None,
    ) -> SessionPage:
        return sessions_page(registry.selected(server), client=client, outcome=outcome,
                             limit=limit, offset=offset, sender=sender, hiding=hiding)

    @router.get("/sessions/{session_id}", summary="One session with its events")
    def get_session(session_id: int, hiding: Hiding) -> SessionOut:
        return find_session(registry.all, session_id, hiding)

    deleted: set[int] = set()  # by DELETE /api/messages: no longer shown from memory

    @router.get("/messages", summary="Accepted messages since the last reset, newest first")
    def list_messages(
        search: Search, limit: Limit = DEFAULT_PAGE_SIZE, offset: Offset = 0
    ) -> MessagePage:
        return messages_page(registry.selected(search.server), limit=limit, offset=offset,
                             query=search, hidden=deleted)

    @router.delete("/messages", summary="Delete the stored messages the search matches"
                                        " (from the state dir, since any time)")
    def delete_messages(search: Search) -> MessagesDeleted:
        ids: list[int] = []
        state_dirs = {mx.state_dir for mx in registry.selected(search.server)}
        for state_dir in sorted(state_dirs):
            store = Store(state_dir)
            try:
                found = [info.id for info in store.find_messages(search)]
                store.delete_messages(found)
            finally:
                store.close()
            ids += found
        deleted.update(ids)
        return MessagesDeleted(deleted=len(ids), ids=ids)

    @router.get("/messages/{message_id}", summary="One message, parsed")
    def get_message(message_id: int) -> MessageOut:
        try:
            return message_out(*find_message(registry.all, message_id, deleted))
        except LookupError as exc:  # its body was deleted from the state dir (retention)
            raise NotFound(str(exc)) from None

    @router.get("/messages/{message_id}/raw", response_class=Response,
                responses={200: {"content": {"message/rfc822": {}}}},
                summary="One message as received (.eml)")
    def get_raw_message(message_id: int) -> Response:
        _, stored = find_message(registry.all, message_id, deleted)
        try:
            content = stored.content
        except LookupError as exc:  # deleted from the state dir (retention)
            raise NotFound(str(exc)) from None
        return Response(content, media_type="message/rfc822", headers={
            "content-disposition": f'attachment; filename="{stored.id}.eml"'})

    @router.get("/events", include_in_schema=False)
    def events(hiding: Hiding) -> StreamingResponse:
        return StreamingResponse(hub.stream(hiding), media_type="text/event-stream",
                                 headers={"cache-control": "no-store"})

    return router


def _catalog_routes() -> APIRouter:
    router = APIRouter(prefix="/api", tags=["catalog"])

    @router.get("/catalog", summary="Every profile in the catalog")
    def list_catalog() -> list[CatalogEntry]:
        return catalog_entries()

    @router.get("/catalog/{profile_name}", summary="A profile with `fakemx explain` text")
    def explain_profile(profile_name: str) -> CatalogExplanation:
        return catalog_explanation(profile_name)

    @router.get("/codes", summary="The delivery error codes: meaning, causes, fixes")
    def list_codes() -> list[CodeInfo]:
        return code_infos()

    @router.get("/codes/{code}", summary="A code (e.g. 4.4.316) with `fakemx explain` text")
    def explain_code(code: str) -> CodeExplanation:
        return code_explanation(code)

    return router


def _web_routes(app: FastAPI) -> None:
    for url, (file_name, media_type) in _WEB_FILES.items():
        app.add_api_route(url, _web_file(WEB_DIR / file_name, media_type), methods=["GET"],
                          include_in_schema=False,
                          response_class=HTMLResponse if url == "/" else Response)


def _web_file(path: Path, media_type: str) -> Callable[[], Response]:
    def serve() -> Response:
        return Response(path.read_bytes(), media_type=media_type, headers=_PAGE_HEADERS)

    return serve
