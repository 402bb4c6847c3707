"""Read model of message timelines: edits, tombstones, reactions and reply counts."""

from __future__ import annotations

from typing import Any

import msgspec
from psycopg import Cursor

from infrastructure.keys import SEALED, open_states
from projections.base import SetProjection, Span
from projections.log import span_events
from projections.queries import Query, Statement

# Stores whose timelines predate issue 19: their messages are numbered, their channels' heads,
# mentions and threads' last replies worked out, once (the column's comment then says so: the
# catalog, not a scan, tells later starts there is nothing to do).
_BACKFILL = """
DO $backfill$ BEGIN
IF col_description(to_regclass('rm_messages'), (SELECT attnum FROM pg_attribute
       WHERE attrelid = to_regclass('rm_messages') AND attname = 'channel_seq'))
   IS DISTINCT FROM 'numbered' THEN
    UPDATE rm_messages m SET channel_seq = x.n FROM (SELECT message_id,
        row_number() OVER (PARTITION BY channel_id ORDER BY seq) AS n FROM rm_messages) x
        WHERE x.message_id = m.message_id;
    UPDATE rm_messages p SET last_reply_at = r.last FROM (SELECT reply_to,
        max(created_at) AS last FROM rm_messages WHERE reply_to IS NOT NULL AND NOT deleted
        GROUP BY reply_to) r WHERE p.message_id = r.reply_to;
    INSERT INTO rm_channel_heads (channel_id, messages, last_seq, last_message_id, last_at)
        SELECT DISTINCT ON (channel_id) channel_id, channel_seq, seq, message_id, created_at
        FROM rm_messages ORDER BY channel_id, seq DESC ON CONFLICT DO NOTHING;
    INSERT INTO rm_mentions (user_id, channel_id, seq, message_id)
        SELECT DISTINCT u.id, m.channel_id, m.seq, m.message_id
        FROM rm_messages m CROSS JOIN LATERAL unnest(m.mentions) AS u(id)
        WHERE u.id <> m.author_id AND NOT m.deleted ON CONFLICT DO NOTHING;
    UPDATE rm_channel_heads h SET last_deleted_seq = d.seq FROM (SELECT channel_id,
        max(seq) AS seq FROM rm_messages WHERE deleted GROUP BY channel_id) d
        WHERE h.channel_id = d.channel_id;
    INSERT INTO rm_author_counts (author_id, channel_id, messages)
        SELECT author_id, channel_id, count(*) FROM rm_messages GROUP BY 1, 2
        ON CONFLICT DO NOTHING;
    INSERT INTO rm_mention_heads (user_id, channel_id, last_seq)
        SELECT user_id, channel_id, max(seq) FROM rm_mentions GROUP BY 1, 2
        ON CONFLICT DO NOTHING;
    COMMENT ON COLUMN rm_messages.channel_seq IS 'numbered';
END IF;
END $backfill$;
"""


# How a sealed value starts once ``json_to_record`` has made it text.
SEALED_TEXT = f'{{"{SEALED}":'


