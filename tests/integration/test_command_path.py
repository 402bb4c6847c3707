"""The one command path (application/command_path.py): what both executors share."""

from __future__ import annotations

import uuid
from typing import Any

from pycrdt import Doc, Text

from application.chorus import Chorus
from application.commands import (
    ApplyDocumentUpdate,
    CreateChannel,
    CreateDocument,
    CreateWorkspace,
    RegisterUser,
)
from application.ports import Recorder
from domain.base import Cause
from domain.documents import DOCUMENT_SNAPSHOT_INTERVAL
from infrastructure.eventstore import ChorusRecorder


def _as_port(recorder: ChorusRecorder) -> Recorder:
    return recorder  # mypy checks here that the event store's recorder is the port


def test_the_application_drives_the_event_stores_recorder_through_its_port(app: Chorus) -> None:
    assert isinstance(app.recorder, ChorusRecorder)
    assert _as_port(app.recorder) is app.store


def _user(app: Chorus) -> str:
    return str(
        app.execute(
            RegisterUser(username="u" + uuid.uuid4().hex[:8], password="plum-Orbit-kettle-42"),
            Cause(None),
        ).body["user_id"]
    )


def test_a_key_repeated_in_a_batch_is_answered_from_the_first_ones_record(app: Chorus) -> None:
    """The repeats wait for the next batch and replay what the first one stored: the batch
    does not try to store the key twice (its transaction would fail, and every command of
    it be run again alone)."""
    committer = app.enable_group_commit()
    owner = _user(app)
    ws = str(app.execute(CreateWorkspace(name="W"), Cause(owner)).body["id"])
    create = CreateChannel(workspace_id=ws, name="once")
    batches = committer.stats.batches
    with committer.hold():
        futures = [committer.submit(create, Cause(owner, "key-1")) for _ in range(3)]
    first, *again = (f.result(timeout=60) for f in futures)
    assert not first.replayed and first.position is not None
    assert [(a.replayed, a.body) for a in again] == [(True, first.body)] * 2
    assert committer.stats.fallbacks == 0
    assert committer.stats.batches == batches + 1  # the replays wrote nothing


def test_a_group_commit_takes_document_snapshots_as_a_single_save_does(app: Chorus) -> None:
    committer = app.enable_group_commit()
    user = _user(app)
    ws = str(app.execute(CreateWorkspace(name="Docs"), Cause(user)).body["id"])
    doc_id = str(app.execute(CreateDocument(workspace_id=ws, title="Plan"), Cause(user)).body["id"])
    source: Doc[Any] = Doc()
    text = source.get("content", type=Text)
    for i in range(DOCUMENT_SNAPSHOT_INTERVAL + 2):
        before = source.get_state()
        text += f"line {i}\n"
        update = ApplyDocumentUpdate(
            document_id=doc_id, update=source.get_update(before), roots={"content": "text"}
        )
        app.execute(update, Cause(user))
    assert committer.stats.batched_commands >= DOCUMENT_SNAPSHOT_INTERVAL
    assert app.snapshots is not None
    snapshots = list(app.snapshots.get(uuid.UUID(doc_id), desc=True, limit=1))
    assert [s.originator_version for s in snapshots] == [DOCUMENT_SNAPSHOT_INTERVAL]
