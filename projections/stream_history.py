"""What time travel reads: where a stream lives, and which of its versions the log held at a
position (straight from the event store's table: the log is the history)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from infrastructure.eventstore import EVENTS_TABLE
from projections.queries import Query, Statement


def stream_scope(stream: UUID) -> Query[dict[str, Any] | None]:
    """The stream's kind, workspace and channel (None for a stream the read model lacks)."""
    rows = yield Statement(
        "SELECT kind, workspace_id::text, channel_id::text FROM rm_streams WHERE stream_id = %s",
        (stream,),
    )
    return rows[0] if rows else None


def version_at(stream: UUID, at: int | None) -> Query[int | None]:
    """The stream's last version at log position ``at`` (now when None); None when it had
    no event yet."""
    rows = yield Statement(
        f"SELECT max(originator_version) AS v FROM {EVENTS_TABLE}"
        " WHERE originator_id = %s AND (%s::bigint IS NULL OR notification_id <= %s)",
        (stream, at, at),
    )
    version = rows[0]["v"] if rows else None
    return None if version is None else int(version)


def created_at(stream: object) -> Query[int]:
    """The log position of the stream's first event (0 for a stream without one)."""
    rows = yield Statement(
        f"SELECT notification_id FROM {EVENTS_TABLE} WHERE originator_id = %s"
        " AND originator_version = 1",
        (stream,),
    )
    return int(rows[0]["notification_id"]) if rows else 0