class TimelinesProjection(SetProjection):
    name = "timelines"
    tables = (
        "rm_messages",
        "rm_reactions",
        "rm_channel_heads",
        "rm_mentions",
        "rm_read_markers",
        "rm_author_counts",
        "rm_mention_heads",
    )
    create_sql = (
        """
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
    -- Issue 19. channel_seq numbers a channel's messages 1, 2, 3... in timeline order, so the
    -- messages after a read marker are a subtraction, not a count (projections/
    -- read_state.py); last_reply_at is the newest reply that is not deleted.
    ALTER TABLE rm_messages ADD COLUMN IF NOT EXISTS channel_seq bigint;
    ALTER TABLE rm_messages ADD COLUMN IF NOT EXISTS last_reply_at timestamptz;
    CREATE INDEX IF NOT EXISTS rm_messages_author ON rm_messages (channel_id, author_id, seq);
    CREATE INDEX IF NOT EXISTS rm_messages_deleted ON rm_messages (channel_id, seq)
        WHERE deleted;
    CREATE INDEX IF NOT EXISTS rm_messages_replies ON rm_messages (reply_to, seq)
        WHERE reply_to IS NOT NULL;
    -- A workspace's messages by age: what its retention finds (projections/retention.py).
    CREATE INDEX IF NOT EXISTS rm_messages_age ON rm_messages (workspace_id, created_at);
    -- Each channel's message count and newest message (deleted or not).
    CREATE TABLE IF NOT EXISTS rm_channel_heads (
        channel_id uuid PRIMARY KEY,
        messages bigint NOT NULL,
        last_seq bigint NOT NULL,
        last_message_id uuid NOT NULL,
        last_at timestamptz NOT NULL,
        -- The newest deleted message (0: none): no deleted message after a marker past it.
        last_deleted_seq bigint NOT NULL DEFAULT 0
    );
    -- How many messages each author sent in each channel (deleted ones too): with the count
    -- at a marker, one's own messages after it, without counting them.
    CREATE TABLE IF NOT EXISTS rm_author_counts (
        author_id uuid NOT NULL,
        channel_id uuid NOT NULL,
        messages bigint NOT NULL,
        PRIMARY KEY (author_id, channel_id)
    );
    -- The newest message that ever mentioned a user in a channel: no mention after a marker
    -- past it (a bound: a mention taken away later leaves it where it was).
    CREATE TABLE IF NOT EXISTS rm_mention_heads (
        user_id uuid NOT NULL,
        channel_id uuid NOT NULL,
        last_seq bigint NOT NULL,
        PRIMARY KEY (user_id, channel_id)
    );
    -- Whom a message mentions (its author aside), while it is not deleted.
    CREATE TABLE IF NOT EXISTS rm_mentions (
        user_id uuid NOT NULL,
        channel_id uuid NOT NULL,
        seq bigint NOT NULL,
        message_id uuid NOT NULL,
        PRIMARY KEY (user_id, channel_id, seq)
    );
    CREATE INDEX IF NOT EXISTS rm_mentions_message ON rm_mentions (message_id);
    -- Where each user has read each channel up to: the message, its position and its number
    -- in the channel (kept here, beside the numbers, so it is always the message's own).
    CREATE TABLE IF NOT EXISTS rm_read_markers (
        user_id uuid NOT NULL,
        channel_id uuid NOT NULL,
        position bigint NOT NULL,
        message_id uuid NOT NULL,
        channel_seq bigint,
        -- The reader's own messages in the channel up to the marker.
        own_messages bigint,
        read_at timestamptz NOT NULL,
        PRIMARY KEY (user_id, channel_id)
    );
    """
        + _BACKFILL
    )
    handles = frozenset(
        {
            "MessageSent",
            "MessageEdited",
            "MessageDeleted",
            "ReactionAdded",
            "ReactionRemoved",
            "ChannelRead",
            "UserErased",
            "RetentionApplied",
        }
    )

    def apply_span(self, cur: Cursor[Any], span: Span) -> None:
        # In this order, the statements leave what the span's events applied one by one in
        # position order would: the domain refuses any change to a deleted message, and a
        # reaction is added only when absent and removed only when present.
        types, params = span.types, span.params()
        if "MessageSent" in types:
            self._sent(cur, span, params)
        if "MessageEdited" in types:
            self._edited(cur, span, params)
        if types & {"MessageSent", "MessageEdited"}:
            self._open_sealed(cur, span, params)
        if "UserErased" in types:
            # Their keys are destroyed (projections/erasures.py): the read model forgets
            # the texts too.
            cur.execute(
                "UPDATE rm_messages SET text = '' WHERE author_id IN"
                f" (SELECT stream FROM ({span_events(span, {'UserErased'})}) ev)",
                params,
            )
        if "RetentionApplied" in types:
            # A workspace's retention erased them (projections/retention.py destroys the
            # keys): the read model forgets their texts too.
            cur.execute(
                "UPDATE rm_messages SET text = '' WHERE message_id IN (SELECT unnest(ev.ids)"
                f" FROM ({span_events(span, {'RetentionApplied'}, {'message_ids': 'uuid[]'})})"
                " ev(position, stream, version, type, at, ids))",
                params,
            )
        if {"ReactionAdded", "ReactionRemoved"} & types:
            self._reactions(cur, span, params)
        if "MessageDeleted" in types:
            self._deleted(cur, span, params)
        if "ChannelRead" in types:
            self._read(cur, span, params)
        if types & _CHANGES:
            # Clients send it back as If-Match on edits: the stream's last version.
            cur.execute(
                "UPDATE rm_messages m SET version = v.version"
                " FROM (SELECT stream, max(version) AS version"
                f"  FROM ({span_events(span, _CHANGES)}) ev GROUP BY stream) v"
                " WHERE m.message_id = v.stream",
                params,
            )

    @staticmethod
    def _sent(cur: Cursor[Any], span: Span, params: dict[str, int]) -> None:
        # One statement, so each state is parsed once. Its data-changing parts all see the
        # tables as they were before it (not what the others write): the UPDATE counts the
        # replies to older messages and the INSERT those to messages of the span; numbers go
        # on from each channel's count before the span. The position of the first event
        # orders the timeline: it is global, so it is also a stable, unique cursor.
        cur.execute(
            f"WITH sent AS MATERIALIZED ({span_events(span, {'MessageSent'}, _SENT_FIELDS)}),"
            " numbered AS MATERIALIZED (SELECT s.*, coalesce(h.messages, 0)"
            "  + row_number() OVER (PARTITION BY s.channel_id ORDER BY s.position) AS n"
            "  FROM sent s LEFT JOIN rm_channel_heads h ON h.channel_id = s.channel_id),"
            " replies AS (SELECT reply_to, count(*) AS n, max(at) AS last FROM sent"
            "  WHERE reply_to IS NOT NULL GROUP BY reply_to),"
            " older AS (UPDATE rm_messages p SET reply_count = p.reply_count + r.n,"
            "  last_reply_at = greatest(p.last_reply_at, r.last)"
            "  FROM replies r WHERE p.message_id = r.reply_to),"
            " heads AS (INSERT INTO rm_channel_heads"
            "  (channel_id, messages, last_seq, last_message_id, last_at)"
            "  SELECT DISTINCT ON (channel_id) channel_id, n, position, stream, at FROM numbered"
            "  ORDER BY channel_id, position DESC"
            "  ON CONFLICT (channel_id) DO UPDATE SET messages = excluded.messages,"
            "  last_seq = excluded.last_seq, last_message_id = excluded.last_message_id,"
            "  last_at = excluded.last_at),"
            " mentioned AS (INSERT INTO rm_mentions (user_id, channel_id, seq, message_id)"
            "  SELECT DISTINCT u.id, s.channel_id, s.position, s.stream"
            "  FROM sent s CROSS JOIN LATERAL unnest(s.mentions) AS u(id)"
            "  WHERE u.id <> s.author_id),"
            " mention_heads AS (INSERT INTO rm_mention_heads AS mh (user_id, channel_id,"
            "  last_seq) SELECT u.id, s.channel_id, max(s.position)"
            "  FROM sent s CROSS JOIN LATERAL unnest(s.mentions) AS u(id)"
            "  WHERE u.id <> s.author_id GROUP BY u.id, s.channel_id"
            "  ON CONFLICT (user_id, channel_id)"
            "  DO UPDATE SET last_seq = greatest(mh.last_seq, excluded.last_seq)),"
            " authors AS (INSERT INTO rm_author_counts AS ac (author_id, channel_id, messages)"
            "  SELECT author_id, channel_id, count(*) FROM sent GROUP BY author_id, channel_id"
            "  ON CONFLICT (author_id, channel_id)"
            "  DO UPDATE SET messages = ac.messages + excluded.messages)"
            " INSERT INTO rm_messages (message_id, channel_id, workspace_id, author_id, text,"
            " mentions, reply_to, reply_count, created_at, seq, version, channel_seq,"
            " last_reply_at)"
            " SELECT s.stream, s.channel_id, s.workspace_id, s.author_id, s.text, s.mentions,"
            " s.reply_to, coalesce(r.n, 0), s.at, s.position, 1, s.n, r.last"
            " FROM numbered s LEFT JOIN replies r ON r.reply_to = s.stream",
            params,
        )

    @staticmethod
    def _edited(cur: Cursor[Any], span: Span, params: dict[str, int]) -> None:
        edited = span_events(span, {"MessageEdited"}, {"text": "text", "mentions": "uuid[]"})
        cur.execute(
            "UPDATE rm_messages m SET text = x.text, mentions = x.mentions, edited_at = x.at"
            f" FROM (SELECT DISTINCT ON (stream) * FROM ({edited}) ev"
            "  ORDER BY stream, position DESC) x"
            " WHERE m.message_id = x.stream",
            params,
        )
        # Mentions follow the text: the edited messages' are taken away and made again from
        # the mentions the edit left (the domain edits no deleted message).
        touched = f"SELECT stream FROM ({edited}) ev"
        cur.execute(f"DELETE FROM rm_mentions WHERE message_id IN ({touched})", params)
        cur.execute(
            "INSERT INTO rm_mentions (user_id, channel_id, seq, message_id)"
            " SELECT DISTINCT u.id, m.channel_id, m.seq, m.message_id"
            " FROM rm_messages m CROSS JOIN LATERAL unnest(m.mentions) AS u(id)"
            f" WHERE m.message_id IN ({touched}) AND u.id <> m.author_id",
            params,
        )
        # Every edit of the span, not only each message's last: the bound must not depend on
        # where spans are cut.
        cur.execute(
            "INSERT INTO rm_mention_heads AS mh (user_id, channel_id, last_seq)"
            " SELECT u.id, m.channel_id, max(m.seq)"
            f" FROM ({edited}) ev JOIN rm_messages m ON m.message_id = ev.stream"
            " CROSS JOIN LATERAL unnest(ev.mentions) AS u(id) WHERE u.id <> m.author_id"
            " GROUP BY u.id, m.channel_id ON CONFLICT (user_id, channel_id)"
            " DO UPDATE SET last_seq = greatest(mh.last_seq, excluded.last_seq)",
            params,
        )

    @staticmethod
    def _open_sealed(cur: Cursor[Any], span: Span, params: dict[str, int]) -> None:
        # The statements above copy a sealed text as the JSON of its seal (issue 20): it is
        # opened here, in Python, where the keys are; an erased one becomes empty, as a
        # deleted message's text does.
        written = span_events(span, {"MessageSent", "MessageEdited"})
        cur.execute(
            "SELECT message_id, text FROM rm_messages"
            f" WHERE message_id IN (SELECT stream FROM ({written}) ev)"
            f" AND starts_with(text, %(sealed)s)",
            {**params, "sealed": SEALED_TEXT},
        )
        rows = cur.fetchall()
        if not rows:
            return
        states = [{"text": msgspec.json.decode(r["text"])} for r in rows]
        open_states(states)
        cur.execute(
            "UPDATE rm_messages m SET text = x.text"
            " FROM unnest(%s::uuid[], %s::text[]) AS x(id, text) WHERE m.message_id = x.id",
            ([r["message_id"] for r in rows], [s["text"] or "" for s in states]),
        )

    @staticmethod
    def _reactions(cur: Cursor[Any], span: Span, params: dict[str, int]) -> None:
        reacted = span_events(span, {"ReactionAdded", "ReactionRemoved"}, _REACTION_FIELDS)
        last = (
            "SELECT DISTINCT ON (stream, emoji, user_id) * FROM"
            f" ({reacted}) ev ORDER BY stream, emoji, user_id, position DESC"
        )
        # Every reaction the span touched is taken away, and put back (with the time of its
        # last addition) if that is where the span leaves it.
        cur.execute(
            f"DELETE FROM rm_reactions r USING ({last}) x"
            " WHERE r.message_id = x.stream AND r.emoji = x.emoji AND r.user_id = x.user_id",
            params,
        )
        cur.execute(
            "INSERT INTO rm_reactions (message_id, emoji, user_id, reacted_at)"
            f" SELECT stream, emoji, user_id, at FROM ({last}) x WHERE type = 'ReactionAdded'",
            params,
        )

    @staticmethod
    def _deleted(cur: Cursor[Any], span: Span, params: dict[str, int]) -> None:
        # The domain deletes a message once: each deleted reply is counted out once.
        deleted = f"SELECT stream FROM ({span_events(span, {'MessageDeleted'})}) ev"
        cur.execute(
            "UPDATE rm_messages p SET reply_count = p.reply_count - r.n"
            " FROM (SELECT reply_to, count(*) AS n FROM rm_messages"
            f"  WHERE message_id IN ({deleted}) AND reply_to IS NOT NULL"
            "  GROUP BY reply_to) r"
            " WHERE p.message_id = r.reply_to",
            params,
        )
        cur.execute(
            "UPDATE rm_messages SET text = '', mentions = '{}', deleted = true"
            f" WHERE message_id IN ({deleted})",
            params,
        )
        cur.execute(f"DELETE FROM rm_reactions WHERE message_id IN ({deleted})", params)
        cur.execute(f"DELETE FROM rm_mentions WHERE message_id IN ({deleted})", params)
        cur.execute(
            "UPDATE rm_channel_heads h SET last_deleted_seq = greatest(h.last_deleted_seq, d.seq)"
            " FROM (SELECT channel_id, max(seq) AS seq FROM rm_messages"
            f"  WHERE message_id IN ({deleted}) GROUP BY channel_id) d"
            " WHERE h.channel_id = d.channel_id",
            params,
        )
        # A thread's last reply is its newest one left.
        cur.execute(
            "UPDATE rm_messages p SET last_reply_at = (SELECT max(r.created_at)"
            "  FROM rm_messages r WHERE r.reply_to = p.message_id AND NOT r.deleted)"
            " WHERE p.message_id IN (SELECT reply_to FROM rm_messages"
            f"  WHERE message_id IN ({deleted}) AND reply_to IS NOT NULL)",
            params,
        )

    @staticmethod
    def _read(cur: Cursor[Any], span: Span, params: dict[str, int]) -> None:
        # The domain moves a marker only forward: the span's last move of it is where it is.
        # Its message was sent before it was read, so it is numbered by now (an earlier
        # span, or this one's inserts above).
        read = span_events(span, {"ChannelRead"}, _READ_FIELDS)
        cur.execute(
            "INSERT INTO rm_read_markers (user_id, channel_id, position, message_id,"
            " channel_seq, own_messages, read_at)"
            " SELECT x.user_id, x.channel_id, x.up_to, x.message_id, x.channel_seq,"
            " (SELECT count(*) FROM rm_messages o WHERE o.channel_id = x.channel_id"
            "  AND o.author_id = x.user_id AND o.seq <= x.up_to), x.at"
            " FROM (SELECT DISTINCT ON (ev.user_id, ev.channel_id) ev.user_id, ev.channel_id,"
            "  ev.up_to, ev.message_id, m.channel_seq, ev.at"
            f"  FROM ({read}) ev LEFT JOIN rm_messages m ON m.message_id = ev.message_id"
            "  ORDER BY ev.user_id, ev.channel_id, ev.position DESC) x"
            " ON CONFLICT (user_id, channel_id) DO UPDATE SET position = excluded.position,"
            " message_id = excluded.message_id, channel_seq = excluded.channel_seq,"
            " own_messages = excluded.own_messages, read_at = excluded.read_at",
            params,
        )


