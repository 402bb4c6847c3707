"""Read model of which workspace and channel each stream belongs to, so the event log can
be filtered to what a reader may see."""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

from projections.base import SetProjection, Span
from projections.log import span_events


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
    CREATE INDEX IF NOT EXISTS rm_streams_workspace ON rm_streams (workspace_id);
    CREATE INDEX IF NOT EXISTS rm_streams_channel ON rm_streams (channel_id);
    """
    handles = frozenset(
        {
            "UserRegistered",
            "WorkspaceCreated",
            "ChannelCreated",
            "MessageSent",
            "SessionStarted",
            "DocumentCreated",
            "InboxOpened",
        }
    )

    def apply_span(self, cur: Cursor[Any], span: Span) -> None:
        events = span_events(span, self.handles, {"workspace_id": "uuid", "channel_id": "uuid"})
        cur.execute(
            "INSERT INTO rm_streams (stream_id, kind, workspace_id, channel_id)"
            " SELECT stream,"
            "  CASE type WHEN 'UserRegistered' THEN 'user' WHEN 'WorkspaceCreated' THEN 'workspace'"
            "   WHEN 'ChannelCreated' THEN 'channel' WHEN 'MessageSent' THEN 'message'"
            "   WHEN 'DocumentCreated' THEN 'document'"
            # A user's presence belongs to no workspace: only the log's raw readers see it.
            "   WHEN 'SessionStarted' THEN 'presence'"
            # A user's inbox (domain/notifications.py): no read path hands it out yet.
            "   WHEN 'InboxOpened' THEN 'inbox' END,"
            "  CASE WHEN type = 'WorkspaceCreated' THEN stream"
            "   WHEN type IN ('ChannelCreated', 'MessageSent', 'DocumentCreated')"
            "   THEN workspace_id END,"
            "  CASE type WHEN 'ChannelCreated' THEN stream WHEN 'MessageSent' THEN channel_id END"
            f" FROM ({events}) ev",
            span.params(),
        )
