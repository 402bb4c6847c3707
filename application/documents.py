"""Handlers of document commands (content arrives through the live copy, see
application/live_documents/)."""

from __future__ import annotations

from uuid import uuid4

from application.commands import (
    ApplyDocumentUpdate,
    CreateDocument,
    DeleteDocument,
    RenameDocument,
)
from application.decisions import Decision, HandlerTable
from application.ports import DecisionContext
from domain.base import Cause
from domain.documents import Document
from domain.workspaces import Workspace

# This context's command handlers, joined with the others' in application/handlers.py.
HANDLERS = HandlerTable()


def document_with_workspace(
    app: DecisionContext, document_id: str, user_id: str
) -> tuple[Document, Workspace]:
    """A document the user may see, and its workspace."""
    document = app.load(Document, document_id)
    workspace = app.load(Workspace, document.workspace_id)
    document.check_can_view(user_id, workspace)
    return document, workspace


@HANDLERS.on(CreateDocument)
def create_document(app: DecisionContext, cmd: CreateDocument, cause: Cause) -> Decision:
    workspace = app.load(Workspace, cmd.workspace_id)
    workspace.check_visible_to(cause.actor)
    document = Document.create(uuid4(), workspace, cmd.title, cause)
    return Decision([document], {"id": str(document.id)}, status=201)


@HANDLERS.on(RenameDocument)
def rename_document(app: DecisionContext, cmd: RenameDocument, cause: Cause) -> Decision:
    document, workspace = document_with_workspace(app, cmd.document_id, cause.actor)
    document.rename(cmd.title, workspace, cause)
    return Decision([document])


@HANDLERS.on(DeleteDocument)
def delete_document(app: DecisionContext, cmd: DeleteDocument, cause: Cause) -> Decision:
    document, workspace = document_with_workspace(app, cmd.document_id, cause.actor)
    document.delete(workspace, cause)
    return Decision([document])


@HANDLERS.on(ApplyDocumentUpdate)
def apply_document_update(app: DecisionContext, cmd: ApplyDocumentUpdate, cause: Cause) -> Decision:
    document, workspace = document_with_workspace(app, cmd.document_id, cause.actor)
    document.apply_update(cmd.update, cmd.roots, workspace, cause, cmd.restored_from)
    return Decision([document], {"version": document.version})
