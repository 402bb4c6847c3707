"""Read model of documents, and snapshots of their CRDT state.

Every ``SNAPSHOT_EVERY_UPDATES`` updates (or ``SNAPSHOT_EVERY_BYTES`` of them, or a quarter
of the last snapshot's size: see ``snapshot_due``) the projection stores the encoded state
and state vector, built by applying the updates since the previous
snapshot to a ``Doc`` and encoding it (merging the raw updates instead is far slower over long
histories). Opening a document then costs one snapshot plus a short tail of the log, however
long its history. Snapshots are never the source of truth: the log is, and any position can
be rebuilt from it.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import msgspec
from psycopg import Cursor
from pycrdt import Array, Doc, Map, Text, XmlFragment

from infrastructure.eventstore import EVENTS_TABLE
from projections.base import EventProjection, LogEvent
from projections.queries import Query, Statement

SNAPSHOT_EVERY_UPDATES = 100
SNAPSHOT_EVERY_BYTES = 512 * 1024
# Applying a tail costs more per byte than loading a snapshot: a tail past this share of the
# last snapshot's size (and past a floor, so small documents are not snapshotted at every
# keystroke) is folded into a new snapshot.
SNAPSHOT_TAIL_SHARE = 0.25
SNAPSHOT_TAIL_FLOOR_BYTES = 16 * 1024
_UPDATE_TOPIC_SUFFIX = ".DocumentUpdateApplied"


class DocumentsProjection(EventProjection):
    name = "documents"
    tables = ("rm_documents", "rm_document_snapshots", "rm_document_edits")
    create_sql = """
    CREATE TABLE IF NOT EXISTS rm_documents (
        document_id uuid PRIMARY KEY,
        workspace_id uuid NOT NULL,
        title text NOT NULL,
        created_by uuid,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL,
        deleted boolean NOT NULL DEFAULT false,
        roots jsonb NOT NULL DEFAULT '{}',
        update_count integer NOT NULL DEFAULT 0,
        update_bytes bigint NOT NULL DEFAULT 0,
        version integer NOT NULL,
        last_position bigint NOT NULL,
        tail_count integer NOT NULL DEFAULT 0,
        tail_bytes bigint NOT NULL DEFAULT 0,
        snapshot_version integer NOT NULL DEFAULT 0,
        snapshot_bytes bigint NOT NULL DEFAULT 0
    );
    ALTER TABLE rm_documents ADD COLUMN IF NOT EXISTS snapshot_bytes bigint NOT NULL DEFAULT 0;
    CREATE INDEX IF NOT EXISTS rm_documents_workspace
        ON rm_documents (workspace_id, created_at, document_id);
    CREATE TABLE IF NOT EXISTS rm_document_snapshots (
        document_id uuid NOT NULL,
        version integer NOT NULL,
        position bigint NOT NULL,
        state bytea NOT NULL,
        state_vector bytea NOT NULL,
        PRIMARY KEY (document_id, version)
    );
    -- Out of line but not compressed: Yjs states compress little, and opening a document
    -- would pay for decompressing them.
    ALTER TABLE rm_document_snapshots ALTER COLUMN state SET STORAGE EXTERNAL;
    CREATE TABLE IF NOT EXISTS rm_document_edits (
        document_id uuid NOT NULL,
        version integer NOT NULL,
        position bigint NOT NULL,
        workspace_id uuid NOT NULL,
        user_id uuid,
        edited_at timestamptz NOT NULL,
        update_bytes integer NOT NULL,
        restored_from bigint,
        PRIMARY KEY (document_id, version)
    );
    CREATE INDEX IF NOT EXISTS rm_document_edits_workspace
        ON rm_document_edits (workspace_id, edited_at);
    """
    handles = frozenset(
        {"DocumentCreated", "DocumentRenamed", "DocumentDeleted", "DocumentUpdateApplied"}
    )

    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        d, doc = event.data, event.stream
        match event.type:
            case "DocumentCreated":
                cur.execute(
                    "INSERT INTO rm_documents (document_id, workspace_id, title, created_by,"
                    " created_at, updated_at, version, last_position)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        doc,
                        d["workspace_id"],
                        d["title"],
                        event.actor,
                        event.at,
                        event.at,
                        event.version,
                        event.position,
                    ),
                )
            case "DocumentRenamed":
                self._touch(cur, event, "title = %s", d["title"])
            case "DocumentDeleted":
                self._touch(cur, event, "deleted = %s", True)
            case "DocumentUpdateApplied":
                self._update_applied(cur, event)

    @staticmethod
    def _touch(cur: Cursor[Any], event: LogEvent, assignment: str, value: object) -> None:
        cur.execute(
            f"UPDATE rm_documents SET {assignment}, updated_at = %s, version = %s,"
            " last_position = %s WHERE document_id = %s",
            (value, event.at, event.version, event.position, event.stream),
        )

    def _update_applied(self, cur: Cursor[Any], event: LogEvent) -> None:
        size = len(base64.b64decode(event.data["update"]))
        cur.execute(
            "UPDATE rm_documents SET roots = roots || %s::jsonb, update_count = update_count + 1,"
            " update_bytes = update_bytes + %s, tail_count = tail_count + 1,"
            " tail_bytes = tail_bytes + %s, updated_at = %s, version = %s, last_position = %s"
            " WHERE document_id = %s RETURNING tail_count, tail_bytes, snapshot_bytes",
            (
                msgspec.json.encode(event.data.get("roots") or {}).decode(),
                size,
                size,
                event.at,
                event.version,
                event.position,
                event.stream,
            ),
        )
        row = cur.fetchone()
        if row is None:
            return
        cur.execute(
            "INSERT INTO rm_document_edits (document_id, version, position, workspace_id,"
            " user_id, edited_at, update_bytes, restored_from)"
            " SELECT %s, %s, %s, workspace_id, %s, %s, %s, %s FROM rm_documents"
            " WHERE document_id = %s",
            (
                event.stream,
                event.version,
                event.position,
                event.actor,
                event.at,
                size,
                event.data.get("restored_from"),
                event.stream,
            ),
        )
        if not snapshot_due(row["tail_count"], row["tail_bytes"], row["snapshot_bytes"]):
            return
        loaded = load_document(cur, str(event.stream), until_version=event.version)
        state = loaded.doc.get_update()
        cur.execute(
            "INSERT INTO rm_document_snapshots (document_id, version, position, state,"
            " state_vector) VALUES (%s, %s, %s, %s, %s)",
            (event.stream, event.version, event.position, state, loaded.doc.get_state()),
        )
        cur.execute(
            "UPDATE rm_documents SET tail_count = 0, tail_bytes = 0, snapshot_version = %s,"
            " snapshot_bytes = %s WHERE document_id = %s",
            (event.version, len(state), event.stream),
        )


def snapshot_due(tail_count: int, tail_bytes: int, snapshot_bytes: int) -> bool:
    """Whether the updates since the last snapshot should be folded into a new one."""
    if tail_count >= SNAPSHOT_EVERY_UPDATES or tail_bytes >= SNAPSHOT_EVERY_BYTES:
        return True
    return tail_bytes >= max(SNAPSHOT_TAIL_FLOOR_BYTES, snapshot_bytes * SNAPSHOT_TAIL_SHARE)


# -- loading the CRDT state ---------------------------------------------------------------------


@dataclass
class StoredDocument:
    """What builds a document's state as of ``version`` of its stream (``position`` in the
    log): the latest snapshot's encoded state (if any), then the updates of the log after it.
    Applied in order, in one ``Doc`` or in a client's, they give that state."""

    updates: list[bytes]
    version: int
    position: int
    updates_replayed: int
    # The snapshot's state vector (empty without one): what the state holds at least.
    state_vector: bytes = b"\x00"

    @property
    def size(self) -> int:
        """A bound of the state's encoded size, known without encoding it."""
        return sum(len(u) for u in self.updates)

    def build(self) -> LoadedDocument:
        doc: Doc[Any] = Doc()
        for update in self.updates:
            doc.apply_update(update)
        return LoadedDocument(doc, self.version, self.position, self.updates_replayed, self.size)


