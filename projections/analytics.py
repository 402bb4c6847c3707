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

VIEWS = ("messages", "channel_daily_activity", "user_daily_activity", "document_edits")

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
"""


def create_views(cur: Cursor[Any]) -> None:
    """(Re)creates the analytics views; run after the read models' tables exist."""
    cur.execute(ANALYTICS_SQL)
