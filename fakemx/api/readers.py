"""Who reads, and what they may see: the server a path names, a student's view of a lab.

A lab in student mode (``fakemx lab --student``) hides each case's scenario
from the students' token until the trainer reveals it; the handlers take a
``Hiding`` parameter (set when a student asks) and ``fakemx.api.views``
leaves out what is hidden. The trainer's reveal and hide routes are here too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam

from fakemx.api.guard import ROLE, STUDENT
from fakemx.api.models import ServerInfo
from fakemx.api.views import Hidden, NotFound, StudentMode
from fakemx.server import FakeMX

ServerName = Annotated[str, PathParam(description="the server's name (GET /api/servers)")]


def _server(request: Request, name: ServerName) -> FakeMX:
    mx: FakeMX = request.app.state.servers.named(name)
    return mx


# A handler parameter of this type is the server named in the path (404 if none).
Server = Annotated[FakeMX, Depends(_server)]


def _hiding(request: Request) -> StudentMode | None:
    """What this reader may not see: a student's view of a lab in student mode, else None."""
    students: StudentMode | None = request.app.state.students
    return students if request.scope.get(ROLE) == STUDENT else None


# A handler parameter of this type is set when a student asks (hide what is not revealed).
Hiding = Annotated[StudentMode | None, Depends(_hiding)]


def shown_to(mx: FakeMX, hiding: StudentMode | None) -> FakeMX:
    """``mx``, unless the reader is a student and its scenario is hidden (403)."""
    if hiding is not None and hiding.hides(mx.name):
        raise Hidden(f"{mx.name}: the scenario is hidden until the trainer reveals it")
    return mx


def student_routes(students: StudentMode | None,
                   changed: Callable[[FakeMX], ServerInfo]) -> APIRouter:
    router = APIRouter()

    @router.get("/role", summary="Who asks: the trainer (or no token is set) or a student")
    def role(hiding: Hiding) -> dict[str, object]:
        return {"role": STUDENT if hiding is not None else "instructor",
                "student_mode": students is not None}

    @router.post("/servers/{name}/reveal", summary="A lab in student mode: show the students"
                 " this case's scenario (the trainer's token)")
    def reveal(mx: Server) -> ServerInfo:
        if students is None or mx.name not in students.hidden:
            raise NotFound(f"{mx.name}: no hidden scenario to reveal (fakemx lab --student"
                           " hides every case but the sink)")
        students.revealed.add(mx.name)
        return changed(mx)

    @router.delete("/servers/{name}/reveal", summary="Hide this case's scenario again")
    def hide(mx: Server) -> ServerInfo:
        if students is not None:
            students.revealed.discard(mx.name)
        return changed(mx)

    return router
