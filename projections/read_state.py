"""Read model of read markers' moves, and the unread and mention counts of the markers.

Counts come from indexes, never from a scan of what is unread. A channel's messages are
numbered in the timeline (``rm_messages.channel_seq``, the count in ``rm_channel_heads``, the
marker's number in ``rm_read_markers``), so the messages after a marker are the channel's
count minus the number at the marker; from that are taken the reader's own messages and the
deleted ones after the marker (each an index range that holds only those). Mentions after
the marker are a range of ``rm_mentions (user_id, channel_id, seq)``. A channel read to its
end costs one comparison: its newest message is not after the marker.
"""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

from projections.base import SetProjection, Span
from projections.log import span_events
from projections.queries import Query, Statement


class ReadStateProjection(SetProjection):
    """Every move of every marker, for analysts. The markers themselves, where the counts
    read them, are kept by the timelines projection (``rm_read_markers``), beside the
    numbers they point into."""

    name = "read_state"
    tables = ("rm_read_moves", "rm_read_receipt_settings")
    create_sql = """
    CREATE TABLE IF NOT EXISTS rm_read_moves (
        event_position bigint PRIMARY KEY,
        user_id uuid NOT NULL,
        channel_id uuid NOT NULL,
        up_to bigint NOT NULL,
        previous bigint NOT NULL,
        read_at timestamptz NOT NULL
    );
    CREATE INDEX IF NOT EXISTS rm_read_moves_channel ON rm_read_moves (channel_id, up_to);
    -- Whether each user sends read receipts (a user with no row does).
    CREATE TABLE IF NOT EXISTS rm_read_receipt_settings (
        user_id uuid PRIMARY KEY,
        send boolean NOT NULL
    );
    """
    handles = frozenset({"ChannelRead", "ReadReceiptsChanged"})

    def apply_span(self, cur: Cursor[Any], span: Span) -> None:
        params = span.params()
        if "ChannelRead" in span.types:
            read = span_events(span, {"ChannelRead"}, _READ_FIELDS)
            cur.execute(
                "INSERT INTO rm_read_moves (event_position, user_id, channel_id, up_to,"
                " previous, read_at) SELECT position, user_id, channel_id, up_to, previous, at"
                f" FROM ({read}) ev",
                params,
            )
        if "ReadReceiptsChanged" in span.types:
            changed = span_events(
                span, {"ReadReceiptsChanged"}, {"user_id": "uuid", "send": "boolean"}
            )
            cur.execute(
                "INSERT INTO rm_read_receipt_settings (user_id, send)"
                f" SELECT DISTINCT ON (user_id) user_id, send FROM ({changed}) ev"
                " ORDER BY user_id, position DESC"
                " ON CONFLICT (user_id) DO UPDATE SET send = excluded.send",
                params,
            )


_READ_FIELDS = {"user_id": "uuid", "channel_id": "uuid", "up_to": "bigint", "previous": "bigint"}


# -- queries ---------------------------------------------------------------------------------


def _counts_sql(channels: str) -> str:
    """Per channel of ``channels`` (SQL yielding a column ``id``, and any others, which are
    passed on): the caller's (``%(user)s``) marker and unread and mention counts.

    Unread = the channel's count - the number at the marker - my messages after it (my
    count - my count at the marker) - others' deleted messages after it. Only the last
    needs an index range, and only where a message after the marker was deleted; mentions
    after the marker one range of ``rm_mentions``, only where one may be there. A channel
    read to its end costs none of them."""
    marker = "coalesce(r.position, 0)"
    at_marker = (
        "coalesce(r.channel_seq, (SELECT m.channel_seq FROM rm_messages m"
        "   WHERE m.channel_id = c.id AND m.seq <= r.position ORDER BY m.seq DESC LIMIT 1), 0)"
    )
    # Set with every marker (timelines projection); none before the first read.
    own_at_marker = "coalesce(r.own_messages, 0)"
    deleted_after = (
        f"CASE WHEN h.last_deleted_seq > {marker} THEN (SELECT count(*) FROM rm_messages m"
        "   WHERE m.channel_id = c.id AND m.deleted AND m.author_id <> %(user)s"
        f"   AND m.seq > {marker}) ELSE 0 END"
    )
    unread = (
        f"h.messages - {at_marker} - (coalesce(a.messages, 0) - {own_at_marker}) - {deleted_after}"
    )
    mentions = (
        f"CASE WHEN mh.last_seq > {marker} THEN (SELECT count(*) FROM rm_mentions x"
        "  WHERE x.user_id = %(user)s AND x.channel_id = c.id"
        f"  AND x.seq > {marker}) ELSE 0 END"
    )
    unread_after = f"h.last_seq IS NOT NULL AND h.last_seq > {marker}"
    return (
        "SELECT c.*, r.position AS last_read,"
        f" CASE WHEN {unread_after} THEN {unread} ELSE 0 END AS unread_count,"
        f" CASE WHEN {unread_after} THEN {mentions} ELSE 0 END AS mention_count"
        f" FROM ({channels}) c"
        " LEFT JOIN rm_channel_heads h ON h.channel_id = c.id"
        " LEFT JOIN rm_read_markers r ON r.user_id = %(user)s AND r.channel_id = c.id"
        " LEFT JOIN rm_author_counts a ON a.author_id = %(user)s AND a.channel_id = c.id"
        " LEFT JOIN rm_mention_heads mh ON mh.user_id = %(user)s AND mh.channel_id = c.id"
    )