@dataclass
class LoadedDocument:
    """A document's CRDT state as of ``version`` of its stream (``position`` in the log)."""

    doc: Doc[Any]
    version: int
    position: int
    updates_replayed: int
    size: int = 0  # see StoredDocument.size


def load_document(
    cur: Cursor[Any],
    document_id: str,
    *,
    until_version: int | None = None,
    until_position: int | None = None,
) -> LoadedDocument:
    """The document's state as of the bound (see ``fetch_document``)."""
    return fetch_document(
        cur, document_id, until_version=until_version, until_position=until_position
    ).build()


def fetch_document(
    cur: Cursor[Any],
    document_id: str,
    *,
    until_version: int | None = None,
    until_position: int | None = None,
) -> StoredDocument:
    """The latest snapshot at or before the bound, plus the stream's updates after it, read
    from the log itself (a snapshot may lag; the log never does)."""
    cur.execute(
        "SELECT version, position, state, state_vector FROM rm_document_snapshots"
        " WHERE document_id = %s"
        " AND (%s::int IS NULL OR version <= %s::int)"
        " AND (%s::bigint IS NULL OR position <= %s::bigint)"
        " ORDER BY version DESC LIMIT 1",
        (document_id, until_version, until_version, until_position, until_position),
        binary=True,  # bytea in text form is hex: twice the bytes, and decoded
    )
    snapshot = cur.fetchone()
    updates: list[bytes] = []
    version, position, state_vector = 0, 0, b"\x00"
    if snapshot is not None:
        updates.append(bytes(snapshot["state"]))
        version, position = int(snapshot["version"]), int(snapshot["position"])
        state_vector = bytes(snapshot["state_vector"])
    cur.execute(
        f"SELECT notification_id, originator_version, topic, state FROM {EVENTS_TABLE}"
        " WHERE originator_id = %s AND originator_version > %s"
        " AND (%s::int IS NULL OR originator_version <= %s::int)"
        " AND (%s::bigint IS NULL OR notification_id <= %s::bigint)"
        " ORDER BY originator_version",
        (document_id, version, until_version, until_version, until_position, until_position),
        binary=True,
    )
    replayed = 0
    for row in cur.fetchall():
        version, position = int(row["originator_version"]), int(row["notification_id"])
        if row["topic"].endswith(_UPDATE_TOPIC_SUFFIX):
            updates.append(base64.b64decode(msgspec.json.decode(bytes(row["state"]))["update"]))
            replayed += 1
    return StoredDocument(updates, version, position, replayed, state_vector)


