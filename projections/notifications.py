"""Read model of notifications: each user's inbox (what, where, read or not, withdrawn or
not) and their notification preferences.

What a notification is about is checked against the reader's access when it is read
(``readable``), from the workspace and channel read models: a member removed from a
workspace, or who can no longer read a channel, stops seeing its notifications at once,
though the rows stay (they come back if access does).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import Cursor

from domain.messages import parse_mentions
from domain.notifications import BROADCASTS, MENTION, notification_id
from projections.base import EventProjection, LogEvent
from projections.queries import Query, Statement


class NotificationsProjection(EventProjection):
    name = "notifications"
    tables = ("rm_inboxes", "rm_notifications", "rm_notification_preferences")
    create_sql = """
    CREATE TABLE IF NOT EXISTS rm_inboxes (
        inbox_id uuid PRIMARY KEY,
        user_id uuid NOT NULL UNIQUE,
        read_up_to bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE IF NOT EXISTS rm_notifications (
        id uuid PRIMARY KEY,
        user_id uuid NOT NULL,
        position bigint NOT NULL,
        cause_position bigint NOT NULL,
        kind text NOT NULL,
        workspace_id uuid,
        channel_id uuid,
        message_id uuid,
        from_id text,
        detail text,
        created_at timestamptz NOT NULL,
        read boolean NOT NULL DEFAULT false,
        withdrawn boolean NOT NULL DEFAULT false
    );
    CREATE INDEX IF NOT EXISTS rm_notifications_user ON rm_notifications (user_id, position);
    CREATE INDEX IF NOT EXISTS rm_notifications_unread ON rm_notifications (user_id, position)
        WHERE NOT read AND NOT withdrawn;
    CREATE INDEX IF NOT EXISTS rm_notifications_message ON rm_notifications (message_id);
    CREATE TABLE IF NOT EXISTS rm_notification_preferences (
        user_id uuid NOT NULL,
        target text NOT NULL,
        target_id uuid NOT NULL,
        level text NOT NULL DEFAULT 'default',
        muted_until timestamptz,
        PRIMARY KEY (user_id, target_id)
    );
    """
    handles = frozenset(
        {
            "InboxOpened",
            "MentionNotified",
            "Notified",
            "NotificationsWithdrawn",
            "NotificationsRead",
            "NotificationsReadUpTo",
            "NotificationPreferencesOpened",
            "NotificationLevelSet",
            "NotificationsMuted",
            # What a deletion or an edit withdraws is hidden at once, before the withdrawal
            # policy records it in the inbox. (Read strictly: an edit this model cannot read
            # stops it, so the operator's skip lets the withdrawal policy, which cannot read
            # it either, pass it too.)
            "MessageEdited",
            "MessageDeleted",
        }
    )

    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        d, stream = event.data, event.stream
        match event.type:
            case "InboxOpened":
                cur.execute(
                    "INSERT INTO rm_inboxes (inbox_id, user_id) VALUES (%s, %s)",
                    (stream, d["user_id"]),
                )
            case "MentionNotified" | "Notified":
                # A notification at or before the inbox's read mark is read already.
                cur.execute(
                    "INSERT INTO rm_notifications (id, user_id, position, cause_position, kind,"
                    " workspace_id, channel_id, message_id, from_id, detail, created_at, read)"
                    " SELECT %s, i.user_id, %s, %s, %s, %s, %s, %s, %s, %s, %s,"
                    "   %s <= i.read_up_to FROM rm_inboxes i WHERE i.inbox_id = %s",
                    (
                        _id(stream, event.command_id),
                        event.position,
                        d["position"],
                        d.get("kind", MENTION),
                        d.get("workspace_id"),
                        d.get("channel_id"),
                        d.get("message_id"),
                        d.get("author_id", d.get("from_id")),
                        d.get("detail"),
                        event.at,
                        event.position,
                        stream,
                    ),
                )
            case "NotificationsWithdrawn":
                cur.execute(
                    "UPDATE rm_notifications SET withdrawn = true"
                    " WHERE user_id = (SELECT user_id FROM rm_inboxes WHERE inbox_id = %s)"
                    " AND message_id = %s AND kind = ANY(%s)",
                    (stream, d["message_id"], d["kinds"]),
                )
            case "NotificationsRead":
                cur.execute(
                    "UPDATE rm_notifications SET read = true"
                    " WHERE user_id = (SELECT user_id FROM rm_inboxes WHERE inbox_id = %s)"
                    " AND id = ANY(%s::uuid[])",
                    (stream, d["ids"]),
                )
            case "NotificationsReadUpTo":
                cur.execute(
                    "UPDATE rm_inboxes SET read_up_to = %s WHERE inbox_id = %s",
                    (d["position"], stream),
                )
                cur.execute(
                    "UPDATE rm_notifications SET read = true"
                    " WHERE user_id = (SELECT user_id FROM rm_inboxes WHERE inbox_id = %s)"
                    " AND position <= %s AND NOT read",
                    (stream, d["position"]),
                )
            case "MessageDeleted":
                cur.execute(
                    "UPDATE rm_notifications SET withdrawn = true WHERE message_id = %s",
                    (stream,),
                )
            case "MessageEdited":
                # As the withdrawal policy decides: a mention goes when the edit names the
                # user no more and says neither ``@channel`` nor ``@everyone``.
                broadcast = any(b in parse_mentions(d["text"] or "") for b in BROADCASTS)
                cur.execute(
                    "UPDATE rm_notifications SET withdrawn = true"
                    " WHERE message_id = %s AND kind = 'mention' AND NOT withdrawn"
                    " AND NOT (user_id = ANY(%s::uuid[])) AND NOT %s",
                    (stream, d["mentions"], broadcast),
                )
            case "NotificationPreferencesOpened":
                pass  # the rows come with the settings
            case "NotificationLevelSet":
                cur.execute(
                    # Only its owner sets a preference: the actor is the owner.
                    "INSERT INTO rm_notification_preferences (user_id, target, target_id, level)"
                    " VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (user_id, target_id) DO UPDATE SET level = excluded.level",
                    (event.actor, d["target"], d["target_id"], d["level"]),
                )
            case "NotificationsMuted":
                cur.execute(
                    "INSERT INTO rm_notification_preferences"
                    " (user_id, target, target_id, muted_until)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (user_id, target_id) DO UPDATE"
                    " SET muted_until = excluded.muted_until",
                    (event.actor, d["target"], d["target_id"], d["until"]),
                )


def _id(stream: UUID, command_id: str | None) -> UUID:
    return notification_id(stream, command_id)


# -- queries ---------------------------------------------------------------------------------

# Whether the reader (``%(user)s``) may read what notification ``n`` is about, now: a
# member of its workspace, who may read its channel (by membership for direct and private
# channels, by ``view_channels`` otherwise).
_READABLE = """
(
  (n.workspace_id IS NULL OR EXISTS (
     SELECT 1 FROM rm_workspace_members m
     WHERE m.workspace_id = n.workspace_id AND m.user_id = n.user_id))
  AND (n.channel_id IS NULL OR EXISTS (
     SELECT 1 FROM rm_channels c
     WHERE c.channel_id = n.channel_id AND (
       CASE WHEN c.kind = 'direct' OR c.private THEN EXISTS (
              SELECT 1 FROM rm_channel_members cm
              WHERE cm.channel_id = c.channel_id AND cm.user_id = n.user_id)
            ELSE true END)
     AND (c.kind = 'direct' OR EXISTS (
       SELECT 1 FROM rm_workspace_members m JOIN rm_workspace_roles r
         ON r.workspace_id = m.workspace_id AND r.name = ANY(m.roles)
       WHERE m.workspace_id = c.workspace_id AND m.user_id = n.user_id
         AND 'view_channels' = ANY(r.permissions)))))
)
"""

_COLUMNS = (
    "n.id::text, n.kind, n.position, n.cause_position, n.workspace_id::text,"
    " n.channel_id::text, n.message_id::text, NULLIF(n.from_id, '') AS from_id, n.detail,"
    " n.created_at, n.read"
)


def list_notifications(
    user_id: str, *, unread: bool, before: int | None, limit: int
) -> Query[list[dict[str, Any]]]:
    """The user's notifications they may read now, newest first, withdrawn ones left out;
    ``before``: the position the previous page ended at. ``limit + 1`` rows (``paged``)."""
    return (
        yield Statement(
            f"SELECT {_COLUMNS} FROM rm_notifications n"
            " WHERE n.user_id = %(user)s AND NOT n.withdrawn"
            " AND (%(before)s::bigint IS NULL OR n.position < %(before)s)"
            " AND (NOT %(unread)s OR NOT n.read)"
            f" AND {_READABLE}"
            " ORDER BY n.position DESC LIMIT %(limit)s",
            {"user": user_id, "before": before, "unread": unread, "limit": limit + 1},
        )
    )


def unread_counts(user_id: str) -> Query[dict[str, int]]:
    """How many of the user's readable notifications are unread, and how many of those are
    mentions."""
    rows = yield Statement(
        "SELECT count(*) AS unread, count(*) FILTER (WHERE n.kind = 'mention') AS mentions"
        " FROM rm_notifications n WHERE n.user_id = %(user)s AND NOT n.read"
        f" AND NOT n.withdrawn AND {_READABLE}",
        {"user": user_id},
    )
    return {"unread": int(rows[0]["unread"]), "mentions": int(rows[0]["mentions"])}


def unread_ids(user_id: str, ids: list[str]) -> Query[list[str]]:
    """Which of ``ids`` are the user's own unread notifications (another's id is not)."""
    rows = yield Statement(
        "SELECT id::text FROM rm_notifications WHERE user_id = %s AND id = ANY(%s::uuid[])"
        " AND NOT read",
        (user_id, ids),
    )
    return [r["id"] for r in rows]


def list_preferences(user_id: str) -> Query[list[dict[str, Any]]]:
    return (
        yield Statement(
            "SELECT target, target_id::text, level, muted_until"
            " FROM rm_notification_preferences WHERE user_id = %s ORDER BY target, target_id",
            (user_id,),
        )
    )
