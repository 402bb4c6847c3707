"""Handlers of document commands (content arrives through the live copy, see
application/live_documents/)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import uuid4

from application.commands import (
    ApplyDocumentUpdate,
    CreateDocument,
    DeleteDocument,
    RenameDocument,
)
from application.decisions import Decision, handles
from domain.base import Cause
from domain.documents import Document
from domain.workspaces import Workspace

if TYPE_CHECKING:
    from application.chorus import Chorus


def document_with_workspace(
    app: Chorus, document_id: str, user_id: str
) -> tuple[Document, Workspace]:
    """A document the user may see, and its workspace."""
    document = app.load(Document, document_id)
    workspace = app.load(Workspace, document.workspace_id)
    document.check_can_view(user_id, workspace)
    return document, workspace


@handles(CreateDocument)
def create_document(app: Chorus, cmd: CreateDocument, cause: Cause) -> Decision:
    workspace = app.load(Workspace, cmd.workspace_id)
    workspace.check_visible_to(cause.actor_id or "")
    document = Document.create(uuid4(), workspace, cmd.title, cause)
    return Decision([document], {"id": str(document.id)}, status=201)


@handles(RenameDocument)
def rename_document(app: Chorus, cmd: RenameDocument, cause: Cause) -> Decision:
    document, workspace = document_with_workspace(app, cmd.document_id, cause.actor_id or "")
    document.rename(cmd.title, workspace, cause)
    return Decision([document])


@handles(DeleteDocument)
def delete_document(app: Chorus, cmd: DeleteDocument, cause: Cause) -> Decision:
    document, workspace = document_with_workspace(app, cmd.document_id, cause.actor_id or "")
    document.delete(workspace, cause)
    return Decision([document])


@handles(ApplyDocumentUpdate)
def apply_document_update(app: Chorus, cmd: ApplyDocumentUpdate, cause: Cause) -> Decision:
    document, workspace = document_with_workspace(app, cmd.document_id, cause.actor_id or "")
    document.apply_update(cmd.update, cmd.roots, workspace, cause, cmd.restored_from)
    return Decision([document], {"version": document.version})
