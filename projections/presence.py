"""Read model of presence: who is online, their open sessions, and when they were last seen."""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

from projections.base import EventProjection, LogEvent
from projections.queries import Query, Statement


class PresenceProjection(EventProjection):
    name = "presence"
    tables = ("rm_presence", "rm_presence_sessions")
    create_sql = """
    CREATE TABLE IF NOT EXISTS rm_presence (
        user_id uuid PRIMARY KEY,
        online boolean NOT NULL,
        last_seen timestamptz NOT NULL
    );
    CREATE TABLE IF NOT EXISTS rm_presence_sessions (
        session_id uuid PRIMARY KEY,
        user_id uuid NOT NULL,
        instance_id text NOT NULL,
        started_at timestamptz NOT NULL
    );
    CREATE INDEX IF NOT EXISTS rm_presence_sessions_instance
        ON rm_presence_sessions (instance_id);
    CREATE INDEX IF NOT EXISTS rm_presence_sessions_user ON rm_presence_sessions (user_id);
    """
    handles = frozenset({"SessionStarted", "SessionEnded"})

    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        # Single statements with nothing read back: the runner pipelines its writes.
        d, session = event.data, event.stream
        match event.type:
            case "SessionStarted":
                cur.execute(
                    "INSERT INTO rm_presence_sessions"
                    " (session_id, user_id, instance_id, started_at) VALUES (%s, %s, %s, %s)",
                    (session, d["user_id"], d["instance_id"], event.at),
                )
                cur.execute(
                    "INSERT INTO rm_presence (user_id, online, last_seen) VALUES (%s, true, %s)"
                    " ON CONFLICT (user_id) DO UPDATE SET online = true,"
                    " last_seen = excluded.last_seen",
                    (d["user_id"], event.at),
                )
            case "SessionEnded":
                cur.execute(
                    "WITH gone AS (DELETE FROM rm_presence_sessions WHERE session_id = %s"
                    " RETURNING user_id)"
                    " INSERT INTO rm_presence (user_id, online, last_seen)"
                    " SELECT g.user_id, EXISTS (SELECT 1 FROM rm_presence_sessions s"
                    "   WHERE s.user_id = g.user_id AND s.session_id <> %s), %s FROM gone g"
                    " ON CONFLICT (user_id) DO UPDATE SET online = excluded.online,"
                    " last_seen = excluded.last_seen",
                    (session, session, event.at),
                )


# -- queries ---------------------------------------------------------------------------------


def workspace_presence(
    workspace_id: str, *, limit: int, after: str | None
) -> Query[list[dict[str, Any]]]:
    """Each member's status, in join order; ``after`` is the last user id of the previous
    page. Members never seen online are offline with no ``last_seen``."""
    return (
        yield Statement(
            "SELECT m.user_id::text,"
            " CASE WHEN p.online THEN 'online' ELSE 'offline' END AS status, p.last_seen"
            " FROM rm_workspace_members m LEFT JOIN rm_presence p ON p.user_id = m.user_id"
            # A deactivated account (issue 20) has no presence to show until reactivated.
            " WHERE m.workspace_id = %s AND NOT EXISTS (SELECT 1 FROM rm_users u"
            "   WHERE u.user_id = m.user_id AND u.deactivated_at IS NOT NULL)"
            " AND (%s::uuid IS NULL OR (m.joined_at, m.user_id) >"
            "   (SELECT joined_at, user_id FROM rm_workspace_members"
            "    WHERE workspace_id = %s AND user_id = %s::uuid))"
            " ORDER BY m.joined_at, m.user_id LIMIT %s",
            (workspace_id, after, workspace_id, after, limit),
        )
    )


# Only the presence keeper's thread reads this one: it takes its cursor directly.
def sessions_on_instance(cur: Cursor[Any], instance_id: str) -> list[dict[str, Any]]:
    cur.execute(
        "SELECT user_id::text, session_id::text FROM rm_presence_sessions WHERE instance_id = %s",
        (instance_id,),
    )
    return list(cur.fetchall())
