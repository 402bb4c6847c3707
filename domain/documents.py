"""Collaborative documents: metadata, and the Yjs CRDT updates that make up their content.

The aggregate holds no CRDT state. An accepted update is an event carrying the update's bytes
(already checked and applied by the live copy, see application/live_documents/room.py); replaying
a stream's updates in order rebuilds the content at any position.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TypedDict
from uuid import UUID

from eventsourcing.domain import Snapshot as AggregateSnapshot
from eventsourcing.domain import event

from domain.base import Cause, ChorusAggregate, caused
from domain.errors import Gone, InvalidValue, NotAMember, PermissionDenied
from domain.permissions import Permission
from domain.rules import MAX_DOCUMENT_EVENT_BYTES, MAX_DOCUMENT_TITLE, shown_name
from domain.scopes import StreamKind, holders_of
from domain.workspaces import Workspace
from domain.yjs_update import check_storable_name

# What a root (top-level shared type) of a document is. An update does not say; the kind is
# learnt from its content and recorded with the first update that shows it.
ROOT_KINDS = ("array", "xml", "text", "map")
MAX_ROOTS = 64
MAX_ROOT_NAME = 256


class DocumentDeleted(Gone):
    """The document was deleted; it takes no more edits."""


def check_title(title: str) -> str:
    return shown_name(title, field="title", max_length=MAX_DOCUMENT_TITLE)


def check_roots(known: Collection[str], seen: Collection[str]) -> None:
    """Refuses root names a document may not record: empty, longer than ``MAX_ROOT_NAME``,
    holding what the read side cannot store, or more than ``MAX_ROOTS`` of them with the
    ``known`` ones. The live copy checks an update with it before applying it, so that what
    it accepts is never refused when saved."""
    for name in seen:
        if not name or len(name) > MAX_ROOT_NAME:
            raise InvalidValue(f"a root name must be 1 to {MAX_ROOT_NAME} characters")
        check_storable_name(name, "a root type's name")
    if len(seen) + len(known) > MAX_ROOTS and len(set(known).union(seen)) > MAX_ROOTS:
        raise InvalidValue(f"a document has at most {MAX_ROOTS} root types")


def newly_known_roots(known: dict[str, str], seen: dict[str, str]) -> dict[str, str]:
    """The roots whose kind ``seen`` tells more about than ``known``.

    A later update can only make a kind more specific (``ROOT_KINDS`` is in that order): a
    text holding only embedded objects first looks like an array, and a map is the only kind
    with keyed entries, so it wins over all.
    """
    check_roots(known, seen)
    changed: dict[str, str] = {}
    for name, kind in seen.items():
        if kind not in ROOT_KINDS:
            raise InvalidValue(f"unknown root kind {kind!r}")
        before = known.get(name)
        if before is None or ROOT_KINDS.index(kind) > ROOT_KINDS.index(before):
            changed[name] = kind
    return changed


class DocumentState(TypedDict):
    """A document's attributes as a snapshot holds them (typed, so that they read back as
    UUIDs and datetimes, not strings). A test checks it names every attribute."""

    _created_on: datetime
    _modified_on: datetime
    workspace_id: UUID
    title: str
    created_by: str | None
    deleted: bool
    roots: dict[str, str]
    update_count: int


DOCUMENT_SNAPSHOT_INTERVAL = 20


class Document(ChorusAggregate):
    """A document of a workspace: rich text, a whiteboard, or anything Yjs holds."""

    # Its stream is its content's history (every event carries update bytes): loading one
    # from a snapshot reads at most this many of them.
    snapshot_interval = DOCUMENT_SNAPSHOT_INTERVAL

    stream_kind = StreamKind(
        "document", holders_of(Permission.VIEW_DOCUMENTS), workspace="workspace_id"
    )

    class Snapshot(AggregateSnapshot):
        """Its events carry the content's bytes; a snapshot spares loading them all to learn
        the title and who may edit."""

        state: DocumentState  # type: ignore[assignment]

    @classmethod
    @caused
    def create(cls, id: UUID, workspace: Workspace, title: str, cause: Cause) -> Document:
        actor = cause.actor
        workspace.check_permission(actor, "edit_documents")
        return cls(
            id=id,
            workspace_id=workspace.id,
            title=check_title(title),
            actor_id=actor,
        )

    @event("DocumentCreated")
    def __init__(
        self,
        id: UUID,
        workspace_id: UUID,
        title: str,
        actor_id: str | None,
    ) -> None:
        self.workspace_id = workspace_id
        self.title = title
        self.created_by = actor_id
        self.deleted = False
        self.roots: dict[str, str] = {}
        self.update_count = 0

    # -- access ------------------------------------------------------------------------------

    def check_can_view(self, user_id: str, workspace: Workspace) -> None:
        """Outsiders and members without ``view_documents`` are told it does not exist."""
        if "view_documents" not in workspace.permissions_of(user_id):
            raise NotAMember("unknown document")

    def can_edit(self, user_id: str, workspace: Workspace) -> bool:
        return not self.deleted and "edit_documents" in workspace.permissions_of(user_id)

    def check_can_edit(self, user_id: str, workspace: Workspace) -> None:
        self.check_can_view(user_id, workspace)
        if self.deleted:
            raise DocumentDeleted("the document was deleted")
        if "edit_documents" not in workspace.permissions_of(user_id):
            raise PermissionDenied("missing permission 'edit_documents' (read-only access)")

    def _check_can_manage(self, user_id: str, workspace: Workspace) -> None:
        """Its creator may rename or delete it while they can still edit; otherwise it takes
        ``manage_documents``."""
        self.check_can_edit(user_id, workspace)
        perms = workspace.permissions_of(user_id)
        if user_id != self.created_by and "manage_documents" not in perms:
            raise PermissionDenied("missing permission 'manage_documents'")

    # -- metadata ----------------------------------------------------------------------------

    @caused
    def rename(self, title: str, workspace: Workspace, cause: Cause) -> None:
        actor = cause.actor
        self._check_can_manage(actor, workspace)
        new_title = check_title(title)
        if new_title != self.title:
            self._renamed(title=new_title)

    @event("DocumentRenamed")
    def _renamed(self, title: str) -> None:
        self.title = title

    @caused
    def delete(self, workspace: Workspace, cause: Cause) -> None:
        """Deleting keeps the history (auditors can still read it); the document leaves lists
        and takes no more edits."""
        actor = cause.actor
        self._check_can_manage(actor, workspace)
        self._deleted()

    @event("DocumentDeleted")
    def _deleted(self) -> None:
        self.deleted = True

    # -- content -----------------------------------------------------------------------------

    @caused
    def apply_update(
        self,
        update: bytes,
        roots: dict[str, str],
        workspace: Workspace,
        cause: Cause,
        restored_from: int | None = None,
    ) -> None:
        """Records one (possibly merged) Yjs update that the live copy accepted.

        ``roots`` are the root kinds the update shows; only what is new is recorded.
        ``restored_from`` marks an update that brings back the content of an earlier
        position: history is never rewritten, a restore is one more update.
        """
        actor = cause.actor
        self.check_can_edit(actor, workspace)
        if not update:
            raise InvalidValue("an update must not be empty")
        if len(update) > MAX_DOCUMENT_EVENT_BYTES:
            raise InvalidValue(f"an update is at most {MAX_DOCUMENT_EVENT_BYTES} bytes")
        if restored_from is not None and restored_from < 1:
            raise InvalidValue("restored_from must be a position of the log")
        self._update_applied(
            update=update,
            roots=newly_known_roots(self.roots, roots),
            restored_from=restored_from,
        )

    @event("DocumentUpdateApplied")
    def _update_applied(
        self,
        update: bytes,
        roots: dict[str, str],
        restored_from: int | None,
    ) -> None:
        self.roots = {**self.roots, **roots}
        self.update_count += 1
