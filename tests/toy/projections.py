"""The toy context's read model."""

from __future__ import annotations

from typing import Any

from psycopg import Cursor

from projections.base import EventProjection, LogEvent


class BoardsProjection(EventProjection):
    name = "toy_boards"
    tables = ("rm_toy_boards",)
    create_sql = """
    CREATE TABLE IF NOT EXISTS rm_toy_boards (
        board_id uuid PRIMARY KEY,
        workspace_id uuid NOT NULL,
        name text NOT NULL
    );
    """
    handles = frozenset({"BoardCreated"})

    def apply(self, cur: Cursor[Any], event: LogEvent) -> None:
        cur.execute(
            "INSERT INTO rm_toy_boards (board_id, workspace_id, name) VALUES (%s, %s, %s)",
            (event.stream, event.data["workspace_id"], event.data["name"]),
        )
