"""Time travel for auditors: an aggregate's state as of a position in the log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.params import FromPath, FromQuery
from psycopg import Cursor

from api.commands import services_of
from api.errors import problems
from api.reads import check_position, read_cursor
from application.time_travel import aggregate_at, erased_fields, state_of
from domain.base import as_uuid
from domain.documents import Document
from domain.errors import NotFound, PermissionDenied
from projections.channels import visible_channel
from projections.documents import load_document, render
from projections.queries import run
from projections.stream_history import stream_scope, version_at
from projections.workspaces import permissions_of


class StreamState(msgspec.Struct):
    stream: str
    type: str
    version: int
    at: int | None
    created_on: datetime
    modified_on: datetime
    state: dict[str, Any]
    # Fields of ``state`` that read null because they were erased since (issue 20).
    erased: list[str] = msgspec.field(default_factory=list)


def _sees(cur: Cursor[Any], scope: dict[str, Any], perms: frozenset[str], user_id: str) -> bool:
    """Whether a member of the stream's workspace may know the stream exists: auditors see
    everything of the workspace; others only the channels (and their messages) they may read
    and the documents when they may view documents."""
    if "view_audit" in perms:
        return True
    match scope["kind"]:
        case "channel" | "message":
            return run(cur, visible_channel(scope["channel_id"], user_id)) is not None
        case "document":
            return "view_documents" in perms
        case "workspace":
            return True
        case _:
            return False


class StreamController(Controller):
    path = "/api/streams"
    tags = ["audit"]

    @get(
        "/{stream_id:str}",
        sync_to_thread=True,
        operation_id="GetStreamState",
        responses=problems(401, 403, 404, 422, 429),
    )
    def state(
        self,
        request: Request[str, Any, Any],
        stream_id: FromPath[str],
        at: FromQuery[int | None] = None,
    ) -> StreamState:
        """The aggregate of a stream as it was at position ``at`` (default: now), rebuilt
        from its events. Needs ``view_audit`` in the stream's workspace (your own user
        stream needs nothing). What was erased since, even after ``at``, is not shown as it
        was: those fields read null and ``erased`` names them (issue 20)."""
        check_position("at", at)
        stream = as_uuid(stream_id)
        services = services_of(request)
        with read_cursor(request, None) as cur:
            scope = run(cur, stream_scope(stream))
            if scope is None:
                raise NotFound("unknown stream")
            if not (scope["kind"] == "user" and str(stream) == request.user):
                perms = (
                    None
                    if scope["workspace_id"] is None
                    else run(cur, permissions_of(scope["workspace_id"], request.user))
                )
                if perms is None or not _sees(cur, scope, perms, request.user):
                    # What the caller may not see answers exactly as an unknown id does.
                    raise NotFound("unknown stream")
                if "view_audit" not in perms:
                    raise PermissionDenied("reading a stream's history needs view_audit")
            version = run(cur, version_at(stream, at))
        if version is None:
            raise NotFound("the stream did not exist yet at that position")
        aggregate = aggregate_at(services.app, stream, version)
        state = state_of(aggregate)
        if isinstance(aggregate, Document):
            # The same replay as GET /api/documents/{id}?at=: snapshot plus the log's tail.
            with read_cursor(request, None) as cur:
                loaded = load_document(cur, str(stream), until_version=aggregate.version)
            state["content"] = render(loaded.doc, aggregate.roots)
        return StreamState(
            stream=str(stream),
            type=type(aggregate).__name__,
            version=aggregate.version,
            at=at,
            created_on=aggregate.created_on,
            modified_on=aggregate.modified_on,
            state=state,
            erased=erased_fields(services.app, stream, aggregate.version, state),
        )