def channel_counts(user_id: str, channel_ids: list[str]) -> Query[dict[str, dict[str, Any]]]:
    """``unread_count``, ``mention_count`` and ``last_read`` (a position: the timeline's
    cursor; None before the first read) of each channel, for ``user_id``."""
    if not channel_ids:
        return {}
    rows = yield Statement(
        _counts_sql("SELECT unnest(%(channels)s::uuid[]) AS id"),
        {"user": user_id, "channels": channel_ids},
    )
    return {str(r["id"]): _counted(r) for r in rows}


def _counted(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "unread_count": int(row["unread_count"]),
        "mention_count": int(row["mention_count"]),
        "last_read": row["last_read"],
    }


# The channels a user may read in the workspaces they belong to (as
# projections/channels.visible_channel decides: ``view_channels``, and membership of a
# private one).
_READABLE_CHANNELS = (
    "SELECT c.channel_id AS id, c.workspace_id FROM rm_workspace_members wm"
    " JOIN rm_channels c ON c.workspace_id = wm.workspace_id"
    " WHERE wm.user_id = %(user)s AND EXISTS (SELECT 1 FROM rm_workspace_roles wr"
    "   WHERE wr.workspace_id = wm.workspace_id AND wr.name = ANY(wm.roles)"
    "   AND 'view_channels' = ANY(wr.permissions))"
    " AND (NOT c.private OR EXISTS (SELECT 1 FROM rm_channel_members cm"
    "   WHERE cm.channel_id = c.channel_id AND cm.user_id = %(user)s))"
)


def workspace_counts(user_id: str) -> Query[dict[str, dict[str, int]]]:
    """For each workspace of ``user_id``: unread and mention counts summed over the
    channels they may read in it (workspaces with none are left out)."""
    rows = yield Statement(
        "SELECT k.workspace_id::text, sum(k.unread_count) AS unread_count,"
        " sum(k.mention_count) AS mention_count"
        f" FROM ({_counts_sql(_READABLE_CHANNELS)}) k GROUP BY k.workspace_id",
        {"user": user_id},
    )
    return {
        r["workspace_id"]: {
            "unread_count": int(r["unread_count"]),
            "mention_count": int(r["mention_count"]),
        }
        for r in rows
    }


def all_channel_counts(user_id: str) -> Query[list[dict[str, Any]]]:
    """Counts for every channel ``user_id`` may read, direct channels included (what the
    bench measures: a user's badges, everywhere, in one statement)."""
    channels = (
        f"SELECT rc.id FROM ({_READABLE_CHANNELS}) rc UNION ALL"
        " SELECT cm.channel_id FROM rm_channel_members cm JOIN rm_channels dc"
        "  ON dc.channel_id = cm.channel_id AND dc.kind = 'direct' WHERE cm.user_id = %(user)s"
    )
    rows = yield Statement(_counts_sql(channels), {"user": user_id})
    return [{"channel_id": str(r["id"]), **_counted(r)} for r in rows]


