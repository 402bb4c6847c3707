"""Read model of which workspace and channel each stream belongs to, so the event log can
be filtered to what a reader may see."""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

from projections.base import LogEvent, Projection


class StreamsProjection(Projection):
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
        }
    )

    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        d, s = event.data, event.stream
        kind, workspace, channel = {
            "UserRegistered": ("user", None, None),
            "WorkspaceCreated": ("workspace", s, None),
            "ChannelCreated": ("channel", d.get("workspace_id"), s),
            "MessageSent": ("message", d.get("workspace_id"), d.get("channel_id")),
            "DocumentCreated": ("document", d.get("workspace_id"), None),
            # A user's presence belongs to no workspace: only the log's raw readers see it.
            "SessionStarted": ("presence", None, None),
        }[event.type]
        cur.execute(
            "INSERT INTO rm_streams (stream_id, kind, workspace_id, channel_id)"
            " VALUES (%s, %s, %s, %s)",
            (s, kind, workspace, channel),
        )
