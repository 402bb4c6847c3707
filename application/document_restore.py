"""Restoring an earlier version of a document: the one update that brings its content back,
as a command (checked against the aggregates first)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pycrdt import Doc

from application.chorus import Chorus
from application.commands import ApplyDocumentUpdate
from application.document_versions import restoring_update
from application.documents import document_with_workspace


@dataclass(frozen=True)
class Versions:
    """A document's content now and at the position to restore, read from the store."""

    document_id: str
    roots: dict[str, str]
    # The whole current state, as one encoded update.
    current: bytes
    past: Doc[Any]


def restore_command(
    app: Chorus,
    document_id: str,
    user_id: str,
    position: int,
    read_versions: Callable[[], Versions],
) -> ApplyDocumentUpdate | None:
    """The command that restores the document's content at ``position`` (None when nothing
    differs); blocking (loads and Yjs work). The user's right to edit is checked first: a
    restore that changes nothing is refused all the same."""
    document, workspace = document_with_workspace(app, document_id, user_id)
    document.check_can_edit(user_id, workspace)
    versions = read_versions()
    update = restoring_update(versions.current, versions.past, versions.roots)
    if update is None:
        return None
    return ApplyDocumentUpdate(
        document_id=versions.document_id, update=update, restored_from=position
    )