def render(doc: Doc[Any], roots: dict[str, str]) -> dict[str, Any]:
    """The JSON of every root type the doc holds: text as a string, maps as objects, arrays
    as lists, XML as its serialised string. ``roots`` are the kinds the log has recorded
    (they only ever get more specific, so today's kinds also read past states); a root whose
    kind is not known yet (nothing but deleted content so far) shows as null."""
    content: dict[str, Any] = {}
    for name in sorted(doc.keys()):
        kind = roots.get(name)
        if kind == "text":
            content[name] = str(doc.get(name, type=Text))
        elif kind == "map":
            content[name] = doc.get(name, type=Map).to_py()
        elif kind == "array":
            content[name] = doc.get(name, type=Array).to_py()
        elif kind == "xml":
            content[name] = str(doc.get(name, type=XmlFragment))
        else:
            content[name] = None
    return content


# -- queries ------------------------------------------------------------------------------------

_COLUMNS = (
    "document_id::text AS id, workspace_id::text, title, created_by::text, created_at,"
    " updated_at, deleted,"
    " roots, update_count, update_bytes, version, last_position"
)


def get_document(document_id: str) -> Query[dict[str, Any] | None]:
    rows = yield Statement(
        f"SELECT {_COLUMNS} FROM rm_documents WHERE document_id = %s", (document_id,)
    )
    return rows[0] if rows else None


def list_documents(
    workspace_id: str, *, after: str | None, limit: int
) -> Query[list[dict[str, Any]]]:
    """Live documents of a workspace, oldest first, paged by id order of creation."""
    return (
        yield Statement(
            f"SELECT {_COLUMNS} FROM rm_documents WHERE workspace_id = %s AND NOT deleted"
            " AND (%s::uuid IS NULL OR (created_at, document_id) > (SELECT created_at,"
            "   document_id FROM rm_documents WHERE document_id = %s::uuid))"
            " ORDER BY created_at, document_id LIMIT %s",
            (workspace_id, after, after, limit),
        )
    )