_SENT_FIELDS = {
    "channel_id": "uuid",
    "workspace_id": "uuid",
    "author_id": "uuid",
    "text": "text",
    "mentions": "uuid[]",
    "reply_to": "uuid",
}
_REACTION_FIELDS = {"emoji": "text", "user_id": "uuid"}
_READ_FIELDS = {"user_id": "uuid", "channel_id": "uuid", "up_to": "bigint", "message_id": "uuid"}
# What changes a message after it was sent (and so its version).
_CHANGES = frozenset({"MessageEdited", "MessageDeleted", "ReactionAdded", "ReactionRemoved"})


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
    return (yield from _items(rows)), next_cursor


def list_replies(
    message_id: str, *, limit: int, after: int | None
) -> Query[tuple[list[dict[str, Any]], int | None]]:
    """A thread's replies, oldest first (deleted ones as tombstones, as in the timeline);
    ``after`` is the previous page's cursor. Returns the items and the next cursor."""
    rows = yield Statement(
        "SELECT * FROM rm_messages WHERE reply_to = %s AND seq > %s ORDER BY seq LIMIT %s",
        (message_id, after or 0, limit + 1),
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = rows[-1]["seq"] if more and rows else None
    return (yield from _items(rows)), next_cursor


def _items(rows: list[dict[str, Any]]) -> Query[list[dict[str, Any]]]:
    reactions = yield from _reactions([r["message_id"] for r in rows])
    return [
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
            "last_reply_at": r["last_reply_at"],
            "version": r["version"],
            "mentions": [str(m) for m in r["mentions"]],
            "position": r["seq"],
        }
        for r in rows
    ]


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
