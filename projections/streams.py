"""Read model of where each stream lives (its kind, workspace, channel and owner), so the
event log can be filtered to what a reader may see. Its statement is generated from the
stream kinds the aggregates declare (domain/scopes.py): a new kind needs no edit here."""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

from domain.scopes import SELF, StreamKinds
from projections.base import SetProjection, Span
from projections.log import span_events


def _pick(field: str | None, fields: list[str]) -> str:
    """SQL choosing, per row, the creation-event field a kind names for one scope column."""
    cases = "".join(f" WHEN '{name}' THEN ev.{name}" for name in fields)
    return f"CASE k.{field} WHEN '{SELF}' THEN ev.stream{cases} END"


class StreamsProjection(SetProjection):
    name = "streams"
    tables = ("rm_streams",)
    create_sql = """
    CREATE TABLE IF NOT EXISTS rm_streams (
        stream_id uuid PRIMARY KEY,
        kind text NOT NULL,
        workspace_id uuid,
        channel_id uuid
    );
    ALTER TABLE rm_streams ADD COLUMN IF NOT EXISTS owner_id uuid;
    CREATE INDEX IF NOT EXISTS rm_streams_workspace ON rm_streams (workspace_id);
    CREATE INDEX IF NOT EXISTS rm_streams_channel ON rm_streams (channel_id);
    CREATE INDEX IF NOT EXISTS rm_streams_owner ON rm_streams (owner_id)
        WHERE owner_id IS NOT NULL;
    -- Rows written before streams had owners: a user's own stream is theirs.
    UPDATE rm_streams SET owner_id = stream_id WHERE kind = 'user' AND owner_id IS NULL;
    """

    def __init__(self, kinds: StreamKinds) -> None:
        self.kinds = kinds
        self.handles = frozenset(kinds.by_creation)
        fields = kinds.fields()
        declared = sorted(kinds.by_creation.items())
        self._params: dict[str, list[str | None]] = {
            "types": [created for created, _ in declared],
            "kinds": [kind.name for _, kind in declared],
            "workspace": [kind.workspace for _, kind in declared],
            "channel": [kind.channel for _, kind in declared],
            "owner": [kind.owner for _, kind in declared],
        }
        self._fields = {name: "uuid" for name in fields}
        self._head = (
            "INSERT INTO rm_streams (stream_id, kind, workspace_id, channel_id, owner_id)"
            f" SELECT ev.stream, k.kind, {_pick('workspace', fields)},"
            f" {_pick('channel', fields)}, {_pick('owner', fields)} FROM ("
        )
        self._tail = (
            ") ev JOIN unnest(%(types)s::text[], %(kinds)s::text[],"
            "  %(workspace)s::text[], %(channel)s::text[], %(owner)s::text[])"
            "  AS k(type, kind, workspace, channel, owner) ON k.type = ev.type"
        )

    def apply_span(self, cur: Cursor[Any], span: Span) -> None:
        events = span_events(span, self.handles, self._fields)
        cur.execute(self._head + events + self._tail, {**span.params(), **self._params})
