"""The erasure audit trail (issue 20): one row per event that erased something, for the
instance's auditors (``GET /api/audit/erasures``): who, what kind, when, at which position.

Never what was erased: the rows hold the event's envelope, the kinds of data (a user's
erasure), a retention run's cut-off and count, the workspace. An actor who was erased
later is shown as such by the query (``erased user``), not by rewriting rows.
"""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

from projections.base import EventProjection, LogEvent
from projections.queries import Query, Statement

# The events that erase (a new kind of erasure adds its type here and a branch in ``apply``).
ERASING = ("UserErased", "RetentionApplied")


class ErasureAuditProjection(EventProjection):
    name = "erasure_audit"
    tables = ("rm_erasure_audit",)
    create_sql = """
    CREATE TABLE IF NOT EXISTS rm_erasure_audit (
        position bigint PRIMARY KEY,
        type text NOT NULL,
        stream uuid NOT NULL,
        actor_id text,
        at timestamptz NOT NULL,
        kinds text[] NOT NULL,
        workspace_id uuid,
        cutoff timestamptz,
        count integer
    );
    CREATE INDEX IF NOT EXISTS rm_erasure_audit_erased_users ON rm_erasure_audit (stream)
        WHERE type = 'UserErased';
    """
    handles = frozenset(ERASING)

    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        if event.type == "UserErased":
            kinds, workspace, cutoff, count = list(event.data["kinds"]), None, None, None
        else:
            kinds, workspace = ["messages"], event.stream
            cutoff, count = event.data["cutoff"], int(event.data["count"])
        cur.execute(
            "INSERT INTO rm_erasure_audit (position, type, stream, actor_id, at, kinds,"
            " workspace_id, cutoff, count) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (position) DO NOTHING",
            (
                event.position,
                event.type,
                event.stream,
                event.actor,
                event.at,
                kinds,
                workspace,
                cutoff,
                count,
            ),
        )


def erasures(after: int, limit: int) -> Query[list[dict[str, Any]]]:
    """The trail after ``after``, oldest first; ``actor_erased``: the actor was erased since
    (or is the erased user)."""
    rows = yield Statement(
        "SELECT a.position, a.type, a.stream, a.actor_id, a.at, a.kinds, a.workspace_id,"
        " a.cutoff, a.count, EXISTS (SELECT 1 FROM rm_erasure_audit u"
        "  WHERE u.type = 'UserErased' AND u.stream::text = a.actor_id) AS actor_erased"
        " FROM rm_erasure_audit a WHERE a.position > %s ORDER BY a.position LIMIT %s",
        (after, limit),
    )
    return [dict(r) for r in rows]
