"""Read model of message timelines: edits, tombstones, reactions and reply counts."""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

from projections.base import LogEvent, Projection
from projections.queries import Query, Statement


class TimelinesProjection(Projection):
    name = "timelines"
    tables = ("rm_messages", "rm_reactions")
    create_sql = """
    CREATE TABLE IF NOT EXISTS rm_messages (
        message_id uuid PRIMARY KEY,
        channel_id uuid NOT NULL,
        workspace_id uuid,
        author_id uuid NOT NULL,
        text text NOT NULL,
        mentions uuid[] NOT NULL,
        reply_to uuid,
        reply_count integer NOT NULL DEFAULT 0,
        created_at timestamptz NOT NULL,
        edited_at timestamptz,
        deleted boolean NOT NULL DEFAULT false,
        seq bigint NOT NULL,
        version integer NOT NULL
    );
    CREATE INDEX IF NOT EXISTS rm_messages_timeline ON rm_messages (channel_id, seq);
    CREATE TABLE IF NOT EXISTS rm_reactions (
        message_id uuid NOT NULL,
        emoji text NOT NULL,
        user_id uuid NOT NULL,
        reacted_at timestamptz NOT NULL,
        PRIMARY KEY (message_id, emoji, user_id)
    );
    """
    handles = frozenset(
        {"MessageSent", "MessageEdited", "MessageDeleted", "ReactionAdded", "ReactionRemoved"}
    )

    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        d, msg = event.data, event.stream
        if event.type != "MessageSent":
            # Clients send it back as If-Match on edits.
            cur.execute(
                "UPDATE rm_messages SET version = %s WHERE message_id = %s", (event.version, msg)
            )
        match event.type:
            case "MessageSent":
                # The position of the first event orders the timeline: it is global, so it
                # is also a stable, unique cursor.
                cur.execute(
                    "INSERT INTO rm_messages (message_id, channel_id, workspace_id, author_id,"
                    " text, mentions, reply_to, created_at, seq, version)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 1)",
                    (
                        msg,
                        d["channel_id"],
                        d["workspace_id"],
                        d["author_id"],
                        d["text"],
                        d["mentions"],
                        d["reply_to"],
                        event.at,
                        event.position,
                    ),
                )
                if d["reply_to"]:
                    self._replies(cur, d["reply_to"], +1)
            case "MessageEdited":
                cur.execute(
                    "UPDATE rm_messages SET text = %s, mentions = %s, edited_at = %s"
                    " WHERE message_id = %s",
                    (d["text"], d["mentions"], event.at, msg),
                )
            case "MessageDeleted":
                # No results read back: the runner pipelines its writes.
                cur.execute(
                    "UPDATE rm_messages p SET reply_count = p.reply_count - 1 FROM rm_messages m"
                    " WHERE m.message_id = %s AND NOT m.deleted AND p.message_id = m.reply_to",
                    (msg,),
                )
                cur.execute(
                    "UPDATE rm_messages SET text = '', mentions = '{}', deleted = true"
                    " WHERE message_id = %s",
                    (msg,),
                )
                cur.execute("DELETE FROM rm_reactions WHERE message_id = %s", (msg,))
            case "ReactionAdded":
                cur.execute(
                    "INSERT INTO rm_reactions (message_id, emoji, user_id, reacted_at)"
                    " VALUES (%s, %s, %s, %s)",
                    (msg, d["emoji"], d["user_id"], event.at),
                )
            case "ReactionRemoved":
                cur.execute(
                    "DELETE FROM rm_reactions WHERE message_id = %s AND emoji = %s"
                    " AND user_id = %s",
                    (msg, d["emoji"], d["user_id"]),
                )

    @staticmethod
    def _replies(cur: Cursor[Any], message_id: object, delta: int) -> None:
        cur.execute(
            "UPDATE rm_messages SET reply_count = reply_count + %s WHERE message_id = %s",
            (delta, message_id),
        )


# -- queries ---------------------------------------------------------------------------------


def list_messages(
    channel_id: str, *, limit: int, before: int | None, after: int | None
) -> Query[tuple[list[dict[str, Any]], int | None]]:
    """Newest first. ``before`` pages back in time; ``after`` pages forward (the page just
    after the cursor, still shown newest first). Returns the items and the next cursor."""
    if after is not None:
        rows = yield Statement(
            "SELECT * FROM (SELECT * FROM rm_messages WHERE channel_id = %s AND seq > %s"
            " ORDER BY seq ASC LIMIT %s) page ORDER BY seq DESC",
            (channel_id, after, limit + 1),
        )
        more = len(rows) > limit
        rows = rows[1:] if more else rows
        next_cursor = rows[0]["seq"] if more and rows else None
    else:
        rows = yield Statement(
            "SELECT * FROM rm_messages WHERE channel_id = %s AND (%s::bigint IS NULL OR seq < %s)"
            " ORDER BY seq DESC LIMIT %s",
            (channel_id, before, before, limit + 1),
        )
        more = len(rows) > limit
        rows = rows[:limit]
        next_cursor = rows[-1]["seq"] if more and rows else None
    reactions = yield from _reactions([r["message_id"] for r in rows])
    items = [
        {
            "id": str(r["message_id"]),
            "channel_id": str(r["channel_id"]),
            "author_id": str(r["author_id"]),
            "text": r["text"],
            "created_at": r["created_at"],
            "edited_at": r["edited_at"],
            "deleted": r["deleted"],
            "reactions": reactions.get(r["message_id"], {}),
            "reply_to": None if r["reply_to"] is None else str(r["reply_to"]),
            "reply_count": r["reply_count"],
            "version": r["version"],
            "mentions": [str(m) for m in r["mentions"]],
        }
        for r in rows
    ]
    return items, next_cursor


def _reactions(message_ids: list[Any]) -> Query[dict[Any, dict[str, list[str]]]]:
    if not message_ids:
        return {}
    rows = yield Statement(
        "SELECT message_id, emoji, array_agg(user_id::text ORDER BY reacted_at, user_id) AS users"
        " FROM rm_reactions WHERE message_id = ANY(%s) GROUP BY message_id, emoji"
        " ORDER BY message_id, min(reacted_at), emoji",
        (message_ids,),
    )
    out: dict[Any, dict[str, list[str]]] = {}
    for row in rows:
        out.setdefault(row["message_id"], {})[row["emoji"]] = list(row["users"])
    return out


def message_channel(message_id: str) -> Query[str | None]:
    rows = yield Statement(
        "SELECT channel_id::text FROM rm_messages WHERE message_id = %s", (message_id,)
    )
    return str(rows[0]["channel_id"]) if rows else None
