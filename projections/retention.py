"""Per-workspace retention (issue 20): the read model that destroys expired messages' keys,
and the queries of the retention worker (application/retention.py).

``rm_retention`` holds each workspace's retention and the cut-off of its last run. Each
``RetentionApplied`` destroys the data keys of the messages it names
(``infrastructure.keys.erase_statement``, subjects: the messages' streams, so their sent
and edited texts both) in the runner's transaction: exactly once with its tracking
position, again on a rebuild (a key already destroyed stays so).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg import Cursor
from psycopg_pool import ConnectionPool

from domain.retention import Expired, Kept
from infrastructure.eventstore import EVENTS_TABLE
from infrastructure.keys import erase_statement
from projections.base import EventProjection, LogEvent
from projections.queries import Query, Statement


class RetentionProjection(EventProjection):
    name = "retention"
    tables = ("rm_retention",)
    create_sql = """
    CREATE TABLE IF NOT EXISTS rm_retention (
        workspace_id uuid PRIMARY KEY,
        days integer,
        retained_before timestamptz
    );
    """
    handles = frozenset({"RetentionSet", "RetentionApplied"})

    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        if event.type == "RetentionSet":
            cur.execute(
                "INSERT INTO rm_retention (workspace_id, days) VALUES (%s, %s)"
                " ON CONFLICT (workspace_id) DO UPDATE SET days = excluded.days",
                (event.stream, event.data["days"]),
            )
            return
        ids = [UUID(m) for m in event.data["message_ids"]]
        cur.execute(*erase_statement(ids, []))
        cur.execute(
            "UPDATE rm_retention SET retained_before = %s::timestamptz WHERE workspace_id = %s",
            (event.data["cutoff"], event.stream),
        )


class RetentionReadsSql:
    """The worker's reads (application/retention.py: ``RetentionReads``)."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool

    def workspaces(self) -> Sequence[Kept]:
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT workspace_id, days, retained_before FROM rm_retention"
                " WHERE days IS NOT NULL ORDER BY workspace_id"
            ).fetchall()
        return [Kept(str(r["workspace_id"]), int(r["days"]), r["retained_before"]) for r in rows]

    def expired(
        self, workspace_id: str, since: datetime | None, cutoff: datetime, limit: int
    ) -> Sequence[Expired]:
        # Deleted messages too: their texts are in the log as well.
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT message_id, created_at FROM rm_messages WHERE workspace_id = %s"
                " AND created_at < %s AND (%s::timestamptz IS NULL OR created_at >= %s)"
                " ORDER BY created_at, message_id LIMIT %s",
                (workspace_id, cutoff, since, since, limit),
            ).fetchall()
        return [Expired(str(r["message_id"]), r["created_at"]) for r in rows]

    def head(self) -> int:
        with self.pool.connection() as conn:
            row = conn.execute(
                f"SELECT max(notification_id) AS head FROM {EVENTS_TABLE}"
            ).fetchone()
        return int(row["head"] or 0) if row else 0


def retention_of(workspace_id: str) -> Query[dict[str, Any] | None]:
    """A workspace's retention as the read model has it (the route's read)."""
    rows = yield Statement(
        "SELECT days, retained_before FROM rm_retention WHERE workspace_id = %s",
        (workspace_id,),
    )
    return dict(rows[0]) if rows else None