def list_direct_channels(
    user_id: str, *, limit: int, before: tuple[int, str] | None
) -> Query[tuple[list[dict[str, Any]], tuple[int, str] | None]]:
    """The user's direct channels, the most recently active first (a channel with no message
    last), with the other people, the newest message and the counts. ``before``: the
    previous page's cursor (activity, channel id). Returns the page and the next cursor."""
    activity, channel = before if before is not None else (None, None)
    rows = yield Statement(
        "SELECT c.channel_id::text AS id, c.created_at, coalesce(h.last_seq, 0) AS activity,"
        " os.others,"
        " lm.message_id::text AS last_id, lm.author_id::text AS last_author_id,"
        " lm.created_at AS last_at, lm.text AS last_text, lm.deleted AS last_deleted,"
        " lm.seq AS last_position"
        " FROM rm_channel_members me"
        " JOIN rm_channels c ON c.channel_id = me.channel_id AND c.kind = 'direct'"
        # Every other member (one in a two-person channel, up to 9 in a group).
        " LEFT JOIN LATERAL (SELECT coalesce(json_agg(json_build_object('id', o.user_id::text,"
        "   'username', u.username, 'display_name', u.display_name)"
        "   ORDER BY u.username, o.user_id), '[]') AS others"
        "  FROM rm_channel_members o LEFT JOIN rm_users u ON u.user_id = o.user_id"
        "  WHERE o.channel_id = c.channel_id AND o.user_id <> me.user_id) os ON true"
        " LEFT JOIN rm_channel_heads h ON h.channel_id = c.channel_id"
        " LEFT JOIN rm_messages lm ON lm.message_id = h.last_message_id"
        " WHERE me.user_id = %(user)s AND (%(activity)s::bigint IS NULL"
        "  OR (coalesce(h.last_seq, 0), c.channel_id) < (%(activity)s, %(channel)s::uuid))"
        " ORDER BY coalesce(h.last_seq, 0) DESC, c.channel_id DESC LIMIT %(limit)s",
        {"user": user_id, "activity": activity, "channel": channel, "limit": limit + 1},
    )
    more = len(rows) > limit
    rows = rows[:limit]
    counts = yield from channel_counts(user_id, [r["id"] for r in rows])
    items = []
    for r in rows:
        last = None
        if r["last_id"] is not None:
            last = {
                "id": r["last_id"],
                "author_id": r["last_author_id"],
                "created_at": r["last_at"],
                "deleted": r["last_deleted"],
                "text": None if r["last_deleted"] else r["last_text"],
                "position": r["last_position"],
            }
        others = list(r["others"])
        items.append(
            {
                "channel_id": r["id"],
                "created_at": r["created_at"],
                "other": others[0] if len(others) == 1 else None,
                "others": others,
                "last_message": last,
                **counts[r["id"]],
            }
        )
    next_cursor = (rows[-1]["activity"], rows[-1]["id"]) if more and rows else None
    return items, next_cursor


def message_position(channel_id: str, message_id: str) -> Query[int | None]:
    """The timeline position of a message of the channel, or None."""
    rows = yield Statement(
        "SELECT seq FROM rm_messages WHERE message_id = %s AND channel_id = %s",
        (message_id, channel_id),
    )
    return int(rows[0]["seq"]) if rows else None


def newest_at_or_before(channel_id: str, position: int) -> Query[tuple[str, int] | None]:
    """The channel's newest message at or before ``position`` (id, position), or None."""
    rows = yield Statement(
        "SELECT message_id::text, seq FROM rm_messages WHERE channel_id = %s AND seq <= %s"
        " ORDER BY seq DESC LIMIT 1",
        (channel_id, position),
    )
    return (rows[0]["message_id"], int(rows[0]["seq"])) if rows else None


# Read receipts are shown in direct channels and in private channels of at most this many
# members: in a bigger room "who has read this" is surveillance more than conversation.
MAX_RECEIPT_MEMBERS = 20


def sends_receipts(user_id: str) -> Query[bool]:
    rows = yield Statement(
        "SELECT send FROM rm_read_receipt_settings WHERE user_id = %s", (user_id,)
    )
    return bool(rows[0]["send"]) if rows else True


def channel_receipts(channel: dict[str, Any], user_id: str) -> Query[list[dict[str, Any]] | None]:
    """How far each other member of ``channel`` (a row of ``visible_channel``) has read, for
    those who send receipts and have read something; None for a channel that shows none
    (public, or more than ``MAX_RECEIPT_MEMBERS`` members)."""
    if not (channel["private"] or channel["kind"] == "direct"):
        return None
    rows = yield Statement(
        "SELECT count(*) AS n FROM rm_channel_members WHERE channel_id = %s", (channel["id"],)
    )
    if rows[0]["n"] > MAX_RECEIPT_MEMBERS:
        return None
    return (
        yield Statement(
            "SELECT cm.user_id::text, r.position AS last_read, r.message_id::text,"
            " r.read_at FROM rm_channel_members cm"
            " JOIN rm_read_markers r ON r.user_id = cm.user_id AND r.channel_id = cm.channel_id"
            " LEFT JOIN rm_read_receipt_settings s ON s.user_id = cm.user_id"
            " WHERE cm.channel_id = %s AND cm.user_id <> %s AND coalesce(s.send, true)"
            " ORDER BY r.position DESC, cm.user_id",
            (channel["id"], user_id),
        )
    )
