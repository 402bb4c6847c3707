"""Documents over HTTP: create, list, rename, delete, and their content now or at a past
position. Editing happens over ``/yjs/{document_id}`` (api/yjs/endpoint.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import anyio.to_thread
import msgspec
from litestar import Controller, Request, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Response
from psycopg import Cursor

from api.commands import Created, Written, execute, reply, services_of
from api.errors import problems
from api.reads import (
    DEFAULT_LIMIT,
    check_limit,
    check_position,
    read_cursor,
    read_cursor_async,
)
from application.commands import (
    CreateDocument,
    DeleteDocument,
    RenameDocument,
)
from application.document_restore import Versions, restore_command
from domain.base import as_uuid
from domain.documents import DocumentDeleted
from domain.errors import InvalidValue, NotAMember, NotFound
from domain.rules import MAX_DOCUMENT_TITLE
from projections import documents as document_views
from projections.log import max_position
from projections.queries import run, run_async
from projections.stream_history import created_at
from projections.workspaces import permissions_of

Req = Request[str, Any, Any]
WRITE_ERRORS = problems(400, 401, 403, 404, 409, 410, 413, 422, 429)
READ_ERRORS = problems(401, 404, 410, 422, 429)

Title = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_DOCUMENT_TITLE * 2)]


class CreateDocumentBody(msgspec.Struct, forbid_unknown_fields=True):
    title: Title


class RenameDocumentBody(msgspec.Struct, forbid_unknown_fields=True):
    title: Title


class RestoreBody(msgspec.Struct, forbid_unknown_fields=True):
    position: Annotated[int, msgspec.Meta(ge=1)]


class DocumentSummary(msgspec.Struct):
    id: str
    workspace_id: str
    title: str
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    roots: dict[str, str]
    update_count: int
    version: int


class DocumentList(msgspec.Struct):
    items: list[DocumentSummary]
    next: str | None


class DocumentView(msgspec.Struct):
    id: str
    workspace_id: str
    title: str
    roots: dict[str, str]
    content: dict[str, Any]
    # The stream version and log position the content is as of.
    version: int
    position: int
    at: int | None = None


def _visible_document(cur: Cursor[Any], document_id: str, user_id: str) -> dict[str, Any]:
    """The document's row, if the user may view it (404 otherwise: it might as well not
    exist); 410 once deleted."""
    row = run(cur, document_views.get_document(str(as_uuid(document_id))))
    if row is None:
        raise NotFound("unknown document")
    perms = run(cur, permissions_of(str(row["workspace_id"]), user_id))
    if perms is None or "view_documents" not in perms:
        raise NotAMember("unknown document")
    if row["deleted"]:
        raise DocumentDeleted("the document was deleted")
    return row


def _document_at(
    cur: Cursor[Any], document_id: str, user_id: str, at: int | None
) -> tuple[dict[str, Any], document_views.LoadedDocument]:
    """A document the user may view, with its CRDT state as of log position ``at`` (now
    when None): 422 beyond the log, 404 before the document existed."""
    row = _visible_document(cur, document_id, user_id)
    _check_at(cur, at)
    if at is not None and at < run(cur, created_at(row["id"])):
        raise NotFound("the document did not exist yet at that position")
    return row, document_views.load_document(cur, str(row["id"]), until_position=at)


def _check_at(cur: Cursor[Any], at: int | None) -> None:
    if at is None:
        return
    check_position("at", at)
    if at > max_position(cur):
        raise InvalidValue("at is past the last event")


class DocumentController(Controller):
    path = "/api"
    tags = ["documents"]

    @post(
        "/workspaces/{ws:str}/documents",
        operation_id="CreateDocument",
        responses=WRITE_ERRORS,
    )
    async def create(
        self, request: Req, ws: FromPath[str], data: JSONBody[CreateDocumentBody]
    ) -> Response[Created]:
        """Creates a document (needs ``edit_documents``)."""
        cmd = CreateDocument(workspace_id=ws, title=data.title)
        return reply(await execute(request, cmd, request.user), Created)

    @get("/workspaces/{ws:str}/documents", operation_id="ListDocuments", responses=READ_ERRORS)
    async def list_documents(
        self,
        request: Req,
        ws: FromPath[str],
        limit: FromQuery[int] = DEFAULT_LIMIT,
        after: FromQuery[str | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> DocumentList:
        """The workspace's documents, oldest first (needs ``view_documents``); pass ``next``
        back as ``after`` for the following page."""
        check_limit(limit)
        workspace_id = str(as_uuid(ws))
        after_id = None if after is None else str(as_uuid(after))
        async with read_cursor_async(request, min_position) as cur:
            perms = await run_async(cur, permissions_of(workspace_id, request.user))
            if perms is None or "view_documents" not in perms:
                raise NotAMember("unknown workspace")
            rows = await run_async(
                cur, document_views.list_documents(workspace_id, after=after_id, limit=limit + 1)
            )
        page = rows[:limit]
        next_cursor = str(page[-1]["id"]) if len(rows) > limit and page else None
        return DocumentList(
            items=[msgspec.convert(r, DocumentSummary) for r in page], next=next_cursor
        )

    @get(
        "/documents/{doc:str}",
        sync_to_thread=True,
        operation_id="GetDocument",
        responses=READ_ERRORS,
    )
    def show(
        self,
        request: Req,
        doc: FromPath[str],
        at: FromQuery[int | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> DocumentView:
        """The JSON of every root type of the document (text as a string, maps as objects,
        arrays as lists), as saved now or as of log position ``at``."""
        with read_cursor(request, min_position) as cur:
            row, loaded = _document_at(cur, doc, request.user, at)
        roots: dict[str, str] = row["roots"]
        return DocumentView(
            id=str(row["id"]),
            workspace_id=str(row["workspace_id"]),
            title=row["title"],
            roots=roots,
            content=document_views.render(loaded.doc, roots),
            version=loaded.version,
            position=loaded.position,
            at=at,
        )

    @get(
        "/documents/{doc:str}/update",
        sync_to_thread=True,
        operation_id="GetDocumentUpdate",
        responses=READ_ERRORS,
        media_type="application/octet-stream",
    )
    def state(
        self,
        request: Req,
        doc: FromPath[str],
        at: FromQuery[int | None] = None,
        min_position: FromQuery[int | None] = None,
    ) -> Response[bytes]:
        """The full state as one binary Yjs update (apply it to an empty ``Y.Doc``)."""
        with read_cursor(request, min_position) as cur:
            _, loaded = _document_at(cur, doc, request.user, at)
        return Response(
            loaded.doc.get_update(),
            media_type="application/octet-stream",
            headers={"X-Chorus-Position": str(loaded.position)},
        )

    @post(
        "/documents/{doc:str}/restore",
        operation_id="RestoreDocumentVersion",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def restore(
        self, request: Req, doc: FromPath[str], data: JSONBody[RestoreBody]
    ) -> Response[Written]:
        """Brings back the content the document had at log position ``position`` by
        appending one more update (history is never rewritten); connected editors receive
        it like any other edit. Needs ``edit_documents``."""

        def read_versions() -> Versions:
            with read_cursor(request, None) as cur:
                row, past = _document_at(cur, doc, request.user, data.position)
                now = document_views.load_document(cur, str(row["id"]))
            return Versions(str(row["id"]), row["roots"], now.doc.get_update(), past.doc)

        cmd = await anyio.to_thread.run_sync(
            restore_command,
            services_of(request).app,
            doc,
            request.user,
            data.position,
            read_versions,
        )
        if cmd is None:
            return Response(Written(position=None), status_code=200)
        result = await execute(request, cmd, request.user)
        return Response(Written(position=result.position), status_code=200)

    @patch(
        "/documents/{doc:str}",
        operation_id="RenameDocument",
        responses=WRITE_ERRORS,
    )
    async def rename(
        self, request: Req, doc: FromPath[str], data: JSONBody[RenameDocumentBody]
    ) -> Response[Written]:
        """Renames a document (its creator, or ``manage_documents``)."""
        cmd = RenameDocument(document_id=doc, title=data.title)
        return reply(await execute(request, cmd, request.user), Written)

    @delete(
        "/documents/{doc:str}",
        operation_id="DeleteDocument",
        status_code=200,
        responses=WRITE_ERRORS,
    )
    async def remove(self, request: Req, doc: FromPath[str]) -> Response[Written]:
        """Deletes a document (its creator, or ``manage_documents``); its history stays in
        the log. Connected editors are disconnected (close code 4410)."""
        return reply(await execute(request, DeleteDocument(document_id=doc), request.user), Written)
