"""The ``analytics`` schema: stable views over the read models for analysts' own SQL tools.

Views run with their owner's rights, so an analyst role granted only this schema (see
``chorus analytics-role``) reads these and nothing else: not the event store, not
credentials, not the read models' own tables. Columns are only ever added, never renamed.
Message text and document content are left out on purpose: analysts see activity, not
conversations.
"""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

VIEWS = (
    "messages",
    "channel_daily_activity",
    "user_daily_activity",
    "document_edits",
    "message_reads",
    "channel_time_to_read",
    "channel_unread_backlog",
)

ANALYTICS_SQL = """
CREATE SCHEMA IF NOT EXISTS analytics;
CREATE OR REPLACE VIEW analytics.messages AS
    SELECT m.message_id, m.channel_id, m.workspace_id, m.author_id, m.created_at,
           m.edited_at, m.deleted, m.reply_to, m.reply_count,
           char_length(m.text) AS text_length, cardinality(m.mentions) AS mentions,
           (SELECT count(*) FROM rm_reactions r WHERE r.message_id = m.message_id) AS reactions,
           c.kind AS channel_kind, c.private AS channel_private
    FROM rm_messages m JOIN rm_channels c ON c.channel_id = m.channel_id;
CREATE OR REPLACE VIEW analytics.channel_daily_activity AS
    SELECT date_trunc('day', m.created_at)::date AS day, m.workspace_id, m.channel_id,
           count(*) AS messages, count(DISTINCT m.author_id) AS authors,
           count(*) FILTER (WHERE m.reply_to IS NOT NULL) AS replies,
           count(*) FILTER (WHERE m.deleted) AS deleted
    FROM rm_messages m GROUP BY 1, 2, 3;
CREATE OR REPLACE VIEW analytics.user_daily_activity AS
    SELECT date_trunc('day', m.created_at)::date AS day, m.author_id AS user_id,
           m.workspace_id, count(*) AS messages, count(DISTINCT m.channel_id) AS channels
    FROM rm_messages m GROUP BY 1, 2, 3;
CREATE OR REPLACE VIEW analytics.document_edits AS
    SELECT e.document_id, e.workspace_id, e.user_id, e.edited_at, e.position, e.version,
           e.update_bytes, e.restored_from IS NOT NULL AS restore, d.deleted AS document_deleted
    FROM rm_document_edits e JOIN rm_documents d ON d.document_id = e.document_id;
-- Issue 19, read state. A message is read by a user when their read marker first passes it
-- (each move of a marker passes the messages after where it was, up to where it went).
CREATE OR REPLACE VIEW analytics.message_reads AS
    SELECT m.message_id, m.channel_id, m.workspace_id, k.user_id, m.created_at AS sent_at,
           k.read_at, extract(epoch FROM k.read_at - m.created_at) AS seconds_to_read
    FROM rm_read_moves k JOIN rm_messages m ON m.channel_id = k.channel_id
     AND m.seq > k.previous AND m.seq <= k.up_to
    WHERE m.author_id <> k.user_id AND NOT m.deleted;
CREATE OR REPLACE VIEW analytics.channel_time_to_read AS
    SELECT date_trunc('day', read_at)::date AS day, workspace_id, channel_id,
           count(*) AS reads, count(DISTINCT user_id) AS readers,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY seconds_to_read) AS median_seconds,
           percentile_cont(0.9) WITHIN GROUP (ORDER BY seconds_to_read) AS p90_seconds
    FROM analytics.message_reads GROUP BY 1, 2, 3;
CREATE OR REPLACE VIEW analytics.channel_unread_backlog AS
    SELECT c.channel_id, c.workspace_id, c.kind AS channel_kind, c.private AS channel_private,
           coalesce(h.messages, 0) AS messages, count(r.user_id) AS readers_with_marker,
           coalesce(sum(h.messages - r.channel_seq), 0) AS messages_after_markers,
           max(h.messages - r.channel_seq) AS largest_backlog,
           min(r.read_at) AS oldest_read_at
    FROM rm_channels c
    LEFT JOIN rm_channel_heads h ON h.channel_id = c.channel_id
    LEFT JOIN rm_read_markers r ON r.channel_id = c.channel_id
    GROUP BY c.channel_id, c.workspace_id, c.kind, c.private, h.messages;
"""


def create_views(cur: Cursor[Any]) -> None:
    """(Re)creates the analytics views; run after the read models' tables exist."""
    cur.execute(ANALYTICS_SQL)
