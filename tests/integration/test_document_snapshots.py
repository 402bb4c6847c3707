"""Documents load from aggregate snapshots: their events carry the content's bytes, and a
long-edited document must not be replayed whole to learn its title and workspace."""

from __future__ import annotations

import uuid
from typing import Any

from pycrdt import Doc, Text

from api.contexts import CONTEXTS
from application.chorus import Chorus
from application.commands import (
    ApplyDocumentUpdate,
    CreateDocument,
    CreateWorkspace,
    RegisterUser,
    RenameDocument,
)
from domain.base import Cause
from domain.documents import DOCUMENT_SNAPSHOT_INTERVAL, Document, DocumentState
from infrastructure.eventstore import eventsourcing_env
from tests.fixtures.chorus import CheapPasswords

_NOT_STATE = {"_id", "_version", "_pending_events"}


def _document(app: Chorus, updates: int) -> tuple[str, str]:
    user = str(
        app.execute(
            RegisterUser(username="snap" + uuid.uuid4().hex[:8], password="plum-Orbit-kettle-42"),
            Cause(None),
        ).body["user_id"]
    )
    ws = str(app.execute(CreateWorkspace(name="Docs"), Cause(user)).body["id"])
    doc_id = str(app.execute(CreateDocument(workspace_id=ws, title="Plan"), Cause(user)).body["id"])
    source: Doc[Any] = Doc()
    text = source.get("content", type=Text)
    for i in range(updates):
        before = source.get_state()
        text += f"line {i}\n"
        command = ApplyDocumentUpdate(
            document_id=doc_id, update=source.get_update(before), roots={"content": "text"}
        )
        app.execute(command, Cause(user))
    app.execute(RenameDocument(document_id=doc_id, title="Plan B"), Cause(user))
    return user, doc_id


def test_the_snapshot_state_names_every_attribute(app: Chorus) -> None:
    _, doc_id = _document(app, 1)
    document = app.load(Document, doc_id)
    assert set(DocumentState.__annotations__) == set(vars(document)) - _NOT_STATE


def test_a_snapshot_reads_back_as_the_aggregate(app: Chorus) -> None:
    _, doc_id = _document(app, 3)
    document = app.load(Document, doc_id)
    snapshot = Document.Snapshot.take(document)
    stored = app.mapper.to_stored_event(snapshot)
    restored = app.mapper.to_domain_event(stored).mutate(None)  # type: ignore[attr-defined]
    assert isinstance(restored, Document)
    expected = {k: v for k, v in vars(document).items() if k != "_pending_events"}
    actual = {k: v for k, v in vars(restored).items() if k != "_pending_events"}
    assert actual == expected
    assert isinstance(restored.workspace_id, uuid.UUID)  # typed, not the JSON string


def test_a_new_process_loads_a_document_from_its_latest_snapshot(
    app: Chorus, store_url: str
) -> None:
    updates = 2 * DOCUMENT_SNAPSHOT_INTERVAL + 5
    _, doc_id = _document(app, updates)
    live = app.load(Document, doc_id)
    restarted = Chorus(
        eventsourcing_env(store_url),
        passwords=CheapPasswords(),
        handlers=CONTEXTS.handlers,
        snapshotting=CONTEXTS.snapshotting,
    )
    try:
        assert restarted.snapshots is not None
        snapshots = list(restarted.snapshots.get(uuid.UUID(doc_id), desc=True, limit=1))
        assert [s.originator_version for s in snapshots] == [2 * DOCUMENT_SNAPSHOT_INTERVAL]
        loaded = restarted.load(Document, doc_id)
    finally:
        restarted.close()
    assert (loaded.version, loaded.title, loaded.update_count) == (live.version, "Plan B", updates)
    assert (loaded.workspace_id, loaded.roots) == (live.workspace_id, {"content": "text"})
